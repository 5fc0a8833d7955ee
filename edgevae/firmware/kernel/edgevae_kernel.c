/* edgevae_kernel.c - int8 MLP decoder: quantize z, int8 x int8/uint8 layers with int32
 * accumulation, exact float32-equivalent requantization in integers, table activations.
 *
 * Arithmetic contract (mirrored by edgevae/firmware/intref.py, bit for bit):
 *   acc   = bias' + sum_k w[j][k] * a[k]        (bias' has -zp_in * sum_k w[j][k] folded in;
 *           4-bit layers add sum_k (w[j][k] + 8) * a[k] - 8 * sum_k a[k], the same integer;
 *           a conditional decoder's first layer starts from its label's bias row)
 *   value = round_half_even(float32(float32(acc) * scale_j)), scale_j = mult_j * 2^-shift_j,
 *           computed in integers (see ev_requantize), saturated to [-512, 512]
 *   (MatMul -> Q -> DQ -> Add graphs: value = ev_add_mid_bias(value), see edgevae_types.h)
 *   out   = table[value + 512] + table_offset
 * where codegen built each table as: q = clamp(value + zp, floor, qmax) (floor = zero point
 * under a fused ReLU), then the activation table if any, or for the last layer
 * round_half_even(255 * sigmoid(dequantized q)).
 * Integer sums are exact, so the SMLAD path and the portable path agree bit for bit.
 * With weights from `edgevae firmware --score` the same layers also run the encoder, and the
 * anomaly score follows from tables and integer sums (end of this file; score.py mirrors it).
 */
#include "edgevae_kernel.h"

#include <limits.h>
#include <math.h>
#include <stddef.h>

#if EDGEVAE_WEIGHTS_FORMAT != EDGEVAE_TYPES_FORMAT
#error "edgevae_weights.h was generated for another kernel version; re-run edgevae firmware"
#endif

/* C99 static assertion: a negative array size fails to compile. */
#define EV_STATIC_ASSERT(cond, name) typedef char ev_static_assert_##name[(cond) ? 1 : -1]

EV_STATIC_ASSERT(EDGEVAE_LATENT_DIM > 0 && EDGEVAE_OUTPUT_DIM > 0, dims_positive);
EV_STATIC_ASSERT(EDGEVAE_OUTPUT_DIM == EDGEVAE_IMAGE_H * EDGEVAE_IMAGE_W, image_shape);
EV_STATIC_ASSERT(EDGEVAE_NUM_LAYERS >= 1, at_least_one_layer);
EV_STATIC_ASSERT(EDGEVAE_MAX_IN_PADDED % EDGEVAE_COL_CHUNK == 0, padded_width);
EV_STATIC_ASSERT(EDGEVAE_MAX_IN_PADDED <= 65535, width_fits_uint16);
EV_STATIC_ASSERT(sizeof(uint32_t) == 4 && sizeof(uint64_t) == 8, word_sizes);

/* SMLAD & co. in Thumb-2 (Cortex-M4/M7/M33, ARMv7-A) or ARM state (also ARMv6, e.g. Pi Zero
 * and Pi 1 under 32-bit Raspberry Pi OS); Thumb-1 lacks them. */
#if defined(__ARM_FEATURE_DSP) && !defined(__ARM_BIG_ENDIAN) && !defined(EDGEVAE_PORTABLE) && \
    (defined(__thumb2__) || !defined(__thumb__))
#define EV_USE_DSP 1
#else
#define EV_USE_DSP 0
#endif

/* Activations as packed int16 pairs (element 2i in the low half): the layout SMLAD reads,
 * and 4-byte aligned for word loads. Two buffers: layer i reads EV_BUF(i) and writes
 * EV_BUF(i + 1). Score builds size each for the layers that use it (the encoder's input, 784
 * values, only ever sits in buffer 0). */
#ifndef EDGEVAE_ACT0_PADDED
#define EDGEVAE_ACT0_PADDED EDGEVAE_MAX_IN_PADDED
#define EDGEVAE_ACT1_PADDED EDGEVAE_MAX_IN_PADDED
#endif
static uint32_t ev_act0[EDGEVAE_ACT0_PADDED / 2];
static uint32_t ev_act1[EDGEVAE_ACT1_PADDED / 2];
#define EV_BUF(i) (((i) & 1u) ? ev_act1 : ev_act0)

const char *edgevae_kernel_variant(void)
{
    return EV_USE_DSP ? "arm-dsp" : "portable";
}

/* ------------------------------------------------------------------ requantization */

static unsigned ev_clz32(uint32_t x) /* x != 0 */
{
#if defined(__GNUC__) && UINT_MAX == 0xFFFFFFFFu
    return (unsigned)__builtin_clz(x);
#elif defined(__GNUC__) && ULONG_MAX == 0xFFFFFFFFu
    return (unsigned)__builtin_clzl(x);
#else
    unsigned n = 0;
    while (!(x & 0x80000000u)) {
        x <<= 1;
        n++;
    }
    return n;
#endif
}

