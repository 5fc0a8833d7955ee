"""A QDQ int8 decoder read into the kernel's integer model (IntModel, one IntLayer per layer).

Everything the C kernel needs is computed here once, at load time: the activation zero point
folded into the bias, each output's requantization scale as a 24-bit multiplier and a shift,
the ReLU floor, activation tables between layers and the pixel table of the last layer. The
model is refused (ModelFileError naming the node) when the kernel's int32 arithmetic cannot
hold it. intref.decode_int runs the model; codegen writes it as C.

4-bit weights: a layer whose int8 weights all lie in -8..7 (what the int4 recipe writes,
`quant/int4.py`) is stored as 4-bit when asked (`weight_bits=4`); the arithmetic is the same.
Conditional decoders (Concat(z, y) before the first Gemm, y one-hot): the label's columns of
the first layer become one int32 bias row per class (`IntModel.class_bias`), since a one-hot
y contributes exactly one column times its quantized 1.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from ..fsio import sha256_file
from .fixedpoint import (
    INT32_MAX,
    activation_lut,
    quantize_linear,
    requant_scale,
    sigmoid_pixel_lut,
    split_scale,
)
from .qdq import FcStep, LutStep, QdqChain, QType, read_qdq_chain

MAX_SHIFT = 54  # keeps shift + 9 < 64 in the kernel's uint64 arithmetic
WEIGHT_BITS = (8, 4)
NIBBLE_RANGE = (-8, 7)  # 4-bit weights; the kernel stores w + 8 and multiplies by it
WEIGHT_BITS_KEY = "edgevae.weight_bits"  # "4" in the int4 recipe's decoder (quant/int4.py)


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
    weight_bits: int = 8  # 4: stored two per byte (every weight in NIBBLE_RANGE)

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
    logit_q: QType  # quantization of the Sigmoid's input: the logits the likelihood uses
    logit_lut: np.ndarray | None  # int16 [256], last layer's value - qmin -> logit value
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # conditional decoders: the first layer's bias (zero points folded) plus the label's
    # column times its quantized 1, int32 [classes, out]; layers[0] holds z's columns only
    class_bias: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)

    @property
    def macs(self) -> int:
        return sum(layer.in_dim * layer.out_dim for layer in self.layers)

    @property
    def classes(self) -> int:
        return 0 if self.class_bias is None else int(self.class_bias.shape[0])


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
    check_accumulator(w, bias, step.in_q, f"{label}: node {step.name!r}")
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


def check_accumulator(w: np.ndarray, bias: np.ndarray, in_q: QType, where: str) -> None:
    """Refuse a layer whose int32 accumulator could overflow: the exact per-row range over
    every possible input, so every partial sum lies inside; for 4-bit weights also the
    kernel's form bias - 8 * sum(x) + sum((w + 8) * x)."""
    hi = bias + np.maximum(w * in_q.qmin, w * in_q.qmax).sum(axis=1)
    lo = bias + np.minimum(w * in_q.qmin, w * in_q.qmax).sum(axis=1)
    x_max = max(-in_q.qmin, in_q.qmax)
    nibble = np.abs(bias) + 23 * x_max * w.shape[1]  # |8 * sum(x)| + |sum((w + 8) * x)|
    if hi.max(initial=0) > INT32_MAX or lo.min(initial=0) < -INT32_MAX:
        raise ModelFileError(
            f"{where}: fan-in {w.shape[1]} with these weights and bias can overflow the "
            "kernel's int32 accumulator"
        )
    if fits_nibbles(w) and nibble.max(initial=0) > INT32_MAX:
        raise ModelFileError(f"{where}: the 4-bit form of this layer can overflow int32")


def fits_nibbles(w: np.ndarray) -> bool:
    return bool(w.size) and NIBBLE_RANGE[0] <= int(w.min()) and int(w.max()) <= NIBBLE_RANGE[1]


def image_shape(metadata: dict[str, str], output_dim: int, label: str) -> tuple[int, int]:
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


Tail = tuple[np.ndarray, QType]  # element-wise steps after the last FC: table, output q


def int_layers(steps: list, label: str) -> tuple[list[IntLayer], list[str], Tail | None]:
    """FC steps -> IntLayers; element-wise steps between two FCs become the earlier layer's
    table. Returns the layers, their notes and the tail (the table of the element-wise steps
    after the last FC and their output quantization), which the caller places."""
    layers: list[IntLayer] = []
    notes: list[str] = []
    pending: np.ndarray | None = None
    pending_kinds: list[str] = []
    last_lut: LutStep | None = None
    for step in steps:
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
            pending, pending_kinds, last_lut = None, [], None
            layers.append(_int_layer(step, label))
            notes.extend(step.notes)
        else:
            pending = _compose(pending, step)
            pending_kinds.append(step.kind)
            last_lut = step
    for layer in layers[:-1]:
        if layer.activation == "none" and layer.out_q.zero_point == layer.out_q.qmin:
            layer.activation = "relu"  # a [0, max] range: the clamp at qmin is the ReLU
    tail = None if pending is None or last_lut is None else (pending, last_lut.out_q)
    return layers, notes, tail


