"""Fixed-point pieces of the integer reference (see intref for the arithmetic contract).

Float32 pieces reproduce onnxruntime's float32 operations on quantized values (scales,
QuantizeLinear, DequantizeLinear, the activation and sigmoid tables); integer pieces are the
kernel's requantization in integers only, with float32's rounding reproduced exactly.
"""

from __future__ import annotations

import numpy as np

from .qdq import QType

INT32_MAX = 2**31 - 1
SATURATED = 512  # any |value| >= 512 saturates every uint8/int8 range


# ---------------------------------------------------------------------------- float32 pieces


def split_scale(scale: float) -> tuple[int, int]:
    """float32 scale -> (multiplier, shift) with scale == multiplier * 2**-shift exactly."""
    bits = int(np.array(scale, np.float32).view(np.uint32))
    exponent = (bits >> 23) & 0xFF
    if bits == 0:
        return 0, 24
    if bits >> 31 or exponent == 0xFF:
        raise ValueError(f"requantization scale {scale!r} is not a positive finite number")
    if exponent == 0:  # subnormal
        return bits & 0x7FFFFF, 149
    return (bits & 0x7FFFFF) | 0x800000, 150 - exponent


def requant_scale(in_scale: float, w_scale: np.ndarray, out_scale: float) -> np.ndarray:
    """onnxruntime QGemm's output scale, float32((float32(a * b)) / y), elementwise."""
    product = np.float32(in_scale) * np.asarray(w_scale, np.float32)
    return (product / np.float32(out_scale)).astype(np.float32)


def dequantize_linear(q: np.ndarray, qt: QType) -> np.ndarray:
    """DequantizeLinear: float32(q - zp) * float32 scale."""
    return (q - qt.zero_point).astype(np.float32) * np.float32(qt.scale)


def quantize_linear(x: np.ndarray, qt: QType) -> np.ndarray:
    """QuantizeLinear: float32 division, clamp, round half to even, add zero point."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        v = np.asarray(x, np.float32) / np.float32(qt.scale)
    v = np.clip(v, np.float32(qt.qmin - qt.zero_point), np.float32(qt.qmax - qt.zero_point))
    return np.rint(v).astype(np.int64) + qt.zero_point


def activation_lut(kind: str, in_q: QType, out_q: QType) -> np.ndarray:
    """256 entries: in_q value (index q - qmin) -> out_q value, via DQ -> op -> Q in float32."""
    q = np.arange(in_q.qmin, in_q.qmax + 1)
    x = dequantize_linear(q, in_q)
    if kind == "relu":
        x = np.maximum(x, np.float32(0))
    elif kind == "tanh":
        x = np.tanh(x.astype(np.float64)).astype(np.float32)
    elif kind != "none":
        raise ValueError(kind)
    return quantize_linear(x, out_q).astype(np.int16)


def sigmoid_pixel_lut(qt: QType, sigmoid_q: QType | None = None) -> np.ndarray:
    """Logit value (index q - qmin) -> round_half_even(255 * sigmoid(dequantized logit)).

    With `sigmoid_q` the model quantizes the Sigmoid's output as well, so the grey level is
    255 * DQ(Q(sigmoid)), as onnxruntime's QLinearSigmoid table computes it.
    """
    q = np.arange(qt.qmin, qt.qmax + 1)
    x = dequantize_linear(q, qt).astype(np.float64)
    prob = (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
    if sigmoid_q is not None:
        prob = dequantize_linear(quantize_linear(prob, sigmoid_q), sigmoid_q)
    return np.clip(np.rint(prob.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- integer pieces


def _bit_length(x: np.ndarray) -> np.ndarray:
    """Bits needed for each uint64 value (0 for 0)."""
    _, exponent = np.frexp(x.astype(np.float64))
    n = exponent.astype(np.uint64)
    # the float conversion may round up to the next power of two: then one bit too many
    too_big = (n > 0) & ((x >> np.maximum(n, np.uint64(1)) - np.uint64(1)) == 0)
    return np.where(too_big, n - np.uint64(1), n)


def _round_shift(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """x / 2**k rounded half to even, for k >= 1 (uint64)."""
    k = np.asarray(k, np.uint64)
    half_minus_one = (np.uint64(1) << (k - np.uint64(1))) - np.uint64(1)
    odd = (x >> k) & np.uint64(1)
    return (x + half_minus_one + odd) >> k


def keep_24_bits(x: np.ndarray) -> np.ndarray:
    """Round to 24 significant bits, half to even: what storing into a float32 does."""
    drop = _bit_length(x).astype(np.int64) - 24
    k = np.maximum(drop, 1).astype(np.uint64)
    return np.where(drop > 0, _round_shift(x, k) << k, x)


def requantize(acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """round_half_even(float32(float32(acc) * scale)), saturated to +-512, in integers only."""
    acc = np.asarray(acc, np.int64)
    negative = acc < 0
    u = keep_24_bits(np.abs(acc).astype(np.uint64))
    m = u * np.asarray(multiplier, np.uint64)
    shift = np.broadcast_to(np.asarray(shift, np.uint64), m.shape)
    saturated = (m >> (shift + np.uint64(9))) != 0
    r = _round_shift(keep_24_bits(m), shift).astype(np.int64)
    r = np.where(saturated, SATURATED, r)
    return np.where(negative, -r, r)


def round_shift_signed(v: np.ndarray, shift: int) -> np.ndarray:
    """int64 v / 2**shift rounded half to even (shift >= 1)."""
    v = np.asarray(v, np.int64)
    half = np.int64(1) << np.int64(shift - 1)
    r = (v + half) >> np.int64(shift)
    tie = (v & ((half << np.int64(1)) - 1)) == half
    return np.where(tie, r & ~np.int64(1), r)
