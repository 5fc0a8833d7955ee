"""Integer reference of the int8 decoder: the exact arithmetic of firmware_demo/edgevae_kernel.c.

Every step mirrors the C kernel, so the C build must reproduce `decode_int` bit for bit:

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
(at most 1 grey level). Exceptions, each measured by tests/test_intref.py: a layer that
onnxruntime does not fuse (it then runs a float Gemm, whose rounding differs near ties), Tanh
(onnxruntime's tanh approximation vs the correctly rounded one in the table), uint8
activations without reduce_range on CPUs whose u8 x s8 dot product saturates in 16 bits
(AVX2 without VNNI), and MatMul -> Q -> DQ -> Add graphs, whose float bias Add is done here in
2**-16 (or finer) fixed point and can land on the other side of a tie.
Measured (ORT 1.32, AVX2): 0 of 4.7 M pixels differ for edgevae-trained 784-400-20 and
784-128-8 decoders (firmware recipe); the test variants, Tanh and MatMul + Add included, show
no difference either, except s8 (ORT leaves a Gemm unfused: ~1e-6 of pixels) and full-range
uint8 weights on this AVX2 CPU (ORT itself saturates: ~5% of pixels).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from .qdq import FcStep, LutStep, QType, read_qdq_chain

INT32_MAX = 2**31 - 1
SATURATED = 512  # any |value| >= 512 saturates every uint8/int8 range
MAX_SHIFT = 54  # keeps shift + 9 < 64 in the kernel's uint64 arithmetic


@dataclass
class IntLayer:
    name: str
    weight: np.ndarray  # int8 [out, in]
    bias: np.ndarray  # int32 [out], activation zero point folded in
    multiplier: np.ndarray  # int32 [out]: 24-bit mantissa of the float32 requant scale
    shift: np.ndarray  # int32 [out]: scale = multiplier * 2**-shift
    per_channel: bool
    in_q: QType
    out_q: QType
    floor: int  # lowest output value: qmin, or the zero point under a fused ReLU
    lut: np.ndarray | None  # int16 [256], out_q value - qmin -> next layer's input value
    activation: str  # relu | tanh | none (what floor/lut implement), for reports
    # MatMul -> Q -> DQ -> Add graphs: the requantized product is first clamped to mid_q, then
    # value = round_half_even(((q1 - zp1) * mid_mult + mid_bias) / 2**mid_shift)
    mid_q: QType | None = None
    mid_mult: int = 0
    mid_shift: int = 0
    mid_bias: np.ndarray | None = None  # int32 [out]

    @property
    def in_dim(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.weight.shape[0])


@dataclass
class IntModel:
    source: str
    sha256: str
    latent_dim: int
    output_dim: int
    image_shape: tuple[int, int]
    input_q: QType
    layers: list[IntLayer]
    pixel_lut: np.ndarray  # uint8 [256], last layer's output value - qmin -> pixel
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def macs(self) -> int:
        return sum(layer.in_dim * layer.out_dim for layer in self.layers)


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


def _dequantize(q: np.ndarray, qt: QType) -> np.ndarray:
    """DequantizeLinear: float32(q - zp) * float32 scale."""
    return (q - qt.zero_point).astype(np.float32) * np.float32(qt.scale)


def _quantize_float(x: np.ndarray, qt: QType) -> np.ndarray:
    """QuantizeLinear: float32 division, clamp, round half to even, add zero point."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        v = np.asarray(x, np.float32) / np.float32(qt.scale)
    v = np.clip(v, np.float32(qt.qmin - qt.zero_point), np.float32(qt.qmax - qt.zero_point))
    return np.rint(v).astype(np.int64) + qt.zero_point


def activation_lut(kind: str, in_q: QType, out_q: QType) -> np.ndarray:
    """256 entries: in_q value (index q - qmin) -> out_q value, via DQ -> op -> Q in float32."""
    q = np.arange(in_q.qmin, in_q.qmax + 1)
    x = _dequantize(q, in_q)
    if kind == "relu":
        x = np.maximum(x, np.float32(0))
    elif kind == "tanh":
        x = np.tanh(x.astype(np.float64)).astype(np.float32)
    elif kind != "none":
        raise ValueError(kind)
    return _quantize_float(x, out_q).astype(np.int16)


