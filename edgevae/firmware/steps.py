"""The steps a QDQ graph is read into (`qdq.ChainReader`): activation quantizations, int8
fully connected layers, element-wise table steps, and the whole decoder chain."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class QType:
    """Quantization of one activation tensor: real = (q - zero_point) * scale."""

    tensor: str
    scale: float  # a float32 value, kept exact
    zero_point: int
    signed: bool

    @property
    def qmin(self) -> int:
        return -128 if self.signed else 0

    @property
    def qmax(self) -> int:
        return 127 if self.signed else 255

    def same_as(self, other: QType) -> bool:
        return (
            np.float32(self.scale) == np.float32(other.scale)
            and self.zero_point == other.zero_point
            and self.signed == other.signed
        )


@dataclass
class FcStep:
    """One int8 fully connected node (Gemm, or MatMul [+ Add]) as written in the graph."""

    name: str
    op: str
    weight: np.ndarray  # int8 [out, in]
    weight_scale: np.ndarray  # float32 [out] (per-tensor broadcast)
    per_channel: bool
    bias: np.ndarray  # int32 [out], in units of in_scale * weight_scale
    in_q: QType
    out_q: QType
    relu_floor: bool  # a Relu sits between the FC and its QuantizeLinear
    notes: list[str] = field(default_factory=list)
    # MatMul -> Q(mid_q) -> DQ -> Add(post_bias) -> Q(out_q): the product is rounded to int8
    # before a float bias is added (what quantize_static makes of MatMul + Add)
    mid_q: QType | None = None
    post_bias: np.ndarray | None = None  # float64 [out], the values the float Add sees


@dataclass
class LutStep:
    """A float element-wise op between two quantized tensors: q_in -> DQ -> op -> Q -> q_out."""

    name: str
    kind: str  # relu | tanh | none
    in_q: QType
    out_q: QType


@dataclass
class QdqChain:
    input_name: str
    output_name: str
    input_q: QType
    steps: list  # FcStep | LutStep, input to output order
    metadata: dict[str, str]
    sigmoid_q: QType | None = None  # the Sigmoid's output is quantized too (x_mean = DQ(q))
    label_name: str | None = None  # conditional: the one-hot input concatenated after z
