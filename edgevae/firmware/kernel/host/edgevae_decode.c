/* edgevae_decode - decode latent vectors from stdin with the firmware kernel.
 *
 *   edgevae_decode < z.txt > pixels.txt
 *
 * Each input line holds EDGEVAE_LATENT_DIM numbers separated by spaces, tabs or commas
 * (blank lines are skipped); each output line holds EDGEVAE_OUTPUT_DIM grey levels 0..255.
 * For a conditional decoder (EDGEVAE_NUM_CLASSES) each line starts with the label, an integer
 * 0..EDGEVAE_NUM_CLASSES - 1, then the EDGEVAE_LATENT_DIM numbers.
 * A malformed line stops the program with a message naming the line and exit status 1.
 *
 * Build it in the folder `edgevae firmware` writes (the command prints this line for its folder):
 *   cc -std=c99 -O2 -I. -o edgevae_decode edgevae_decode.c edgevae_kernel.c edgevae_weights.c
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgevae_kernel.h"

#define MAX_LINE 65536

#ifdef EDGEVAE_NUM_CLASSES
#define NUMBERS (EDGEVAE_LATENT_DIM + 1) /* the label, then z */
#else
#define NUMBERS EDGEVAE_LATENT_DIM
#endif

static char line[MAX_LINE];
static char outbuf[EDGEVAE_OUTPUT_DIM * 4 + 2];

static int fail(unsigned long lineno, const char *what)
{
    fflush(stdout);
    fprintf(stderr, "edgevae_decode: line %lu: %s\n", lineno, what);
    return 1;
}

static int is_sep(char c)
{
    return c == ' ' || c == '\t' || c == ',' || c == '\r' || c == '\n';
}

/* Parse exactly NUMBERS numbers into v; returns NULL or an error message. */
static const char *parse(char *s, float v_out[NUMBERS], int *blank)
{
    static char msg[96];
    int n = 0;
    *blank = 1;
    for (;;) {
        char *end;
        double v;
        while (is_sep(*s))
            s++;
        if (*s == '\0')
            break;
        *blank = 0;
        if (n == NUMBERS) {
            sprintf(msg, "expected %d numbers, got more", NUMBERS);
            return msg;
        }
        errno = 0;
        v = strtod(s, &end);
        if (end == s || (*end != '\0' && !is_sep(*end)))
            return "not a number";
        if (errno == ERANGE && (v > 1.0 || v < -1.0))
            return "number out of range";
        if (v == v && (v > 3.4028234663852886e38 || v < -3.4028234663852886e38) &&
            v - v == 0.0)
            return "number out of float range";
        v_out[n++] = (float)v;
        s = end;
    }
    if (!*blank && n != NUMBERS) {
        sprintf(msg, "expected %d numbers, got %d", NUMBERS, n);
        return msg;
    }
    return NULL;
}

static void print_pixels(const uint8_t *px)
{
    char *p = outbuf;
    int i;
    for (i = 0; i < EDGEVAE_OUTPUT_DIM; i++) {
        unsigned v = px[i];
        if (i)
            *p++ = ' ';
        if (v >= 100)
            *p++ = (char)('0' + v / 100);
        if (v >= 10)
            *p++ = (char)('0' + v / 10 % 10);
        *p++ = (char)('0' + v % 10);
    }
    *p++ = '\n';
    fwrite(outbuf, 1, (size_t)(p - outbuf), stdout);
}

/* Decode one parsed line: EDGEVAE_OK or the kernel's error code. */
static int decode_line(const float v[NUMBERS], uint8_t *pixels)
{
#ifdef EDGEVAE_NUM_CLASSES
    if (!(v[0] >= 0.0f && v[0] < (float)EDGEVAE_NUM_CLASSES) || v[0] != (float)(unsigned)v[0])
        return EDGEVAE_ERR_LABEL;
    return edgevae_decode_label(v + 1, (unsigned)v[0], pixels);
#else
    return edgevae_decode(v, pixels);
#endif
}

static void print_info(FILE *out)
{
    fprintf(out,
            "usage: edgevae_decode < z.txt   (%d numbers per line -> %d pixels per line)\n"
            "kernel: %s\nweights: %s\n",
            NUMBERS, EDGEVAE_OUTPUT_DIM, edgevae_kernel_variant(), edgevae_provenance);
#ifdef EDGEVAE_NUM_CLASSES
    {
        int c;
        fprintf(out, "conditional: each line is a label, then %d numbers; labels:",
                EDGEVAE_LATENT_DIM);
        for (c = 0; c < EDGEVAE_NUM_CLASSES; c++)
            fprintf(out, " %d=%s", c, edgevae_class_names[c]);
        fputc('\n', out);
    }
#endif
}

int main(int argc, char **argv)
{
    static float z[NUMBERS];
    static uint8_t pixels[EDGEVAE_OUTPUT_DIM];
    unsigned long lineno = 0;
    if (argc > 1) {
        int info = strcmp(argv[1], "--info") == 0;
        print_info(info ? stdout : stderr);
        return info ? 0 : 2;
    }
    while (fgets(line, sizeof line, stdin)) {
        const char *err;
        int blank, rc;
        size_t len = strlen(line);
        lineno++;
        if (len == sizeof line - 1 && line[len - 1] != '\n' && !feof(stdin))
            return fail(lineno, "line too long");
        err = parse(line, z, &blank);
        if (err)
            return fail(lineno, err);
        if (blank)
            continue;
        rc = decode_line(z, pixels);
        if (rc == EDGEVAE_ERR_NONFINITE)
            return fail(lineno, "non-finite value (nan or inf)");
        if (rc == EDGEVAE_ERR_LABEL)
            return fail(lineno, "the label must be an integer 0..classes - 1 (see --info)");
        if (rc != EDGEVAE_OK)
            return fail(lineno, "decode failed");
        print_pixels(pixels);
    }
    if (ferror(stdin))
        return fail(lineno, "read error");
    if (fflush(stdout) != 0) {
        fprintf(stderr, "edgevae_decode: write error\n");
        return 1;
    }
    return 0;
}