def sigmoid_pixel_lut(qt: QType, sigmoid_q: QType | None = None) -> np.ndarray:
    """Logit value (index q - qmin) -> round_half_even(255 * sigmoid(dequantized logit)).

    With `sigmoid_q` the model quantizes the Sigmoid's output as well, so the grey level is
    255 * DQ(Q(sigmoid)), as onnxruntime's QLinearSigmoid table computes it.
    """
    q = np.arange(qt.qmin, qt.qmax + 1)
    x = _dequantize(q, qt).astype(np.float64)
    prob = (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
    if sigmoid_q is not None:
        prob = _dequantize(_quantize_float(prob, sigmoid_q), sigmoid_q)
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


def _keep_24_bits(x: np.ndarray) -> np.ndarray:
    """Round to 24 significant bits, half to even: what storing into a float32 does."""
    drop = _bit_length(x).astype(np.int64) - 24
    k = np.maximum(drop, 1).astype(np.uint64)
    return np.where(drop > 0, _round_shift(x, k) << k, x)


def requantize(acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """round_half_even(float32(float32(acc) * scale)), saturated to +-512, in integers only."""
    acc = np.asarray(acc, np.int64)
    negative = acc < 0
    u = _keep_24_bits(np.abs(acc).astype(np.uint64))
    m = u * np.asarray(multiplier, np.uint64)
    shift = np.broadcast_to(np.asarray(shift, np.uint64), m.shape)
    saturated = (m >> (shift + np.uint64(9))) != 0
    r = _round_shift(_keep_24_bits(m), shift).astype(np.int64)
    r = np.where(saturated, SATURATED, r)
    return np.where(negative, -r, r)


def round_shift_signed(v: np.ndarray, shift: int) -> np.ndarray:
    """int64 v / 2**shift rounded half to even (shift >= 1)."""
    v = np.asarray(v, np.int64)
    half = np.int64(1) << np.int64(shift - 1)
    r = (v + half) >> np.int64(shift)
    tie = (v & ((half << np.int64(1)) - 1)) == half
    return np.where(tie, r & ~np.int64(1), r)


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
    return _quantize_float(z, model.input_q)


def decode_q(model: IntModel, zq: np.ndarray) -> np.ndarray:
    """Already-quantized latent values [N, L] -> uint8 pixels [N, D]."""
    x = np.asarray(zq, np.int64)
    for layer in model.layers:
        # float64 BLAS is exact here: every product and partial sum is an integer < 2**53
        dot = x.astype(np.float64) @ layer.weight.T.astype(np.float64)
        acc = dot.astype(np.int64) + layer.bias.astype(np.int64)
        if np.abs(acc).max(initial=0) > INT32_MAX:  # load_int_model's bound makes this impossible
            raise AssertionError(f"int32 accumulator overflow in {layer.name}")
        value = requantize(acc, layer.multiplier, layer.shift)
        if layer.mid_q is not None:
            value = add_mid_bias(layer, value)
        value = value + layer.out_q.zero_point
        q = np.clip(value, layer.floor, layer.out_q.qmax)
        x = layer.lut[q - layer.out_q.qmin].astype(np.int64) if layer.lut is not None else q
    return model.pixel_lut[x - model.layers[-1].out_q.qmin]


def decode_int(model: IntModel, z: np.ndarray) -> np.ndarray:
    """z float32 [N, L] -> uint8 pixels [N, D], bit-identical to edgevae_decode() in C."""
    return decode_q(model, quantize_input(model, z))


# ------------------------------------------------------------------------------ model loading


def _compose(lut: np.ndarray | None, step: LutStep) -> np.ndarray:
    """Table from `src` values to step.out_q values, through an optional earlier table."""
    table = activation_lut(step.kind, step.in_q, step.out_q)
    if lut is None:
        return table
    return table[lut.astype(np.int64) - step.in_q.qmin]


def _mid_stage(step: FcStep, label: str) -> tuple[int, int, np.ndarray]:
    """Fixed point for value = (q1 - zp1) * s_mid / s_out + bias / s_out.

    The largest shift (<= 24) that keeps |(q1 - zp1) * mult| and |bias| below 2**29, so the
    kernel can sum them in int32; 2**-16 or finer is far below one output step, so results
    differ from the float Add only at exact rounding ties.
    """
    ratio = float(np.float32(step.mid_q.scale)) / float(np.float32(step.out_q.scale))
    bias = step.post_bias / float(np.float32(step.out_q.scale))
    for shift in range(24, 15, -1):
        mult = round(ratio * 2.0**shift)
        fixed = np.rint(bias * 2.0**shift)
        if 255 * mult < 2**29 and np.abs(fixed).max(initial=0) < 2**29:
            return mult, shift, fixed.astype(np.int32)
    raise ModelFileError(
        f"{label}: node {step.name!r}: the Add's bias or scale ratio is too large for the kernel"
    )


def _int_layer(step: FcStep, label: str) -> IntLayer:
    stage1_q = step.mid_q if step.mid_q is not None else step.out_q
    scale = requant_scale(step.in_q.scale, step.weight_scale, stage1_q.scale)
    try:
        parts = [split_scale(float(s)) for s in scale]
    except ValueError as exc:
        raise ModelFileError(f"{label}: node {step.name!r}: {exc}") from None
    multiplier = np.array([p[0] for p in parts], np.int64)
    shift = np.array([p[1] for p in parts], np.int64)
    if np.any((shift < 1) | (shift > MAX_SHIFT)) and np.any(multiplier != 0):
        raise ModelFileError(
            f"{label}: node {step.name!r}: requantization scale {scale.min()}..{scale.max()} "
            "is outside the kernel's range (2**-45 .. 2**23)"
        )
    w = step.weight.astype(np.int64)
    bias = step.bias.astype(np.int64) - step.in_q.zero_point * w.sum(axis=1)
    # exact per-row accumulator range over every possible input: every partial sum lies inside
    hi = bias + np.maximum(w * step.in_q.qmin, w * step.in_q.qmax).sum(axis=1)
    lo = bias + np.minimum(w * step.in_q.qmin, w * step.in_q.qmax).sum(axis=1)
    if hi.max(initial=0) > INT32_MAX or lo.min(initial=0) < -INT32_MAX:
        raise ModelFileError(
            f"{label}: node {step.name!r}: fan-in {w.shape[1]} with these weights and bias can "
            "overflow the kernel's int32 accumulator"
        )
    floor = max(step.out_q.qmin, step.out_q.zero_point) if step.relu_floor else step.out_q.qmin
    mid_mult, mid_shift, mid_bias = _mid_stage(step, label) if step.mid_q else (0, 0, None)
    return IntLayer(
        name=step.name,
        weight=step.weight.astype(np.int8),
        bias=bias.astype(np.int32),
        multiplier=multiplier.astype(np.int32),
        shift=shift.astype(np.int32),
        per_channel=step.per_channel,
        in_q=step.in_q,
        out_q=step.out_q,
        floor=floor,
        lut=None,
        activation="relu" if step.relu_floor else "none",
        mid_q=step.mid_q,
        mid_mult=mid_mult,
        mid_shift=mid_shift,
        mid_bias=mid_bias,
    )


def _image_shape(metadata: dict[str, str], output_dim: int, label: str) -> tuple[int, int]:
    text = metadata.get("edgevae.image_shape", "")
    if text:
        try:
            h, w = (int(v) for v in text.split(","))
        except ValueError:
            raise ModelFileError(f"{label}: bad edgevae.image_shape {text!r}") from None
        if h * w != output_dim:
            raise ModelFileError(f"{label}: image_shape {text} does not match {output_dim} outputs")
        return h, w
    side = int(round(output_dim**0.5))
    return (side, side) if side * side == output_dim else (1, output_dim)


def load_int_model(onnx_path: Path) -> IntModel:
    """Read a QDQ int8 decoder and turn it into the kernel's integer model."""
    path = Path(onnx_path)
    chain = read_qdq_chain(path)
    label = path.name
    layers: list[IntLayer] = []
    notes: list[str] = []
    pending: np.ndarray | None = None
    pending_kinds: list[str] = []
    for step in chain.steps:
        if isinstance(step, FcStep):
            if layers:
                prev = layers[-1]
                if pending is not None:
                    prev.lut = pending
                    kinds = [k for k in (prev.activation, *pending_kinds) if k != "none"]
                    prev.activation = "+".join(kinds) or "none"
                if prev.out_dim != step.weight.shape[1]:
                    raise ModelFileError(
                        f"{label}: node {step.name!r} expects {step.weight.shape[1]} inputs but "
                        f"the previous layer has {prev.out_dim} outputs"
                    )
            pending, pending_kinds = None, []
            layers.append(_int_layer(step, label))
            notes.extend(step.notes)
        else:
            pending = _compose(pending, step)
            pending_kinds.append(step.kind)
    for layer in layers[:-1]:
        if layer.activation == "none" and layer.out_q.zero_point == layer.out_q.qmin:
            layer.activation = "relu"  # a [0, max] range: the clamp at qmin is the ReLU
    last = layers[-1]
    pixel_lut = sigmoid_pixel_lut(chain.steps[-1].out_q, chain.sigmoid_q)
    if pending is not None:  # a rescale between the last FC and the sigmoid
        pixel_lut = pixel_lut[pending.astype(np.int64) - chain.steps[-1].out_q.qmin]
    latent_dim = layers[0].in_dim
    declared = chain.metadata.get("edgevae.latent_dim")
    if declared and declared.isdigit() and int(declared) != latent_dim:
        raise ModelFileError(
            f"{label}: edgevae.latent_dim {declared} but the graph takes {latent_dim} inputs"
        )
    return IntModel(
        source=label,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        latent_dim=latent_dim,
        output_dim=last.out_dim,
        image_shape=_image_shape(chain.metadata, last.out_dim, label),
        input_q=chain.input_q,
        layers=layers,
        pixel_lut=pixel_lut,
        metadata=chain.metadata,
        notes=notes,
    )


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
