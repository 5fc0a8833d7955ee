/* edgevae demo: decode a fixed, seeded set of latent vectors and print a checksum.
 *
 * The latents come from an integer-only generator (xorshift32, sum of four 16-bit uniforms,
 * divided by 32768: roughly N(0, 1.15^2)), so every target decodes the same float32 inputs
 * and must print the same "checksum:" line (FNV-1a over all pixels). Hosted builds write the
 * images as a PGM grid when given a path; bare-metal builds also report the decode's stack
 * high-water mark, and builds with EDGEVAE_DEMO_ICOUNT its instruction count (meaningful
 * only under `qemu -icount`, where SysTick counts executed instructions).
 *
 * A conditional decoder (EDGEVAE_NUM_CLASSES) decodes latent i with label i % classes.
 *
 * With weights from `edgevae firmware --score` it then scores the decoded images and their
 * negatives (255 - p, anomalies for a model of digits) and prints "score checksum:" (FNV-1a
 * over the scores' float32 bits, little-endian), the mean scores (of the kind the weights
 * compute, excess or elbo), and the score's stack and instruction count.
 */
#include <stdio.h>
#include <string.h>

#include "edgevae_kernel.h"
#include "platform.h"

#ifndef DEMO_COUNT
#define DEMO_COUNT 16
#endif
#define DEMO_COLS 4

static uint8_t pixels[DEMO_COUNT][EDGEVAE_OUTPUT_DIM];

