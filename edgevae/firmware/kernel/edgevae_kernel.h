/* edgevae_kernel.h - int8 VAE decoder (and, with --score weights, encoder and anomaly score)
 * for microcontrollers (C99, no malloc, no stdio).
 *
 *   #include "edgevae_kernel.h"
 *   uint8_t img[EDGEVAE_OUTPUT_DIM];
 *   if (edgevae_decode(z, img) != EDGEVAE_OK) { ... }
 *   (conditional decoders: edgevae_decode_label(z, label, img))
 *
 * Link edgevae_kernel.c with the edgevae_weights.c that `edgevae firmware` generated.
 * Results are bit-identical on every target and to edgevae.firmware.intref.decode_int.
 * The kernel keeps its activations in static buffers: one decode at a time (not reentrant).
 */
#ifndef EDGEVAE_KERNEL_H
#define EDGEVAE_KERNEL_H

#include <stdint.h>

#include "edgevae_weights.h"

#define EDGEVAE_OK 0
#define EDGEVAE_ERR_NULL (-1)      /* a pointer argument was NULL */
#define EDGEVAE_ERR_NONFINITE (-2) /* z held a NaN or an infinity */
#define EDGEVAE_ERR_LABEL (-3)     /* label >= EDGEVAE_NUM_CLASSES (conditional decoders) */

#ifndef EDGEVAE_NUM_CLASSES
/* z: EDGEVAE_LATENT_DIM floats; pixels: EDGEVAE_OUTPUT_DIM grey levels 0..255, row-major
 * EDGEVAE_IMAGE_H x EDGEVAE_IMAGE_W. Returns EDGEVAE_OK or a negative error code; on error
 * pixels is left untouched. */
int edgevae_decode(const float z[EDGEVAE_LATENT_DIM], uint8_t pixels[EDGEVAE_OUTPUT_DIM]);

/* Same, from latent values already quantized with EDGEVAE_INPUT_SCALE/ZERO_POINT. */
int edgevae_decode_q(const edgevae_zq_t zq[EDGEVAE_LATENT_DIM],
                     uint8_t pixels[EDGEVAE_OUTPUT_DIM]);
#else
/* Conditional decoders (weights define EDGEVAE_NUM_CLASSES): p(x | z, label), label in
 * 0..EDGEVAE_NUM_CLASSES - 1 (edgevae_class_names[label] names it). The one-hot label is one
 * row of a per-class bias table, no matrix product. Same results and error codes as above,
 * plus EDGEVAE_ERR_LABEL. */
int edgevae_decode_label(const float z[EDGEVAE_LATENT_DIM], unsigned label,
                         uint8_t pixels[EDGEVAE_OUTPUT_DIM]);

int edgevae_decode_label_q(const edgevae_zq_t zq[EDGEVAE_LATENT_DIM], unsigned label,
                           uint8_t pixels[EDGEVAE_OUTPUT_DIM]);
#endif

/* Quantize z the way the model's QuantizeLinear does (float32 division, round half to even,
 * saturate). Returns EDGEVAE_OK or a negative error code. */
int edgevae_quantize_z(const float z[EDGEVAE_LATENT_DIM], edgevae_zq_t zq[EDGEVAE_LATENT_DIM]);

/* Which inner loop this build uses: "arm-dsp" (SMLAD) or "portable". */
const char *edgevae_kernel_variant(void);

#if defined(EDGEVAE_HAS_SCORE) && defined(EDGEVAE_NUM_CLASSES)
#error "the firmware score supports unconditional models only"
#endif

#ifdef EDGEVAE_HAS_SCORE
/* With weights from `edgevae firmware --score`: the int8 encoder and the anomaly score.
 * pixels: EDGEVAE_OUTPUT_DIM grey levels 0..255 (x = pixel / 255), row-major. Same static
 * buffers as the decoder: one call at a time. Bit-identical to edgevae.firmware.score. */

/* mu and logvar (EDGEVAE_LATENT_DIM each), as the model's DequantizeLinear outputs. */
int edgevae_encode(const uint8_t pixels[EDGEVAE_OUTPUT_DIM], float mu[EDGEVAE_LATENT_DIM],
                   float logvar[EDGEVAE_LATENT_DIM]);

/* The same, quantized: real = (q - EDGEVAE_MU_ZERO_POINT) * EDGEVAE_MU_SCALE (LOGVAR alike).
 * No floating point at all. */
int edgevae_encode_q(const uint8_t pixels[EDGEVAE_OUTPUT_DIM],
                     edgevae_muq_t mu_q[EDGEVAE_LATENT_DIM],
                     edgevae_lvq_t logvar_q[EDGEVAE_LATENT_DIM]);

/* The anomaly score in nats, higher = more anomalous, with z = mu (one encoder and one decoder
 * pass), of the kind the weights were generated for: EDGEVAE_SCORE_KIND_EXCESS 1 (the
 * default) the excess score, -log p(x | z = mu) + KL(q(z|x) || N(0,I)) minus the least
 * -log p(x | z) any decoder reaches for the image (Bernoulli: its entropy sum H(p_i / 255),
 * 0 for a binary image; Gaussian: the constant part), else the elbo score without that term.
 * Writes *score; returns EDGEVAE_OK or EDGEVAE_ERR_NULL. With a threshold for that kind in
 * the manifest, the header defines EDGEVAE_THRESHOLD_NATS: flag the image when
 * score > EDGEVAE_THRESHOLD_NATS. */
int edgevae_score(const uint8_t pixels[EDGEVAE_OUTPUT_DIM], float *score);

/* The score and the elbo's two terms (recon = -log p(x | z = mu), kl; either may be NULL),
 * whatever the kind: the excess score's floor is score - recon - kl. Each is rounded once
 * from the exact fixed-point sum, so score may differ from the sum of the terms by one unit
 * in the last place. */
int edgevae_score_parts(const uint8_t pixels[EDGEVAE_OUTPUT_DIM], float *score, float *recon,
                        float *kl);
#endif

#endif