static unsigned ev_bit_length64(uint64_t x) /* x != 0 */
{
    uint32_t hi = (uint32_t)(x >> 32);
    return hi ? 64u - ev_clz32(hi) : 32u - ev_clz32((uint32_t)x);
}

/* x / 2^k rounded half to even, k >= 1 */
static uint64_t ev_round_shift64(uint64_t x, unsigned k)
{
    return (x + ((((uint64_t)1) << (k - 1)) - 1u) + ((x >> k) & 1u)) >> k;
}

/* round_half_even(float32(float32(acc) * mult * 2^-shift)), saturated to +-512.
 * float32 rounding is reproduced with integers: the int32 -> float32 conversion and the
 * product each keep 24 significant bits (half to even), then the result rounds to an integer.
 * This is what onnxruntime's QGemm computes, so logits match it exactly. General version. */
#if defined(__GNUC__)
__attribute__((noinline, cold))
#endif
static int32_t ev_requantize_exact(int32_t acc, uint32_t mult, unsigned shift)
{
    uint32_t u = acc < 0 ? 0u - (uint32_t)acc : (uint32_t)acc;
    uint64_t m;
    uint32_t r;
    if (u >> 24) {
        unsigned k = 8u - ev_clz32(u);
        u = (uint32_t)(ev_round_shift64(u, k) << k);
    }
    m = (uint64_t)u * mult;
    if (m >> (shift + 9u)) {
        r = 512u; /* |value| >= 512 saturates every 8-bit range */
    } else {
        if (m >> 24) {
            unsigned k = ev_bit_length64(m) - 24u;
            m = ev_round_shift64(m, k) << k;
        }
        r = (uint32_t)ev_round_shift64(m, shift);
    }
    return acc < 0 ? -(int32_t)r : (int32_t)r;
}

/* Same result, mostly 32-bit operations, for 17 <= shift <= 47 (checked by codegen).
 * t = value * 2^16 truncated. Rounding t directly equals the exact double rounding unless
 * t's fraction is within one unit of one half (the 24-bit rounding of the product moves
 * the value by less than 2^(shift-16) when |value| < 512). Those outputs (about 5 in
 * 100000), saturated ones and |acc| >= 2^24 take the exact path. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline int32_t ev_requantize(int32_t acc, uint32_t param)
{
    const uint32_t mult = param & 0x00FFFFFFu;
    const unsigned c = param >> 24; /* shift - 16 */
    const uint32_t u = acc < 0 ? 0u - (uint32_t)acc : (uint32_t)acc;
    const uint32_t sign = 0u - (uint32_t)(acc < 0);
    const uint64_t m = (uint64_t)u * mult;
    const uint32_t hi = (uint32_t)(m >> 32), lo = (uint32_t)m;
    uint32_t t = (hi << (32u - c)) | (lo >> c); /* value * 2^16, truncated */
    /* rare: |acc| >= 2^24 (float32(acc) rounds), |value| >= 512 (saturates) */
    if ((u >> 24) | (hi >> c) | (t >> 25))
        return ev_requantize_exact(acc, mult, c + 16u);
    t += 0x8000u; /* + one half: a fraction of 0x7FFF..0x8001 is now 0xFFFF, 0 or 1 */
    if ((uint32_t)(t << 16) + 0x10000u <= 0x20000u)
        return ev_requantize_exact(acc, mult, c + 16u);
    return (int32_t)(((t >> 16) ^ sign) - sign);
}

/* Second stage of MatMul -> Q -> DQ -> Add layers (see edgevae_types.h). The +2^30 offset
 * keeps the shift on an unsigned value; it is a multiple of 2^shift, so parity (and with it
 * the tie to even) is unchanged. */
static int32_t ev_add_mid_bias(const edgevae_layer_t *L, unsigned j, int32_t value)
{
    const unsigned k = L->mid_shift;
    int32_t q1 = value + L->mid_zero_point, r;
    uint32_t u;
    q1 = q1 < L->mid_qmin ? L->mid_qmin : (q1 > L->mid_qmax ? L->mid_qmax : q1);
    u = (uint32_t)((q1 - L->mid_zero_point) * L->mid_mult + L->mid_bias[j]) + 0x40000000u;
    r = (int32_t)(uint32_t)ev_round_shift64(u, k) - (int32_t)(0x40000000u >> k);
    return r < -512 ? -512 : (r > 512 ? 512 : r);
}

/* ------------------------------------------------------------------ dot products */

#if EV_USE_DSP
/* The two activation words of a chunk: one LDRD in Thumb-2; ARM-state LDRD needs an even,
 * consecutive register pair, which the compiler's choice need not be, so two LDRs there. */
#if defined(__thumb2__)
#define EV_LOAD_ACT "ldrd   %[x01], %[x23], [%[a]], #8\n\t"
#else
#define EV_LOAD_ACT "ldr    %[x01], [%[a]], #4\n\tldr    %[x23], [%[a]], #4\n\t"
#endif
/* One column chunk for four rows: 4 weight words (LDM), one packed activation pair each
 * for columns k..k+1 and k+2..k+3, then per row SXTB16 / SMLAD / SXTB16 ROR #8 / SMLAD. */
