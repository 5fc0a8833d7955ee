/* edgevae demo: decode a fixed, seeded set of latent vectors and print a checksum.
 *
 * The latents come from an integer-only generator (xorshift32, sum of four 16-bit uniforms,
 * divided by 32768: roughly N(0, 1.15^2)), so every target decodes the same float32 inputs
 * and must print the same "checksum:" line (FNV-1a over all pixels). Hosted builds write the
 * images as a PGM grid when given a path; bare-metal builds also report the decode's stack
 * high-water mark, and builds with EDGEVAE_DEMO_ICOUNT its instruction count (meaningful
 * only under `qemu -icount`, where SysTick counts executed instructions).
 */
#include <stdio.h>

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
        rc = edgevae_decode(z, pixels[i]);
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
    if (cal_ticks && ticks) {
        /* instructions = ticks * (calibration instructions / calibration ticks); only
         * meaningful under qemu -icount, where the clock advances per instruction */
        unsigned long insns =
            (unsigned long)((uint64_t)ticks * cal_insns / cal_ticks / DEMO_COUNT);
        unsigned long per_mac_x1000 =
            (unsigned long)((uint64_t)insns * 1000u / (uint64_t)EDGEVAE_MACS);
        printf("icount: %lu ticks per %lu calibration instructions, %lu ticks per decode\n",
               (unsigned long)cal_ticks, (unsigned long)cal_insns,
               (unsigned long)(ticks / DEMO_COUNT));
        printf("icount: %lu instructions per decode, %lu MACs, %lu.%03lu instructions/MAC\n",
               insns, (unsigned long)EDGEVAE_MACS, per_mac_x1000 / 1000u, per_mac_x1000 % 1000u);
    }
#else
    (void)cal_ticks;
    (void)cal_insns;
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
    return 0;
}
