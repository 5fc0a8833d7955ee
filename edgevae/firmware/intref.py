"""Integer reference of the int8 decoder: the exact arithmetic of the C kernel
(kernel/edgevae_kernel.c next to this module, shipped inside the package).

`decode_int(load_int_model(path), z)` mirrors every step of the kernel, so the C build must
reproduce it bit for bit:

1. z (float32) is quantized like onnxruntime's QuantizeLinear: float32 division by the input
   scale, clamp, round half to even, add the zero point.
2. Each layer accumulates int8 weight x activation products in int32. The activation zero
   point is folded into the bias at load time (bias - zp_in * sum(W)), so the kernel multiplies
   raw uint8/int8 activations.
3. Requantization uses an int32 multiplier and a right shift, but not gemmlowp's rounding:
   the multiplier is the 24-bit mantissa of onnxruntime's float32 scale
   float32(float32(s_in * s_w) / s_out) and the rounding reproduces float32 exactly
   (int32 -> float32 keeps 24 significant bits, the product is rounded to 24 bits, then to an
   integer, all half-to-even). A gemmlowp-style 31-bit multiplier disagrees with onnxruntime in
   one step on a few outputs, and one step of the logit is up to ~13 grey levels after the
   sigmoid, so exactness is worth the few extra instructions per output (not per MAC).
4. ReLU is a clamp at the output zero point; a float activation between two quantized tensors
   (Relu or Tanh that onnxruntime runs as DQ -> op -> Q) is a 256-entry table computed with the
   same float32 operations onnxruntime uses.
   4-bit layers (weights -8..7, stored as w + 8, two per byte) give the same accumulator:
   the kernel adds sum((w + 8) * a) and subtracts 8 * sum(a) once per row.
   A conditional decoder's first layer starts from its label's bias row (`class_bias`):
   the one-hot label's only non-zero column times its quantized 1.
5. The last layer's uint8/int8 logit indexes a 256-entry table:
   pixel = round_half_even(255 * sigmoid(dequantized logit)) (through the Sigmoid's own
   quantization when the model quantizes it too).

The C kernel folds the steps after requantization (zero point, clamp, ReLU floor, tables) into
one 1025-entry table per layer indexed by the requantized value; codegen.output_table builds
it from the pieces here, so the arithmetic is the same.

Exactness against onnxruntime (QDQ model, default graph optimization, `x_mean * 255` rounded):
for Gemm + Relu models onnxruntime fuses each layer into QGemm, whose requantization is the
float32 computation of step 3, so the integer logits are identical; pixels differ only where
onnxruntime's approximate float sigmoid lands on the other side of a .5 rounding boundary
(at most 1 grey level). Exceptions, each measured by tests/firmware/test_intref.py: a layer that
onnxruntime does not fuse (it then runs a float Gemm, whose rounding differs near ties), Tanh
(onnxruntime's tanh approximation vs the correctly rounded one in the table), uint8
activations without reduce_range on CPUs whose u8 x s8 dot product saturates in 16 bits
(AVX2 without VNNI), and MatMul -> Q -> DQ -> Add graphs, whose float bias Add is done here in
2**-16 (or finer) fixed point and can land on the other side of a tie.
Measured (ORT 1.32, AVX2): 0 of 4.7 M pixels differ for edgevae-trained 784-400-20 and
784-128-8 decoders (firmware recipe); (AVX-512 VNNI) 0 of 2.0 M for their 4-bit decoders
(firmware-int4 recipe) and 0 of 1.1 M for a conditional 784-128-8 decoder; the test variants,
Tanh and MatMul + Add included, show no difference either, except s8 (ORT leaves a Gemm
unfused: ~1e-6 of pixels) and full-range uint8 weights on this AVX2 CPU (ORT itself
saturates: ~5% of pixels).

The pieces live in two modules: `fixedpoint` (the float32 and integer arithmetic of steps 1-5)
and `intmodel` (reading a QDQ decoder into an IntModel); this module runs the model and keeps
the names callers use (IntModel, IntLayer and load_int_model are re-exported).
"""

from __future__ import annotations

import numpy as np

from .fixedpoint import INT32_MAX, SATURATED, quantize_linear, requantize, round_shift_signed
from .intmodel import IntLayer, IntModel, load_int_model

__all__ = [
    "IntLayer",
    "IntModel",
    "add_mid_bias",
    "decode_int",
    "decode_q",
    "demo_latents",
    "fnv1a32",
    "forward",
    "label_bias",
    "load_int_model",
    "logits_q",
    "quantize_input",
]


def add_mid_bias(layer: IntLayer, value: np.ndarray) -> np.ndarray:
    """The second stage of MatMul -> Q -> DQ -> Add layers (see IntLayer)."""
    mid = layer.mid_q
    q1 = np.clip(value + mid.zero_point, mid.qmin, mid.qmax)
    v = (q1 - mid.zero_point) * layer.mid_mult + layer.mid_bias.astype(np.int64)
    return np.clip(round_shift_signed(v, layer.mid_shift), -SATURATED, SATURATED)


