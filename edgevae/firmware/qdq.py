"""Read a QDQ int8 decoder from ONNX for the firmware code generator.

`read_qdq_chain` parses the file with `onnxio.graph` (no `onnx` package needed), walks back from
x_mean to z and returns the decoder as a chain of int8 fully connected steps and element-wise
steps, refusing, by name, any node the kernel cannot run. The graph it accepts:

    z -> Q -> [FC -> Q -> (DQ -> act -> Q)*]* -> DQ -> Sigmoid [-> Q -> DQ] -> x_mean

or, for a conditional decoder (inputs z and the one-hot label y), Concat(z, y) -> Q -> ...

`ChainReader.walk` (one quantized tensor back to the graph input) is shared with the encoder
reader in `encoder.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from ..onnxio.graph import Graph, Node, load_graph
from .steps import FcStep, LutStep, QdqChain, QType

__all__ = ["ChainReader", "FcStep", "LutStep", "QType", "QdqChain", "read_qdq_chain"]

_FC_OPS = ("Gemm", "MatMul", "Add")
_ELEMENTWISE_OPS = ("Relu", "Tanh", "Identity")
_DYNAMIC_HINT = (
    "; the firmware needs the statically quantized decoder (decoder.int8.static.onnx, "
    "from quantize_static in QDQ format)"
)
_HINTS = {
    "DynamicQuantizeLinear": _DYNAMIC_HINT,
    "MatMulInteger": _DYNAMIC_HINT,
    "DynamicQuantizeMatMul": _DYNAMIC_HINT,
    "QLinearMatMul": "; pass the QDQ model, not an onnxruntime-optimized one",
    "QGemm": "; pass the QDQ model, not an onnxruntime-optimized one",
}


class ChainReader:
    """Walks a QDQ graph from an output back to its input, refusing what the kernel cannot run."""

    def __init__(self, graph: Graph, label: str):
        self.g = graph
        self.label = label
        self.prod = graph.producer()
        self.label_name: str | None = None  # set by walk() at a Concat(z, y) input

    def refuse(self, node: Node, why: str = "is not supported by the firmware kernel") -> None:
        raise ModelFileError(f"{self.label}: {node.label()} {why}{_HINTS.get(node.op_type, '')}")

    def fail(self, why: str) -> None:
        raise ModelFileError(f"{self.label}: {why}")

    def number(self, node: Node, key: str, default: float) -> float:
        """A numeric attribute of `node` (`default` if absent); refuses any other kind."""
        value = node.attrs.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.refuse(node, f"has attribute {key}={value!r}; expected a number")
        return value

    def const(self, name: str) -> np.ndarray | None:
        return self.g.initializers.get(name) if name else None

    def producer_of(self, tensor: str, user: Node) -> Node:
        node = self.prod.get(tensor)
        if node is None:
            if tensor in self.g.inputs:
                self.refuse(user, f"reads graph input {tensor!r} directly; expected it quantized")
            self.fail(f"tensor {tensor!r} used by {user.label()} has no producer")
        return node

    def qtype(self, node: Node, scale_name: str, zp_name: str | None, tensor: str) -> QType:
        scale = self.const(scale_name)
        zp = self.const(zp_name) if zp_name else np.zeros((), np.uint8)
        if scale is None or zp is None:
            self.refuse(node, "has non-constant scale or zero point")
        if scale.size != 1 or zp.size != 1:
            self.refuse(node, "quantizes an activation per axis; the kernel needs per-tensor")
        if zp.dtype not in (np.uint8, np.int8):
            self.refuse(node, f"uses {zp.dtype} activations; the kernel supports uint8 and int8")
        value = np.float32(scale.reshape(()))
        if not (np.isfinite(value) and value > 0):
            self.refuse(node, f"has scale {value!r}; expected a positive finite number")
        return QType(tensor, float(value), int(zp.reshape(())), zp.dtype == np.int8)

    def dequantized(self, tensor: str, user: Node) -> tuple[str, QType]:
        """`tensor` must be DequantizeLinear(q); return q's name and quantization."""
        node = self.producer_of(tensor, user)
        if node.op_type != "DequantizeLinear":
            if node.op_type in ("Gemm", "MatMul", "Add"):
                self.refuse(
                    node,
                    "is not quantized to int8 (its output reaches "
                    f"{user.label()} in float); quantize it with quantize_static",
                )
            self.refuse(node)
        zp_name = node.inputs[2] if len(node.inputs) > 2 else None
        return node.inputs[0], self.qtype(node, node.inputs[1], zp_name, node.inputs[0])

    def weight(self, tensor: str, user: Node, transposed: bool) -> tuple[np.ndarray, np.ndarray]:
        """int8 weight [out, in] and float32 scale [out] behind DequantizeLinear(const)."""
        node = self.prod.get(tensor)
        if node is None and tensor in self.g.initializers:
            self.refuse(user, "has float weights (not quantized); quantize it with quantize_static")
        if node is None or node.op_type != "DequantizeLinear":
            self.refuse(user, "has weights that are not a DequantizeLinear of a constant")
        q = self.const(node.inputs[0])
        scale = self.const(node.inputs[1])
        zp = self.const(node.inputs[2]) if len(node.inputs) > 2 else None
        if q is None or scale is None or q.ndim != 2:
            self.refuse(user, "has weights that are not a constant 2-D tensor")
        if q.dtype != np.int8:
            self.refuse(user, f"has {q.dtype} weights; the kernel needs int8 (QuantType.QInt8)")
        if zp is not None and np.any(zp != 0):
            self.refuse(user, "has a non-zero weight zero point; the kernel needs symmetric int8")
        w = q.T if not transposed else q  # -> [out, in]
        out_dim = w.shape[0]
        axis = int(self.number(node, "axis", 1))
        axis = axis + 2 if axis < 0 else axis
        scale = np.asarray(scale, np.float32).reshape(-1)
        if scale.size == 1:
            scale = np.full(out_dim, scale[0], np.float32)
        elif scale.size != out_dim or axis != (0 if transposed else 1):
            self.refuse(user, "has weight scales along the input axis; expected per output channel")
        if not np.all(np.isfinite(scale)) or np.any(scale < 0):
            self.refuse(user, "has negative or non-finite weight scales")
        return np.ascontiguousarray(w), scale

    def bias(self, tensor: str, user: Node, in_q: QType, w_scale: np.ndarray, notes: list[str]):
        out_dim = w_scale.size
        node = self.prod.get(tensor)
        acc_scale = (np.float32(in_q.scale) * w_scale).astype(np.float64)
        if node is not None and node.op_type == "DequantizeLinear":
            q = self.const(node.inputs[0])
            scale = self.const(node.inputs[1])
            if q is None or scale is None:
                self.refuse(user, "has a bias that is not a constant")
            q = q.reshape(-1)
            scale = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), q.shape)
            zp = self.const(node.inputs[2]) if len(node.inputs) > 2 else None
            zp = np.zeros(1) if zp is None else zp.reshape(-1).astype(np.float64)
            if (
                q.dtype == np.int32
                and np.all(zp == 0)
                and np.allclose(scale, np.broadcast_to(acc_scale, q.shape), rtol=1e-5, atol=0)
            ):
                return np.broadcast_to(q, (out_dim,)).astype(np.int64)
            values = (q.astype(np.float64) - zp) * scale
        else:
            values = self.const(tensor)
            if values is None:
                self.refuse(user, "has a bias that is not a constant")
            values = values.astype(np.float64).reshape(-1)
        notes.append(f"{user.label()}: bias re-quantized to int32 (the model stores it otherwise)")
        values = np.broadcast_to(values, (out_dim,))
        return np.rint(values / acc_scale).astype(np.int64)

    def float_constant(self, tensor: str, user: Node, size: int) -> np.ndarray:
        """A constant as the float graph sees it (DequantizeLinear applied in float32)."""
        node = self.prod.get(tensor)
        if node is not None and node.op_type == "DequantizeLinear":
            q, scale = self.const(node.inputs[0]), self.const(node.inputs[1])
            zp = self.const(node.inputs[2]) if len(node.inputs) > 2 else None
            if q is None or scale is None or scale.size != 1:
                self.refuse(user, "has a bias that is not a per-tensor quantized constant")
            zp = 0 if zp is None else int(zp.reshape(()))
            values = (q.astype(np.int64) - zp).astype(np.float32) * np.float32(scale.reshape(()))
        else:
            values = self.const(tensor)
            if values is None:
                self.refuse(user, "has a bias that is not a constant")
        values = np.asarray(values, np.float32).reshape(-1).astype(np.float64)
        if values.size not in (1, size):
            self.refuse(user, f"adds {values.size} values to {size} outputs")
        return np.broadcast_to(values, (size,)).copy()

    def fc(self, node: Node, out_q: QType, relu_floor: bool) -> tuple[FcStep, str]:
        notes: list[str] = []
        bias_name = ""
        add_bias = ""
        mid_q = None
        if node.op_type == "Add":
            consts = [i for i, name in enumerate(node.inputs) if self.is_constant(name)]
            if len(node.inputs) != 2 or len(consts) != 1:
                self.refuse(node, "is an Add that is not a bias add")
            bias_name = node.inputs[consts[0]]
            data = node.inputs[1 - consts[0]]
            inner = self.producer_of(data, node)
            if inner.op_type == "DequantizeLinear":  # MatMul -> Q -> DQ -> Add
                mid_name, mid_q = self.dequantized(data, node)
                q_node = self.producer_of(mid_name, inner)
                zp_name = q_node.inputs[2] if len(q_node.inputs) > 2 else None
                if q_node.op_type != "QuantizeLinear" or not self.qtype(
                    q_node, q_node.inputs[1], zp_name, mid_name
                ).same_as(mid_q):
                    self.refuse(q_node)
                inner = self.producer_of(q_node.inputs[0], q_node)
                add_bias, bias_name = bias_name, ""
            if inner.op_type not in ("MatMul", "Gemm"):
                self.refuse(inner)
            mat = inner
        else:
            mat = node
        if mat.op_type == "Gemm":
            if self.number(mat, "transA", 0) != 0:
                self.refuse(mat, "uses transA=1")
            for key in ("alpha", "beta"):
                if self.number(mat, key, 1.0) != 1.0:
                    self.refuse(mat, f"uses {key}={mat.attrs[key]}; expected 1")
            transposed = self.number(mat, "transB", 0) == 1
            if len(mat.inputs) > 2 and mat.inputs[2]:
                bias_name = mat.inputs[2]
        elif mat.op_type == "MatMul":
            transposed = False
        else:
            self.refuse(mat)
        in_name, in_q = self.dequantized(mat.inputs[0], mat)
        weight, w_scale = self.weight(mat.inputs[1], mat, transposed)
        if bias_name:
            bias = self.bias(bias_name, mat, in_q, w_scale, notes)
        else:
            bias = np.zeros(weight.shape[0], np.int64)
        per_channel = bool(np.unique(w_scale).size > 1)
        post_bias = self.float_constant(add_bias, node, weight.shape[0]) if add_bias else None
        step = FcStep(
            node.name or mat.name,
            mat.op_type,
            weight,
            w_scale,
            per_channel,
            bias,
            in_q,
            out_q,
            relu_floor,
            notes,
            mid_q,
            post_bias,
        )
        return step, in_name

    def is_constant(self, name: str) -> bool:
        if name in self.g.initializers:
            return True
        node = self.prod.get(name)
        return bool(
            node is not None
            and node.op_type == "DequantizeLinear"
            and node.inputs[0] in self.g.initializers
        )

    def read(self) -> QdqChain:
        if not self.g.outputs:
            self.fail("the graph has no outputs")
        for node in self.g.nodes:  # name the real cause, not the first odd node on the path
            if node.op_type in _HINTS:
                self.refuse(node)
        out = "x_mean" if "x_mean" in self.g.outputs else self.g.outputs[0]
        if len(self.g.inputs) not in (1, 2):
            self.fail(f"expected the graph input z (and a label y), found {self.g.inputs}")
        sig = self.prod.get(out)
        if sig is None:
            self.fail(f"output {out!r} has no producer")
        sigmoid_q = None
        if sig.op_type == "DequantizeLinear":  # a quantized Sigmoid: DQ -> Sigmoid -> Q -> DQ
            qname, sigmoid_q = self.dequantized(out, sig)
            qnode = self.producer_of(qname, sig)
            zp_name = qnode.inputs[2] if len(qnode.inputs) > 2 else None
            if qnode.op_type != "QuantizeLinear" or not self.qtype(
                qnode, qnode.inputs[1], zp_name, qname
            ).same_as(sigmoid_q):
                self.refuse(qnode)
            sig = self.producer_of(qnode.inputs[0], qnode)
        if sig.op_type != "Sigmoid":
            self.refuse(
                sig,
                "is not supported by the firmware kernel (the decoder output must be "
                "a Sigmoid of the last layer)",
            )
        qname, q_seen = self.dequantized(sig.inputs[0], sig)
        src, input_q, steps = self.walk(qname, q_seen)
        if len(self.g.inputs) == 2 and self.label_name is None:
            self.fail(f"input {self.g.inputs[1]!r} is not used as a label (Concat(z, y))")
        return QdqChain(src, out, input_q, steps, dict(self.g.metadata), sigmoid_q, self.label_name)

    def concatenated(self, src: str, qnode: Node) -> str | None:
        """A conditional decoder's quantized input Concat(z, y) on axis 1: z's name, with y's
        kept in `label_name`; None when `src` is something else."""
        node = self.prod.get(src)
        if node is None or node.op_type != "Concat":
            return None
        if int(self.number(node, "axis", 1)) not in (1, -1):
            self.refuse(node, "concatenates along an axis other than 1")
        if len(node.inputs) != 2 or not all(name in self.g.inputs for name in node.inputs):
            self.refuse(
                node,
                "is not supported by the firmware kernel (a Concat must join the graph "
                "inputs z and the one-hot label y, in that order)",
            )
        if qnode.op_type != "QuantizeLinear":
            self.refuse(qnode)
        self.label_name = node.inputs[1]
        return node.inputs[0]

    def walk(self, qname: str, q_seen: QType) -> tuple[str, QType, list]:
        """From quantized tensor `qname` back to the graph input: (input name, its
        quantization, the FC and element-wise steps in input-to-output order)."""
        steps: list = []
        for _ in range(10_000):
            qnode = self.prod.get(qname)
            if qnode is None or qnode.op_type != "QuantizeLinear":
                if qnode is None:
                    self.fail(f"quantized tensor {qname!r} has no QuantizeLinear producer")
                self.refuse(qnode)
            zp_name = qnode.inputs[2] if len(qnode.inputs) > 2 else None
            qt = self.qtype(qnode, qnode.inputs[1], zp_name, qname)
            if not qt.same_as(q_seen):
                self.refuse(qnode, "is dequantized with different parameters than it was quantized")
            src = qnode.inputs[0]
            src = self.concatenated(src, qnode) or src
            if src in self.g.inputs:
                steps.reverse()
                if not steps or not isinstance(steps[0], FcStep):
                    self.fail("the quantized input must feed a Gemm/MatMul first")
                return src, qt, steps
            p = self.producer_of(src, qnode)
            relu_floor = False
            if (
                p.op_type == "Relu"
                and self.prod.get(p.inputs[0]) is not None
                and (self.prod[p.inputs[0]].op_type in _FC_OPS)
            ):
                relu_floor = True  # FC -> Relu -> Q: Relu is a clamp at the zero point
                p = self.prod[p.inputs[0]]
            if p.op_type in _FC_OPS:
                step, qname = self.fc(p, qt, relu_floor)
                q_seen = step.in_q
                steps.append(step)
            elif p.op_type in _ELEMENTWISE_OPS or p.op_type == "DequantizeLinear":
                dq_input = src if p.op_type == "DequantizeLinear" else p.inputs[0]
                qname, q_seen = self.dequantized(dq_input, p)
                passthrough = p.op_type in ("DequantizeLinear", "Identity")
                kind = "none" if passthrough else p.op_type.lower()
                steps.append(LutStep(p.name, kind, q_seen, qt))
            else:
                self.refuse(p)
        self.fail("graph too deep")
        raise AssertionError  # unreachable


def read_qdq_chain(path: Path) -> QdqChain:
    """The int8 decoder as a chain of FC and element-wise steps; ModelFileError otherwise."""
    path = Path(path)
    return ChainReader(load_graph(path), path.name).read()