static uint32_t xorshift32(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

/* EDGEVAE_DEMO_WIDE (used by the tests) scales every vector by 1, 8, 1000 or -0 in turn,
 * to run extreme and signed-zero inputs through every target's kernel. */
static void demo_latent(uint32_t *state, float z[EDGEVAE_LATENT_DIM], int index)
{
#ifdef EDGEVAE_DEMO_WIDE
    static const float scale[4] = {1.0f, 8.0f, 1000.0f, -0.0f};
#endif
    int i, k;
    (void)index;
    for (i = 0; i < EDGEVAE_LATENT_DIM; i++) {
        int32_t total = 0;
        for (k = 0; k < 4; k++)
            total += (int32_t)(xorshift32(state) >> 16);
        z[i] = (float)(total - 2 * 65535) / 32768.0f; /* exact in float32 */
#ifdef EDGEVAE_DEMO_WIDE
        z[i] *= scale[index % 4];
#endif
    }
}

static uint32_t fnv1a(uint32_t h, const uint8_t *p, unsigned n)
{
    while (n--)
        h = (h ^ *p++) * 0x01000193u;
    return h;
}

#ifdef EDGEVAE_DEMO_ICOUNT
/* instructions per call from SysTick ticks (under qemu -icount, see platform_calibrate) */
static void print_icount(const char *what, uint32_t ticks, uint32_t calls, uint32_t cal_ticks,
                         uint32_t cal_insns, long macs)
{
    unsigned long insns, per_mac_x1000;
    if (!cal_ticks || !ticks)
        return;
    insns = (unsigned long)((uint64_t)ticks * cal_insns / cal_ticks / calls);
    per_mac_x1000 = (unsigned long)((uint64_t)insns * 1000u / (uint64_t)macs);
    printf("icount: %lu ticks per %lu calibration instructions, %lu ticks per %s\n",
           (unsigned long)cal_ticks, (unsigned long)cal_insns, (unsigned long)(ticks / calls),
           what);
    printf("icount: %lu instructions per %s, %lu MACs, %lu.%03lu instructions/MAC\n", insns, what,
           (unsigned long)macs, per_mac_x1000 / 1000u, per_mac_x1000 % 1000u);
}
#endif

#ifdef EDGEVAE_HAS_SCORE
static uint8_t inverted[EDGEVAE_OUTPUT_DIM];

static uint32_t fnv1a_float(uint32_t h, float f)
{
    uint32_t bits;
    uint8_t le[4];
    memcpy(&bits, &f, sizeof bits);
    le[0] = (uint8_t)bits;
    le[1] = (uint8_t)(bits >> 8);
    le[2] = (uint8_t)(bits >> 16);
    le[3] = (uint8_t)(bits >> 24);
    return fnv1a(h, le, 4);
}

static void print_nats(const char *label, float value)
{
    long milli = (long)(value * 1000.0f);
    const char *sign = milli < 0 ? "-" : "";
    milli = milli < 0 ? -milli : milli;
    printf("%s%s%ld.%03ld nats", label, sign, milli / 1000, milli % 1000);
}

/* Scores the decoded images, then their negatives; prints the checksum line. */
static int run_scores(uint32_t cal_ticks, uint32_t cal_insns)
{
    uint32_t h = 0x811C9DC5u, ticks = 0, used;
    float sum[2] = {0.0f, 0.0f};
    uintptr_t top = platform_stack_paint();
    int i, k;
    for (i = 0; i < 2 * DEMO_COUNT; i++) {
        const uint8_t *image = pixels[i % DEMO_COUNT];
        float score;
        uint32_t t0;
        int rc;
        if (i >= DEMO_COUNT) {
            for (k = 0; k < EDGEVAE_OUTPUT_DIM; k++)
                inverted[k] = (uint8_t)(255 - image[k]);
            image = inverted;
        }
        platform_timer_start();
        t0 = platform_timer_ticks();
        rc = edgevae_score(image, &score);
        ticks += platform_timer_ticks() - t0;
        if (rc != EDGEVAE_OK) {
            printf("edgevae_score failed: %d\n", rc);
            return 1;
        }
        sum[i >= DEMO_COUNT] += score;
        h = fnv1a_float(h, score);
    }
    used = platform_stack_used(top);
    if (used)
        printf("score stack: %lu bytes used by edgevae_score (painted high-water mark)\n",
               (unsigned long)used);
#ifdef EDGEVAE_DEMO_ICOUNT
    print_icount("score", ticks, 2 * DEMO_COUNT, cal_ticks, cal_insns, EDGEVAE_SCORE_MACS);
#else
    (void)cal_ticks;
    (void)cal_insns;
    (void)ticks;
#endif
#if EDGEVAE_SCORE_KIND_EXCESS
    print_nats("excess scores: decoded images, mean ", sum[0] / DEMO_COUNT);
#else
    print_nats("elbo scores: decoded images, mean ", sum[0] / DEMO_COUNT);
#endif
    print_nats("; their negatives, mean ", sum[1] / DEMO_COUNT);
    printf("\nscore checksum: 0x%08lx\n", (unsigned long)h);
    return 0;
}
#endif

#ifdef EDGEVAE_HOSTED
uintptr_t platform_stack_paint(void) { return 0; }
uint32_t platform_stack_used(uintptr_t top) { (void)top; return 0; }
void platform_timer_start(void) {}
uint32_t platform_timer_ticks(void) { return 0; }
uint32_t platform_calibrate(uint32_t *insns) { *insns = 0; return 0; }

static int write_pgm(const char *path)
{
    const int rows = (DEMO_COUNT + DEMO_COLS - 1) / DEMO_COLS;
    int r, y, c;
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    fprintf(f, "P5\n%d %d\n255\n", DEMO_COLS * EDGEVAE_IMAGE_W, rows * EDGEVAE_IMAGE_H);
    for (r = 0; r < rows; r++)
        for (y = 0; y < EDGEVAE_IMAGE_H; y++)
            for (c = 0; c < DEMO_COLS; c++) {
                static const uint8_t blank[EDGEVAE_IMAGE_W];
                int i = r * DEMO_COLS + c;
                const uint8_t *src = i < DEMO_COUNT ? &pixels[i][y * EDGEVAE_IMAGE_W] : blank;
                fwrite(src, 1, EDGEVAE_IMAGE_W, f);
            }
    return fclose(f) == 0 ? 0 : -1;
}
#endif

int main(int argc, char **argv)
{
    uint32_t state = 0x2545F491u, h = 0x811C9DC5u, ticks = 0, cal_ticks, cal_insns, used;
    uintptr_t top;
    float z[EDGEVAE_LATENT_DIM];
    int i;
    (void)argc;
    (void)argv;
    printf("edgevae demo: %d latents, %d -> %d (%dx%d), %d layers, kernel %s\n", DEMO_COUNT,
           EDGEVAE_LATENT_DIM, EDGEVAE_OUTPUT_DIM, EDGEVAE_IMAGE_H, EDGEVAE_IMAGE_W,
           EDGEVAE_NUM_LAYERS, edgevae_kernel_variant());
    printf("model sha256: %s\n", EDGEVAE_MODEL_SHA256);
    cal_ticks = platform_calibrate(&cal_insns);
    top = platform_stack_paint();
    for (i = 0; i < DEMO_COUNT; i++) {
        uint32_t t0;
        int rc;
        demo_latent(&state, z, i);
        platform_timer_start();
        t0 = platform_timer_ticks();
#ifdef EDGEVAE_NUM_CLASSES
        rc = edgevae_decode_label(z, (unsigned)(i % EDGEVAE_NUM_CLASSES), pixels[i]);
#else
        rc = edgevae_decode(z, pixels[i]);
#endif
        ticks += platform_timer_ticks() - t0;
        if (rc != EDGEVAE_OK) {
            printf("edgevae_decode failed: %d\n", rc);
            return 1;
        }
        h = fnv1a(h, pixels[i], EDGEVAE_OUTPUT_DIM);
    }
    used = platform_stack_used(top);
    if (used)
        printf("stack: %lu bytes used by edgevae_decode (painted high-water mark)\n",
               (unsigned long)used);
#ifdef EDGEVAE_DEMO_ICOUNT
    print_icount("decode", ticks, DEMO_COUNT, cal_ticks, cal_insns, EDGEVAE_MACS);
#else
    (void)ticks;
#endif
#ifdef EDGEVAE_HOSTED
    if (argc > 1) {
        if (write_pgm(argv[1]) != 0) {
            printf("cannot write %s\n", argv[1]);
            return 1;
        }
        printf("wrote %s\n", argv[1]);
    }
#endif
    printf("checksum: 0x%08lx\n", (unsigned long)h);
#ifdef EDGEVAE_HAS_SCORE
    return run_scores(cal_ticks, cal_insns);
#else
    (void)cal_ticks;
    (void)cal_insns;
    return 0;
#endif
}