def quantize_input(model: IntModel, z: np.ndarray) -> np.ndarray:
    """z float [N, L] -> raw input values (int64), like the kernel and QuantizeLinear."""
    z = np.asarray(z, np.float32)
    if z.ndim != 2 or z.shape[1] != model.latent_dim:
        raise ValueError(f"z must have shape [N, {model.latent_dim}], got {list(z.shape)}")
    if not np.all(np.isfinite(z)):
        raise ValueError("z contains non-finite values")
    return quantize_linear(z, model.input_q)


def forward(
    layers: list[IntLayer], x: np.ndarray, first_bias: np.ndarray | None = None
) -> np.ndarray:
    """Raw input values [N, in] -> the last layer's output values (int64, its table applied
    if it has one), exactly as the kernel's chain of layers computes them. `first_bias`
    [N, out] replaces the first layer's bias per row (a conditional decoder's label rows)."""
    x = np.asarray(x, np.int64)
    for i, layer in enumerate(layers):
        # float64 BLAS is exact here: every product and partial sum is an integer < 2**53
        dot = x.astype(np.float64) @ layer.weight.T.astype(np.float64)
        bias = layer.bias if first_bias is None or i else first_bias
        acc = dot.astype(np.int64) + np.asarray(bias, np.int64)
        if np.abs(acc).max(initial=0) > INT32_MAX:  # load_int_model's bound makes this impossible
            raise AssertionError(f"int32 accumulator overflow in {layer.name}")
        value = requantize(acc, layer.multiplier, layer.shift)
        if layer.mid_q is not None:
            value = add_mid_bias(layer, value)
        value = value + layer.out_q.zero_point
        q = np.clip(value, layer.floor, layer.out_q.qmax)
        x = layer.lut[q - layer.out_q.qmin].astype(np.int64) if layer.lut is not None else q
    return x


def label_bias(model: IntModel, labels, n: int) -> np.ndarray | None:
    """The first layer's bias rows for `labels` (a conditional decoder), None otherwise."""
    if model.class_bias is None:
        if labels is not None:
            raise ValueError(f"{model.source} is not conditional; labels must be None")
        return None
    if labels is None:
        raise ValueError(f"{model.source} is conditional: pass one label per latent vector")
    labels = np.broadcast_to(np.asarray(labels), (n,))
    if (
        labels.dtype.kind not in "iu"
        or labels.min(initial=0) < 0
        or labels.max(initial=0) >= len(model.class_bias)
    ):
        raise ValueError(f"labels must be integers 0..{len(model.class_bias) - 1}")
    return model.class_bias[labels.astype(np.int64)]


def decode_q(model: IntModel, zq: np.ndarray, labels=None) -> np.ndarray:
    """Already-quantized latent values [N, L] (and, conditional, labels [N]) -> uint8
    pixels [N, D]."""
    zq = np.asarray(zq, np.int64)
    x = forward(model.layers, zq, label_bias(model, labels, len(zq)))
    return model.pixel_lut[x - model.layers[-1].out_q.qmin]


def logits_q(model: IntModel, zq: np.ndarray, labels=None) -> np.ndarray:
    """Already-quantized latent values [N, L] -> the quantized logits (values of
    model.logit_q, int64 [N, D]) that the decoder's Sigmoid dequantizes."""
    zq = np.asarray(zq, np.int64)
    x = forward(model.layers, zq, label_bias(model, labels, len(zq)))
    if model.logit_lut is not None:
        x = model.logit_lut[x - model.layers[-1].out_q.qmin].astype(np.int64)
    return x


def decode_int(model: IntModel, z: np.ndarray, labels=None) -> np.ndarray:
    """z float32 [N, L] -> uint8 pixels [N, D], bit-identical to edgevae_decode() in C
    (edgevae_decode_label() with `labels` for a conditional decoder)."""
    return decode_q(model, quantize_input(model, z), labels)


# ------------------------------------------------------------------------- demo mirror helpers


def demo_latents(
    count: int, latent_dim: int, seed: int = 0x2545F491, wide: bool = False
) -> np.ndarray:
    """The demo's latent vectors: xorshift32, sum of four 16-bit uniforms, / 32768 (std ~1.15).

    Integer-only, so every target computes the same float32 values as this function.
    `wide` mirrors EDGEVAE_DEMO_WIDE: vector i is scaled by 1, 8, 1000, -0 for i % 4.
    """
    scales = np.array([1.0, 8.0, 1000.0, -0.0], np.float32)
    state = seed & 0xFFFFFFFF
    out = np.empty((count, latent_dim), np.float32)
    for i in range(count):
        for j in range(latent_dim):
            total = 0
            for _ in range(4):
                state ^= (state << 13) & 0xFFFFFFFF
                state ^= state >> 17
                state ^= (state << 5) & 0xFFFFFFFF
                total += state >> 16
            out[i, j] = np.float32(total - 2 * 65535) / np.float32(32768.0)
            if wide:
                out[i, j] *= scales[i % 4]
    return out


def fnv1a32(data: bytes) -> int:
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h
