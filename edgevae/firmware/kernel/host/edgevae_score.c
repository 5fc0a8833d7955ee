/* edgevae_score - anomaly scores of raw images from stdin with the firmware kernel.
 *
 *   edgevae_score < images.raw > scores.txt
 *
 * stdin holds EDGEVAE_OUTPUT_DIM bytes per image (grey levels 0..255, row-major, no header);
 * each output line holds one score in nats (higher = more anomalous; the kind the weights
 * were generated for, excess or elbo: --info prints it), printed with 9 significant digits,
 * which is enough to recover the float32 exactly. --parts prints
 * "score recon kl mu[0..L-1] logvar[0..L-1]" per line instead (recon = -log p(x | z = mu)
 * for either kind). Input that ends inside an image stops the program with a message and
 * exit status 1.
 *
 * Needs weights from `edgevae firmware --score`; that command prints the cc line, e.g.
 *   cc -std=c99 -O2 -I. -o edgevae_score edgevae_score.c edgevae_kernel.c edgevae_weights.c
 */
#include <stdio.h>
#include <string.h>

#include "edgevae_kernel.h"

#ifndef EDGEVAE_HAS_SCORE
#error "these weights have no encoder: generate them with edgevae firmware --score"
#endif

#if EDGEVAE_SCORE_KIND_EXCESS
#define SCORE_KIND "excess (elbo - the least -log p(x|z) of any decoder)"
#else
#define SCORE_KIND "elbo"
#endif

static uint8_t image[EDGEVAE_OUTPUT_DIM];

static void usage(FILE *out)
{
    fprintf(out,
            "usage: edgevae_score [--parts] < images.raw   (%d bytes per image -> one score "
            "per line)\nkernel: %s\nweights: %s\n",
            EDGEVAE_OUTPUT_DIM, edgevae_kernel_variant(), edgevae_provenance);
    fprintf(out, "score: %s\n", SCORE_KIND);
#ifdef EDGEVAE_THRESHOLD_NATS
    fprintf(out, "threshold: %.9g nats\n", (double)EDGEVAE_THRESHOLD_NATS);
#else
    fprintf(out, "threshold: none in the manifest\n");
#endif
}

static int print_parts(void)
{
    float score, recon, kl, mu[EDGEVAE_LATENT_DIM], logvar[EDGEVAE_LATENT_DIM];
    int j;
    if (edgevae_score_parts(image, &score, &recon, &kl) != EDGEVAE_OK ||
        edgevae_encode(image, mu, logvar) != EDGEVAE_OK)
        return -1;
    printf("%.9g %.9g %.9g", (double)score, (double)recon, (double)kl);
    for (j = 0; j < EDGEVAE_LATENT_DIM; j++)
        printf(" %.9g", (double)mu[j]);
    for (j = 0; j < EDGEVAE_LATENT_DIM; j++)
        printf(" %.9g", (double)logvar[j]);
    printf("\n");
    return 0;
}

int main(int argc, char **argv)
{
    unsigned long count = 0;
    int parts = 0;
    size_t got;
    if (argc > 1) {
        if (argc == 2 && strcmp(argv[1], "--parts") == 0) {
            parts = 1;
        } else {
            int info = strcmp(argv[1], "--info") == 0;
            usage(info ? stdout : stderr);
            return info ? 0 : 2;
        }
    }
    while ((got = fread(image, 1, sizeof image, stdin)) == sizeof image) {
        float score;
        count++;
        if (parts) {
            if (print_parts() != 0)
                return 1;
            continue;
        }
        if (edgevae_score(image, &score) != EDGEVAE_OK)
            return 1;
        printf("%.9g\n", (double)score);
    }
    fflush(stdout);
    if (ferror(stdin)) {
        fprintf(stderr, "edgevae_score: read error after %lu images\n", count);
        return 1;
    }
    if (got != 0) {
        fprintf(stderr, "edgevae_score: input ends inside image %lu (%lu of %d bytes)\n",
                count + 1, (unsigned long)got, EDGEVAE_OUTPUT_DIM);
        return 1;
    }
    if (fflush(stdout) != 0) {
        fprintf(stderr, "edgevae_score: write error\n");
        return 1;
    }
    return 0;
}
