/* edgevae_types.h - data layout shared by the kernel and the generated weights.
 *
 * The generated edgevae_weights.c fills one edgevae_layer_t per fully connected layer.
 * Bump EDGEVAE_TYPES_FORMAT together with edgevae/firmware/codegen.py's FORMAT when this changes.
 */
#ifndef EDGEVAE_TYPES_H
#define EDGEVAE_TYPES_H

#include <stdint.h>

#define EDGEVAE_TYPES_FORMAT 5

/* Rows are processed in blocks of 4 (four accumulators share each activation load) and
 * columns in chunks of 4 (one 32-bit weight word per row). */
#define EDGEVAE_ROW_BLOCK 4
#define EDGEVAE_COL_CHUNK 4

/* Requantized values lie in [-512, 512] (saturated), so one table per layer maps them
 * straight to the layer's output: zero point, clamp, ReLU floor, activation table and, for
 * the last layer, the sigmoid to grey levels are all folded into it by codegen. */
#define EDGEVAE_TABLE_BIAS 512
#define EDGEVAE_TABLE_SIZE 1025

/* 4-bit layers store each weight w (-8..7) as the nibble w + 8, two per byte. */
#define EDGEVAE_NIBBLE_OFFSET 8

typedef struct edgevae_layer {
    /* weight_bits 8: one word per (row block, column chunk, row): four int8 weights in byte
     * order w[k], w[k+2], w[k+1], w[k+3], so that SXTB16(word) = {w[k], w[k+1]} and
     * SXTB16(word ROR 8) = {w[k+2], w[k+3]} line up with packed int16 activation pairs.
     * weight_bits 4: two words per (row block, column chunk): rows r, r+1, then r+2, r+3;
     * nibble i (bits 4i..4i+3) of a word holds, as w + 8,
     *   i = 0..7: w[r][k], w[r][k+2], w[r+1][k], w[r+1][k+2],
     *             w[r][k+1], w[r][k+3], w[r+1][k+1], w[r+1][k+3],
     * so that (word >> 4s) & 0x000F000F is an int16 pair for SMLAD: s = 0 and 1 are row r
     * against columns {k, k+1} and {k+2, k+3}, s = 2 and 3 row r + 1 likewise.
     * Padding rows and columns hold weight 0. */
    const uint32_t *weights;
    const int32_t *bias;       /* [out_padded]; input zero point already folded in */
    /* [out_padded] requantization scale = mult * 2^-shift, stored as mult | (shift - 16) << 24:
     * mult is the 24-bit mantissa of the float32 scale, 17 <= shift <= 47 */
    const uint32_t *requant;
    const uint8_t *table;      /* [EDGEVAE_TABLE_SIZE]: value + 512 -> output - table_offset */
    uint16_t in_dim;
    uint16_t in_padded;        /* multiple of EDGEVAE_COL_CHUNK */
    uint16_t out_dim;
    uint16_t out_padded;       /* multiple of EDGEVAE_ROW_BLOCK (= next layer's in_padded) */
    int16_t table_offset;      /* next layer's qmin (-128 for int8 inputs); 0 for pixels */
    /* Only for MatMul -> Q -> DQ -> Add graphs (NULL mid_bias otherwise): the requantized
     * product is clamped to the MatMul's int8 output q1, then
     * value = round_half_even(((q1 - mid_zero_point) * mid_mult + mid_bias[j]) / 2^mid_shift)
     * with both terms below 2^29 in magnitude. */
    const int32_t *mid_bias;
    int32_t mid_mult;
    uint8_t mid_shift;
    uint8_t weight_bits;       /* 8 or 4 */
    int16_t mid_zero_point;
    int16_t mid_qmin;
    int16_t mid_qmax;
} edgevae_layer_t;

#endif