#define EV_CHUNK                                                                           \
    EV_LOAD_ACT                                                                            \
    "ldmia  %[w]!, {%[w0], %[w1], %[w2], %[w3]}\n\t"                                        \
    "sxtb16 %[t], %[w0]\n\t"                                                                \
    "smlad  %[s0], %[t], %[x01], %[s0]\n\t"                                                 \
    "sxtb16 %[t], %[w0], ror #8\n\t"                                                        \
    "smlad  %[s0], %[t], %[x23], %[s0]\n\t"                                                 \
    "sxtb16 %[t], %[w1]\n\t"                                                                \
    "smlad  %[s1], %[t], %[x01], %[s1]\n\t"                                                 \
    "sxtb16 %[t], %[w1], ror #8\n\t"                                                        \
    "smlad  %[s1], %[t], %[x23], %[s1]\n\t"                                                 \
    "sxtb16 %[t], %[w2]\n\t"                                                                \
    "smlad  %[s2], %[t], %[x01], %[s2]\n\t"                                                 \
    "sxtb16 %[t], %[w2], ror #8\n\t"                                                        \
    "smlad  %[s2], %[t], %[x23], %[s2]\n\t"                                                 \
    "sxtb16 %[t], %[w3]\n\t"                                                                \
    "smlad  %[s3], %[t], %[x01], %[s3]\n\t"                                                 \
    "sxtb16 %[t], %[w3], ror #8\n\t"                                                        \
    "smlad  %[s3], %[t], %[x23], %[s3]\n\t"

#define EV_CHUNK_OPERANDS                                                                  \
    : [s0] "+r"(s0), [s1] "+r"(s1), [s2] "+r"(s2), [s3] "+r"(s3), [a] "+r"(a), [w] "+r"(w), \
      [x01] "=&r"(x01), [x23] "=&r"(x23), [t] "=&r"(t), [w0] "=&r"(w0), [w1] "=&r"(w1),   \
      [w2] "=&r"(w2), [w3] "=&r"(w3)                                                      \
    :                                                                                      \
    : "memory"

/* Four rows x in_padded columns: 146 instructions per 128 MACs in the 8-chunk loop.
 * SMLAD accumulates exactly: codegen proved every partial sum fits in int32. */
static void ev_dot_block(const uint32_t *w, const uint32_t *a, unsigned chunks, int32_t acc[4])
{
    /* LDM needs its registers in ascending order, so they are pinned (avoiding r7, the
     * Thumb frame pointer, and r9, reserved on some platforms). */
    register uint32_t w0 __asm__("r4");
    register uint32_t w1 __asm__("r5");
    register uint32_t w2 __asm__("r6");
    register uint32_t w3 __asm__("r8");
    int32_t s0 = acc[0], s1 = acc[1], s2 = acc[2], s3 = acc[3];
    uint32_t x01, x23, t;
    unsigned eights = chunks >> 3, rest = chunks & 7u;
    for (; eights; eights--) /* 128 MACs per SUBS + BNE */
        __asm__(EV_CHUNK EV_CHUNK EV_CHUNK EV_CHUNK EV_CHUNK EV_CHUNK EV_CHUNK EV_CHUNK
                    EV_CHUNK_OPERANDS);
    if (rest & 4u)
        __asm__(EV_CHUNK EV_CHUNK EV_CHUNK EV_CHUNK EV_CHUNK_OPERANDS);
    for (rest &= 3u; rest; rest--)
        __asm__(EV_CHUNK EV_CHUNK_OPERANDS);
    acc[0] = s0;
    acc[1] = s1;
    acc[2] = s2;
    acc[3] = s3;
}

#ifdef EDGEVAE_HAS_4BIT_WEIGHTS
/* 4-bit weights: one column chunk for four rows is two words (rows 0-1, rows 2-3), whose
 * nibble pairs (word >> 4s) & 0x000F000F are int16 pairs for SMLAD directly (layout in
 * edgevae_types.h): per word 4 AND (shifted operand) + 4 SMLAD, the same 18 instructions per
 * 16 MACs as the int8 chunk with half the weight loads. The nibbles are w + 8; the caller
 * subtracts 8 * sum(a) once per row. */
