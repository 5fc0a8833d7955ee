/* edgevae_kernel.h - int8 VAE decoder for microcontrollers (C99, no malloc, no stdio).
 *
 *   #include "edgevae_kernel.h"
 *   uint8_t img[EDGEVAE_OUTPUT_DIM];
 *   if (edgevae_decode(z, img) != EDGEVAE_OK) { ... }
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

/* z: EDGEVAE_LATENT_DIM floats; pixels: EDGEVAE_OUTPUT_DIM grey levels 0..255, row-major
 * EDGEVAE_IMAGE_H x EDGEVAE_IMAGE_W. Returns EDGEVAE_OK or a negative error code; on error
 * pixels is left untouched. */
int edgevae_decode(const float z[EDGEVAE_LATENT_DIM], uint8_t pixels[EDGEVAE_OUTPUT_DIM]);

/* Same, from latent values already quantized with EDGEVAE_INPUT_SCALE/ZERO_POINT. */
int edgevae_decode_q(const edgevae_zq_t zq[EDGEVAE_LATENT_DIM],
                     uint8_t pixels[EDGEVAE_OUTPUT_DIM]);

/* Quantize z the way the model's QuantizeLinear does (float32 division, round half to even,
 * saturate). Returns EDGEVAE_OK or a negative error code. */
int edgevae_quantize_z(const float z[EDGEVAE_LATENT_DIM], edgevae_zq_t zq[EDGEVAE_LATENT_DIM]);

/* Which inner loop this build uses: "arm-dsp" (SMLAD) or "portable". */
const char *edgevae_kernel_variant(void);

#endif