def _split_label(step: FcStep, chain: QdqChain, label: str) -> tuple[FcStep, np.ndarray, list]:
    """A conditional decoder's first Gemm: (the step on z's columns, the label's columns
    times the quantized one-hot 1 as int64 [classes, out], the class names)."""
    declared = chain.metadata.get("edgevae.latent_dim", "")
    if not declared.isdigit() or not 0 < int(declared) < step.weight.shape[1]:
        raise ModelFileError(
            f"{label}: a conditional decoder needs edgevae.latent_dim metadata below the first "
            f"layer's {step.weight.shape[1]} inputs (found {declared!r:.20})"
        )
    latent = int(declared)
    classes = step.weight.shape[1] - latent
    try:
        names = [str(n) for n in json.loads(chain.metadata.get("edgevae.classes", "[]"))]
    except (json.JSONDecodeError, TypeError):
        names = []
    if len(names) != classes:
        names = [str(c) for c in range(classes)]
    one = int(quantize_linear(np.ones(1, np.float32), step.in_q)[0]) - step.in_q.zero_point
    label_cols = step.weight[:, latent:].astype(np.int64).T * one
    return dataclasses.replace(step, weight=step.weight[:, :latent]), label_cols, names


def _first_step(chain: QdqChain, label: str):
    """The first FC step (split for a conditional decoder) and the label's bias terms."""
    first = chain.steps[0]
    if chain.label_name is None:
        return chain.steps, None, []
    step, label_cols, names = _split_label(first, chain, label)
    return [step, *chain.steps[1:]], label_cols, names


def _class_bias(layer: IntLayer, label_cols: np.ndarray, label: str) -> np.ndarray:
    rows = layer.bias.astype(np.int64)[None, :] + label_cols
    for row in rows:
        check_accumulator(layer.weight.astype(np.int64), row, layer.in_q, f"{label}: {layer.name}")
    return rows.astype(np.int32)


def _choose_bits(
    layers: list[IntLayer], weight_bits: int, label: str, metadata: dict[str, str]
) -> None:
    """Mark the layers stored as 4-bit: with weight_bits 4, every layer whose weights fit.
    A 4-bit decoder is what the int4 recipe writes: metadata edgevae.weight_bits "4" and
    every layer but the first with weights in -8..7. Anything else is refused, naming the
    metadata or the first layer off the range (such a layer would otherwise be deployed at
    8 bits without a word)."""
    if weight_bits not in WEIGHT_BITS:
        raise ModelFileError(f"{label}: weight bits must be 8 or 4, got {weight_bits}")
    if weight_bits == 8:
        return
    for layer in layers:
        if fits_nibbles(layer.weight):
            layer.weight_bits = 4
    declared = metadata.get(WEIGHT_BITS_KEY)
    none = not any(layer.weight_bits == 4 for layer in layers)
    if none and declared is None:  # an int8 decoder, not the int4 recipe's
        raise ModelFileError(
            f"{label}: no layer has 4-bit weights (all in -8..7); 4-bit firmware needs the "
            "decoder the int4 recipe writes (decoder.int4.static.onnx)"
        )
    if declared != "4":
        found = "missing" if declared is None else f"{declared!r:.20}"
        raise ModelFileError(
            f"{label}: metadata {WEIGHT_BITS_KEY} is {found}; a 4-bit decoder (the int4 "
            "recipe's) declares '4'"
        )
    for layer in layers[1:]:
        if layer.weight_bits != 4:
            lo, hi = int(layer.weight.min(initial=0)), int(layer.weight.max(initial=0))
            raise ModelFileError(
                f"{label}: node {layer.name!r} has weights {lo}..{hi}, off the 4-bit range "
                f"{NIBBLE_RANGE[0]}..{NIBBLE_RANGE[1]} that every layer but the first of a "
                "4-bit decoder holds"
            )
    if none:  # a one-layer decoder: its only layer stays int8
        raise ModelFileError(f"{label}: no layer has 4-bit weights (all in -8..7)")


def load_int_model(onnx_path: Path, weight_bits: int = 8) -> IntModel:
    """Read a QDQ int8 decoder and turn it into the kernel's integer model; with
    `weight_bits` 4 the layers whose weights fit -8..7 are stored as 4-bit."""
    path = Path(onnx_path)
    chain = read_qdq_chain(path)
    label = path.name
    steps, label_cols, names = _first_step(chain, label)
    layers, notes, tail = int_layers(steps, label)
    _choose_bits(layers, weight_bits, label, chain.metadata)
    last = layers[-1]
    # the Sigmoid's input, after any rescale between the last FC and it
    logit_lut, logit_q = tail if tail is not None else (None, last.out_q)
    pixel_lut = sigmoid_pixel_lut(logit_q, chain.sigmoid_q)
    if logit_lut is not None:
        pixel_lut = pixel_lut[logit_lut.astype(np.int64) - logit_q.qmin]
    latent_dim = layers[0].in_dim
    declared = chain.metadata.get("edgevae.latent_dim")
    if declared and declared.isdigit() and int(declared) != latent_dim:
        raise ModelFileError(
            f"{label}: edgevae.latent_dim {declared} but the graph takes {latent_dim} inputs"
        )
    return IntModel(
        source=label,
        sha256=sha256_file(path, ModelFileError),
        latent_dim=latent_dim,
        output_dim=last.out_dim,
        image_shape=image_shape(chain.metadata, last.out_dim, label),
        input_q=chain.input_q,
        layers=layers,
        pixel_lut=pixel_lut,
        logit_q=logit_q,
        logit_lut=logit_lut,
        metadata=chain.metadata,
        notes=notes,
        class_bias=None if label_cols is None else _class_bias(layers[0], label_cols, label),
        class_names=names,
    )