#if defined(__thumb2__)
#define EV_LOAD_W4 "ldrd   %[w0], %[w1], [%[w]], #8\n\t"
#else
#define EV_LOAD_W4 "ldr    %[w0], [%[w]], #4\n\tldr    %[w1], [%[w]], #4\n\t"
#endif
#define EV_CHUNK4                                                                          \
    EV_LOAD_ACT                                                                            \
    EV_LOAD_W4                                                                             \
    "and    %[t], %[m], %[w0]\n\t"                                                          \
    "smlad  %[s0], %[t], %[x01], %[s0]\n\t"                                                 \
    "and    %[t], %[m], %[w0], lsr #4\n\t"                                                  \
    "smlad  %[s0], %[t], %[x23], %[s0]\n\t"                                                 \
    "and    %[t], %[m], %[w0], lsr #8\n\t"                                                  \
    "smlad  %[s1], %[t], %[x01], %[s1]\n\t"                                                 \
    "and    %[t], %[m], %[w0], lsr #12\n\t"                                                 \
    "smlad  %[s1], %[t], %[x23], %[s1]\n\t"                                                 \
    "and    %[t], %[m], %[w1]\n\t"                                                          \
    "smlad  %[s2], %[t], %[x01], %[s2]\n\t"                                                 \
    "and    %[t], %[m], %[w1], lsr #4\n\t"                                                  \
    "smlad  %[s2], %[t], %[x23], %[s2]\n\t"                                                 \
    "and    %[t], %[m], %[w1], lsr #8\n\t"                                                  \
    "smlad  %[s3], %[t], %[x01], %[s3]\n\t"                                                 \
    "and    %[t], %[m], %[w1], lsr #12\n\t"                                                 \
    "smlad  %[s3], %[t], %[x23], %[s3]\n\t"

#define EV_CHUNK4_OPERANDS                                                                 \
    : [s0] "+r"(s0), [s1] "+r"(s1), [s2] "+r"(s2), [s3] "+r"(s3), [a] "+r"(a), [w] "+r"(w), \
      [x01] "=&r"(x01), [x23] "=&r"(x23), [t] "=&r"(t), [w0] "=&r"(w0), [w1] "=&r"(w1)    \
    : [m] "r"(m)                                                                           \
    : "memory"

static void ev_dot_block4(const uint32_t *w, const uint32_t *a, unsigned chunks, int32_t acc[4])
{
    const uint32_t m = 0x000F000Fu;
    int32_t s0 = acc[0], s1 = acc[1], s2 = acc[2], s3 = acc[3];
    uint32_t x01, x23, t, w0, w1;
    unsigned eights = chunks >> 3, rest = chunks & 7u;
    for (; eights; eights--) /* 128 MACs per SUBS + BNE */
        __asm__(EV_CHUNK4 EV_CHUNK4 EV_CHUNK4 EV_CHUNK4 EV_CHUNK4 EV_CHUNK4 EV_CHUNK4 EV_CHUNK4
                    EV_CHUNK4_OPERANDS);
    if (rest & 4u)
        __asm__(EV_CHUNK4 EV_CHUNK4 EV_CHUNK4 EV_CHUNK4 EV_CHUNK4_OPERANDS);
    for (rest &= 3u; rest; rest--)
        __asm__(EV_CHUNK4 EV_CHUNK4_OPERANDS);
    acc[0] = s0;
    acc[1] = s1;
    acc[2] = s2;
    acc[3] = s3;
}
#endif /* EDGEVAE_HAS_4BIT_WEIGHTS */
#else
/* Sign extension by arithmetic, so the result does not depend on implementation-defined
 * conversions or on byte order. */
static int32_t ev_s8(uint32_t word, unsigned byte)
{
    return (int32_t)(((word >> (8u * byte)) & 0xFFu) ^ 0x80u) - 0x80;
}

static int32_t ev_s16(uint32_t word, unsigned half)
{
    return (int32_t)(((word >> (16u * half)) & 0xFFFFu) ^ 0x8000u) - 0x8000;
}

static void ev_dot_block(const uint32_t *w, const uint32_t *a, unsigned chunks, int32_t acc[4])
{
    unsigned c, r;
    for (c = 0; c < chunks; c++, a += 2, w += 4) {
        int32_t x0 = ev_s16(a[0], 0), x1 = ev_s16(a[0], 1);
        int32_t x2 = ev_s16(a[1], 0), x3 = ev_s16(a[1], 1);
        for (r = 0; r < 4; r++) {
            uint32_t word = w[r]; /* bytes: w[k], w[k+2], w[k+1], w[k+3] */
            acc[r] += ev_s8(word, 0) * x0 + ev_s8(word, 2) * x1 + ev_s8(word, 1) * x2 +
                      ev_s8(word, 3) * x3;
        }
    }
}

#ifdef EDGEVAE_HAS_4BIT_WEIGHTS
/* nibble i of a 4-bit weight word: w + 8, 0..15 */
static int32_t ev_nib(uint32_t word, unsigned i)
{
    return (int32_t)((word >> (4u * i)) & 0xFu);
}

static void ev_dot_block4(const uint32_t *w, const uint32_t *a, unsigned chunks, int32_t acc[4])
{
    unsigned c, h;
    for (c = 0; c < chunks; c++, a += 2, w += 2) {
        int32_t x0 = ev_s16(a[0], 0), x1 = ev_s16(a[0], 1);
        int32_t x2 = ev_s16(a[1], 0), x3 = ev_s16(a[1], 1);
        for (h = 0; h < 2; h++) { /* rows 2h and 2h + 1 */
            uint32_t word = w[h];
            acc[2 * h] += ev_nib(word, 0) * x0 + ev_nib(word, 4) * x1 + ev_nib(word, 1) * x2 +
                          ev_nib(word, 5) * x3;
            acc[2 * h + 1] += ev_nib(word, 2) * x0 + ev_nib(word, 6) * x1 +
                              ev_nib(word, 3) * x2 + ev_nib(word, 7) * x3;
        }
    }
}
#endif /* EDGEVAE_HAS_4BIT_WEIGHTS */
#endif

/* ------------------------------------------------------------------ layers */

static uint32_t ev_pack(int32_t lo, int32_t hi)
{
    return ((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16);
}

/* value for output row j (requantization, then the MatMul + Add stage if any) */
static int32_t ev_value(const edgevae_layer_t *L, unsigned j, int32_t acc)
{
    int32_t value = ev_requantize(acc, L->requant[j]);
    return L->mid_bias ? ev_add_mid_bias(L, j, value) : value;
}

#ifdef EDGEVAE_HAS_4BIT_WEIGHTS
#define EV_FOUR(L) ((L)->weight_bits == 4)
#else /* int8 weights only: the 4-bit path is not compiled */
#define EV_FOUR(L) 0
#define ev_dot_block4 ev_dot_block
#endif

/* 8 * the sum of a layer's input values (packed pairs; padding is zero): 4-bit layers
 * multiply by w + 8, so each row subtracts it once. */
static int32_t ev_nibble_correction(const uint32_t *in, unsigned in_padded)
{
    int32_t sum = 0;
    unsigned i;
    for (i = 0; i < in_padded / 2u; i++) {
        const uint32_t word = in[i];
        sum += (int32_t)((word & 0xFFFFu) ^ 0x8000u) - 0x8000 + (int32_t)((word >> 16) ^ 0x8000u) -
               0x8000;
    }
    return sum * EDGEVAE_NIBBLE_OFFSET;
}

/* One layer: in (packed) -> out (packed, hidden layers) or pixels (last layer).
 * Rows come in blocks of 4 and the next layer's input is padded to a multiple of 4 too, so
 * each block writes two whole words; rows past out_dim write the zero padding. Full blocks
 * of plain layers take the unrolled path (no loop counter, one parameter load per row). */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static void ev_layer(const edgevae_layer_t *L, const uint32_t *in, uint32_t *out,
                     uint8_t *pixels)
{
    const unsigned chunks = L->in_padded / EDGEVAE_COL_CHUNK, out_dim = L->out_dim;
    const unsigned full = L->mid_bias ? 0u : out_dim & ~3u;
    const int four = EV_FOUR(L);
    const unsigned block_words = chunks * (four ? 2u : 4u);
    const int32_t corr = four ? ev_nibble_correction(in, L->in_padded) : 0;
    const uint8_t *table = L->table + EDGEVAE_TABLE_BIAS;
    const uint32_t *w = L->weights;
    unsigned j0, r;
    for (j0 = 0; j0 < out_dim; j0 += EDGEVAE_ROW_BLOCK) {
        const uint32_t *p = L->requant + j0;
        int32_t acc[4];
        acc[0] = L->bias[j0] - corr;
        acc[1] = L->bias[j0 + 1] - corr;
        acc[2] = L->bias[j0 + 2] - corr;
        acc[3] = L->bias[j0 + 3] - corr;
        if (four)
            ev_dot_block4(w, in, chunks, acc);
        else
            ev_dot_block(w, in, chunks, acc);
        w += block_words;
        if (j0 < full) {
            const int32_t v0 = ev_requantize(acc[0], p[0]), v1 = ev_requantize(acc[1], p[1]);
            const int32_t v2 = ev_requantize(acc[2], p[2]), v3 = ev_requantize(acc[3], p[3]);
            if (pixels) {
                pixels[j0] = table[v0];
                pixels[j0 + 1] = table[v1];
                pixels[j0 + 2] = table[v2];
                pixels[j0 + 3] = table[v3];
            } else {
                const int32_t k = L->table_offset;
                out[j0 / 2u] = ev_pack(table[v0] + k, table[v1] + k);
                out[j0 / 2u + 1u] = ev_pack(table[v2] + k, table[v3] + k);
            }
        } else {
            const unsigned n = out_dim - j0 < 4u ? out_dim - j0 : 4u;
            for (r = 0; r < 4u; r++) {
                int32_t q = r < n ? table[ev_value(L, j0 + r, acc[r])] : 0;
                if (pixels && r < n)
                    pixels[j0 + r] = (uint8_t)q;
                acc[r] = q + (r < n ? L->table_offset : 0);
            }
            if (!pixels) {
                out[j0 / 2u] = ev_pack(acc[0], acc[1]);
                out[j0 / 2u + 1u] = ev_pack(acc[2], acc[3]);
            }
        }
    }
}

/* The decoder from quantized latents: hidden layers ping-pong between the buffers, then
 * `last` (the pixel layer, or the score's logit layer) writes one byte per output. A
 * conditional decoder's first layer runs from a copy whose bias is its label's row of
 * edgevae_class_bias (the one-hot product folded in), so the label costs no MACs. */
static void ev_decoder(const edgevae_zq_t zq[EDGEVAE_LATENT_DIM], unsigned label,
                       const edgevae_layer_t *last, uint8_t *out)
{
    const edgevae_layer_t *first = &edgevae_layers[0];
    unsigned i;
#ifdef EDGEVAE_NUM_CLASSES
    edgevae_layer_t labelled = edgevae_layers[0];
    labelled.bias = edgevae_class_bias + (size_t)label * labelled.out_padded;
    first = &labelled;
    if (EDGEVAE_NUM_LAYERS == 1)
        last = &labelled;
#else
    (void)label;
#endif
    for (i = 0; i < first->in_padded; i += 2) {
        int32_t lo = i < EDGEVAE_LATENT_DIM ? (int32_t)zq[i] : 0;
        int32_t hi = i + 1 < EDGEVAE_LATENT_DIM ? (int32_t)zq[i + 1] : 0;
        ev_act0[i / 2] = ev_pack(lo, hi);
    }
    for (i = 0; i + 1 < EDGEVAE_NUM_LAYERS; i++)
        ev_layer(i ? &edgevae_layers[i] : first, EV_BUF(i), EV_BUF(i + 1u), NULL);
    ev_layer(last, EV_BUF(EDGEVAE_NUM_LAYERS - 1u), NULL, out);
}

#ifdef EDGEVAE_NUM_CLASSES
int edgevae_decode_label_q(const edgevae_zq_t zq[EDGEVAE_LATENT_DIM], unsigned label,
                           uint8_t pixels[EDGEVAE_OUTPUT_DIM])
{
    if (zq == NULL || pixels == NULL)
        return EDGEVAE_ERR_NULL;
    if (label >= EDGEVAE_NUM_CLASSES)
        return EDGEVAE_ERR_LABEL;
    ev_decoder(zq, label, &edgevae_layers[EDGEVAE_NUM_LAYERS - 1], pixels);
    return EDGEVAE_OK;
}
#else
int edgevae_decode_q(const edgevae_zq_t zq[EDGEVAE_LATENT_DIM], uint8_t pixels[EDGEVAE_OUTPUT_DIM])
{
    if (zq == NULL || pixels == NULL)
        return EDGEVAE_ERR_NULL;
    ev_decoder(zq, 0u, &edgevae_layers[EDGEVAE_NUM_LAYERS - 1], pixels);
    return EDGEVAE_OK;
}
#endif

/* ------------------------------------------------------------------ input quantization */

int edgevae_quantize_z(const float z[EDGEVAE_LATENT_DIM], edgevae_zq_t zq[EDGEVAE_LATENT_DIM])
{
    const float lo = (float)(EDGEVAE_INPUT_QMIN - EDGEVAE_INPUT_ZERO_POINT);
    const float hi = (float)(EDGEVAE_INPUT_QMAX - EDGEVAE_INPUT_ZERO_POINT);
    unsigned i;
    if (z == NULL || zq == NULL)
        return EDGEVAE_ERR_NULL;
    for (i = 0; i < EDGEVAE_LATENT_DIM; i++)
        if (!isfinite(z[i]))
            return EDGEVAE_ERR_NONFINITE;
    for (i = 0; i < EDGEVAE_LATENT_DIM; i++) {
        /* the same float32 division as onnxruntime's QuantizeLinear */
        float v = z[i] / EDGEVAE_INPUT_SCALE;
        float frac;
        int32_t t;
        v = v < lo ? lo : (v > hi ? hi : v);
        t = (int32_t)v; /* toward zero; |v| <= 255 so exact */
        frac = v - (float)t;
        if (frac > 0.5f || (frac == 0.5f && t % 2 != 0))
            t++;
        else if (frac < -0.5f || (frac == -0.5f && t % 2 != 0))
            t--;
        zq[i] = (edgevae_zq_t)(t + EDGEVAE_INPUT_ZERO_POINT);
    }
    return EDGEVAE_OK;
}

#ifdef EDGEVAE_NUM_CLASSES
int edgevae_decode_label(const float z[EDGEVAE_LATENT_DIM], unsigned label,
                         uint8_t pixels[EDGEVAE_OUTPUT_DIM])
{
    edgevae_zq_t zq[EDGEVAE_LATENT_DIM];
    int status;
    if (pixels == NULL)
        return EDGEVAE_ERR_NULL;
    if (label >= EDGEVAE_NUM_CLASSES)
        return EDGEVAE_ERR_LABEL;
    status = edgevae_quantize_z(z, zq);
    return status != EDGEVAE_OK ? status : edgevae_decode_label_q(zq, label, pixels);
}
#else
int edgevae_decode(const float z[EDGEVAE_LATENT_DIM], uint8_t pixels[EDGEVAE_OUTPUT_DIM])
{
    edgevae_zq_t zq[EDGEVAE_LATENT_DIM];
    int status;
    if (pixels == NULL)
        return EDGEVAE_ERR_NULL;
    status = edgevae_quantize_z(z, zq);
    return status != EDGEVAE_OK ? status : edgevae_decode_q(zq, pixels);
}
#endif

#ifdef EDGEVAE_HAS_SCORE
/* ------------------------------------------------------------------ encoder and score
 *
 * Compiled with weights from `edgevae firmware --score`; edgevae/firmware/score.py mirrors it
 * bit for bit.
 * The encoder's heads write the quantized mu and logvar as bytes (value - qmin); everything
 * after them is tables indexed by those bytes and by the decoder's quantized logits, and
 * integer sums in fixed point (units 2^-EDGEVAE_SCORE_FRAC_BITS nats), so the only float
 * operations are the final exact conversion and a multiplication by a power of two. */

#define EV_ENC_BODY (EDGEVAE_ENC_NUM_LAYERS - 2) /* hidden layers; then the mu, logvar heads */

EV_STATIC_ASSERT(EDGEVAE_ENC_NUM_LAYERS >= 2, encoder_has_heads);
/* the logit bytes go to the buffer the decoder's last layer does not read */
EV_STATIC_ASSERT(2 * ((EDGEVAE_NUM_LAYERS & 1) ? EDGEVAE_ACT1_PADDED : EDGEVAE_ACT0_PADDED) >=
                     EDGEVAE_OUTPUT_DIM,
                 logit_buffer_fits);

/* encoder: pixels -> mu and logvar as bytes (quantized value - qmin) */
static void ev_encoder(const uint8_t pixels[EDGEVAE_OUTPUT_DIM], uint8_t mu[EDGEVAE_LATENT_DIM],
                       uint8_t logvar[EDGEVAE_LATENT_DIM])
{
    const unsigned padded = edgevae_encoder_layers[0].in_padded;
    const int16_t *x = edgevae_pixel_input;
    unsigned i;
    /* x = pixel / 255 quantized like QuantizeLinear: one table, two values per word */
    for (i = 0; i + 1u < EDGEVAE_OUTPUT_DIM; i += 2)
        ev_act0[i / 2] = ev_pack(x[pixels[i]], x[pixels[i + 1]]);
    for (; i < padded; i += 2)
        ev_act0[i / 2] = ev_pack(i < EDGEVAE_OUTPUT_DIM ? x[pixels[i]] : 0, 0);
    for (i = 0; i < EV_ENC_BODY; i++)
        ev_layer(&edgevae_encoder_layers[i], EV_BUF(i), EV_BUF(i + 1u), NULL);
    ev_layer(&edgevae_encoder_layers[EV_ENC_BODY], EV_BUF(EV_ENC_BODY), NULL, mu);
    ev_layer(&edgevae_encoder_layers[EV_ENC_BODY + 1], EV_BUF(EV_ENC_BODY), NULL, logvar);
}

int edgevae_encode_q(const uint8_t pixels[EDGEVAE_OUTPUT_DIM],
                     edgevae_muq_t mu_q[EDGEVAE_LATENT_DIM],
                     edgevae_lvq_t logvar_q[EDGEVAE_LATENT_DIM])
{
    uint8_t mu[EDGEVAE_LATENT_DIM], logvar[EDGEVAE_LATENT_DIM];
    unsigned j;
    if (pixels == NULL || mu_q == NULL || logvar_q == NULL)
        return EDGEVAE_ERR_NULL;
    ev_encoder(pixels, mu, logvar);
    for (j = 0; j < EDGEVAE_LATENT_DIM; j++) {
        mu_q[j] = (edgevae_muq_t)(mu[j] + EDGEVAE_MU_QMIN);
        logvar_q[j] = (edgevae_lvq_t)(logvar[j] + EDGEVAE_LOGVAR_QMIN);
    }
    return EDGEVAE_OK;
}

int edgevae_encode(const uint8_t pixels[EDGEVAE_OUTPUT_DIM], float mu[EDGEVAE_LATENT_DIM],
                   float logvar[EDGEVAE_LATENT_DIM])
{
    uint8_t m[EDGEVAE_LATENT_DIM], v[EDGEVAE_LATENT_DIM];
    unsigned j;
    if (pixels == NULL || mu == NULL || logvar == NULL)
        return EDGEVAE_ERR_NULL;
    ev_encoder(pixels, m, v);
    for (j = 0; j < EDGEVAE_LATENT_DIM; j++) { /* DequantizeLinear: float(q - zp) * scale */
        mu[j] = (float)(m[j] + EDGEVAE_MU_QMIN - EDGEVAE_MU_ZERO_POINT) * EDGEVAE_MU_SCALE;
        logvar[j] =
            (float)(v[j] + EDGEVAE_LOGVAR_QMIN - EDGEVAE_LOGVAR_ZERO_POINT) * EDGEVAE_LOGVAR_SCALE;
    }
    return EDGEVAE_OK;
}

#if EDGEVAE_SCORE_KIND_EXCESS
#define EV_EXCESS 1
#else
#define EV_EXCESS 0 /* the elbo score (also weights generated before the excess score) */
#endif

/* -log p(x | z = mu) in units of 2^-EDGEVAE_SCORE_FRAC_BITS nats; for the excess score also
 * *least, the least -log p(x | z) any decoder reaches for these pixels, in the same units
 * (Bernoulli: sum H(p / 255); Gaussian: the constant part of the sum) */
static int64_t ev_recon_sum(const uint8_t pixels[EDGEVAE_OUTPUT_DIM],
                            const uint8_t logit[EDGEVAE_OUTPUT_DIM], int64_t *least)
{
    unsigned i;
#if EDGEVAE_LIKELIHOOD_GAUSSIAN
    /* const + sum w_i * (256 * p - mean(l))^2, |256 p - mean| < 2^16: the square fits 32 bits */
    int64_t acc = EDGEVAE_GAUSS_CONST;
    for (i = 0; i < EDGEVAE_OUTPUT_DIM; i++) {
        int32_t e = (int32_t)pixels[i] * 256 - (int32_t)edgevae_gauss_mean[logit[i]];
        uint32_t u = (uint32_t)(e < 0 ? -e : e);
        acc += (int64_t)((uint64_t)(u * u) * edgevae_gauss_weight[i]);
    }
    *least = EV_EXCESS ? EDGEVAE_GAUSS_CONST : 0;
    return acc;
#else
    /* sum softplus(l) - (p / 255) * l: softplus in 2^-EDGEVAE_SOFTPLUS_SHIFT coarser units */
    int64_t sp = 0, xl = 0;
#if EV_EXCESS
    int64_t h = 0; /* sum H(p / 255), in 2^-EDGEVAE_ENTROPY_SHIFT coarser units */
#endif
    for (i = 0; i < EDGEVAE_OUTPUT_DIM; i++) {
        const unsigned k = logit[i], p = pixels[i];
        sp += edgevae_softplus[k];
        xl += (int64_t)p * edgevae_neg_logit[k];
#if EV_EXCESS
        h += edgevae_entropy[p];
#endif
    }
#if EV_EXCESS
    *least = h * ((int64_t)1 << EDGEVAE_ENTROPY_SHIFT);
#else
    *least = 0;
#endif
    return sp * ((int64_t)1 << EDGEVAE_SOFTPLUS_SHIFT) + xl;
#endif
}

/* int64 fixed point -> float32 times `unit` (a power of two), rounded half to even in
 * integers first, so the conversion itself is exact on every target */
static float ev_to_float(int64_t v, float unit)
{
    uint64_t u = v < 0 ? 0u - (uint64_t)v : (uint64_t)v;
    float f;
    if (u >> 24) {
        const unsigned k = ev_bit_length64(u) - 24u;
        u = ev_round_shift64(u, k) << k;
    }
    f = (float)u;
    return (v < 0 ? -f : f) * unit;
}

int edgevae_score_parts(const uint8_t pixels[EDGEVAE_OUTPUT_DIM], float *score, float *recon,
                        float *kl)
{
    uint8_t mu[EDGEVAE_LATENT_DIM], logvar[EDGEVAE_LATENT_DIM];
    edgevae_zq_t zq[EDGEVAE_LATENT_DIM];
    /* the logit bytes reuse the activation buffer the last decoder layer does not read */
    uint8_t *logit = (uint8_t *)EV_BUF(EDGEVAE_NUM_LAYERS);
    int64_t rec, least, kls = 0;
    unsigned j;
    if (pixels == NULL || score == NULL)
        return EDGEVAE_ERR_NULL;
    ev_encoder(pixels, mu, logvar);
    for (j = 0; j < EDGEVAE_LATENT_DIM; j++) {
        zq[j] = edgevae_mu_to_zq[mu[j]];
        kls += (int64_t)edgevae_kl_mu[mu[j]] + edgevae_kl_logvar[logvar[j]];
    }
    ev_decoder(zq, 0u, &edgevae_logit_layer, logit);
    rec = ev_recon_sum(pixels, logit, &least);
    /* elbo: least is 0; excess: rec - least + kl stays within int64 (scoretables.py's limits) */
    *score = ev_to_float(rec - least + kls * ((int64_t)1 << EDGEVAE_KL_SHIFT),
                         EDGEVAE_SCORE_UNIT);
    if (recon != NULL)
        *recon = ev_to_float(rec, EDGEVAE_SCORE_UNIT);
    if (kl != NULL)
        *kl = ev_to_float(kls, EDGEVAE_KL_UNIT);
    return EDGEVAE_OK;
}

int edgevae_score(const uint8_t pixels[EDGEVAE_OUTPUT_DIM], float *score)
{
    return edgevae_score_parts(pixels, score, NULL, NULL);
}
#endif /* EDGEVAE_HAS_SCORE */
