"""Which quantized node costs the nats: each quantization a recipe applies, alone.

For every tensor the recipe quantizes - a Gemm's weights (with its bias), an activation feeding
a Gemm, a quantized Gemm output (the firmware recipe's logits) - the fp32 model gets exactly
that quantization and nothing else, with the recipe's own scales and zero points read from the
quantized model (dynamic recipes: the weights' stored scales, and DynamicQuantizeLinear for the
activation, as onnxruntime runs it). The pair's NLL increase is the same paired IWAE estimate
as the search's (`paired`), with the other model left in fp32.

The names follow onnxruntime's quantizer: a weight W becomes `W_quantized` with `W_scale` and
`W_zero_point` (dynamic recipes transpose Gemm weights first: `W_Transposed_*`).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import fsio

EXPLAIN_IMAGES = 500


@dataclass
class ExplainItem:
    role: str  # encoder | decoder
    node: str  # the Gemm node(s) the quantized tensor belongs to
    part: str  # weights | activations | output
    tensor: str  # the fp32 tensor that is quantized
    nll_delta: float = float("nan")  # nats per image, only this tensor quantized
    nll_delta_se: float = float("nan")
    images: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Edit:
    """One quantization to apply to the fp32 model: replace initializers, or insert nodes."""

    item: ExplainItem
    values: dict[str, np.ndarray]  # fp32 initializer name -> dequantized values
    make_nodes: Any = None  # (tensor_in, tensor_out) -> (nodes, initializers)


def _inits(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _attr(node, name: str, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _dequantize(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int) -> np.ndarray:
    zp64 = np.zeros(1) if zp is None else zp.astype(np.float64)
    scale64 = scale.astype(np.float64)
    if scale64.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale64, zp64 = scale64.reshape(shape), zp64.reshape(shape)
    return ((q.astype(np.float64) - zp64) * scale64).astype(np.float32)


def _consumers(model, name: str) -> list:
    return [n for n in model.graph.node if name in n.input]


def _gemms(model) -> dict[str, Any]:
    """fp32 Gemm nodes by weight initializer name."""
    return {n.input[1]: n for n in model.graph.node if n.op_type == "Gemm" and len(n.input) > 1}


def _static_edits(q, fp32, role: str) -> list[_Edit]:
    """The quantizations of a QDQ model: DequantizeLinear of initializers (weights, bias) and
    QuantizeLinear -> DequantizeLinear pairs (activations, outputs)."""
    from onnx import helper

    qi, fi = _inits(q), _inits(fp32)
    by_weight = _gemms(fp32)
    names = {n.name: n for n in fp32.graph.node}
    edits: dict[str, _Edit] = {}
    for node in q.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in qi:
            base = node.output[0].removesuffix("_DequantizeLinear_Output")
            gemm = by_weight.get(base) or next(
                (g for g in by_weight.values() if len(g.input) > 2 and g.input[2] == base), None
            )
            if gemm is None or base not in fi:
                continue
            zp = qi.get(node.input[2]) if len(node.input) > 2 else None
            value = _dequantize(qi[node.input[0]], qi[node.input[1]], zp, _attr(node, "axis", 1))
            edit = edits.setdefault(
                f"w:{gemm.name}",
                _Edit(ExplainItem(role, gemm.name, "weights", gemm.input[1]), {}),
            )
            edit.values[base] = value.reshape(fi[base].shape)
        elif node.op_type == "QuantizeLinear":
            dqs = [c for c in _consumers(q, node.output[0]) if c.op_type == "DequantizeLinear"]
            if not dqs:
                continue
            tensor = node.input[0] if _is_fp32_tensor(fp32, node.input[0]) else dqs[0].output[0]
            users = [c for d in dqs for c in _consumers(q, d.output[0])]
            gemms = [c.name for c in users if c.op_type == "Gemm" and c.name in names]
            part = "activations" if gemms else "output"
            if not gemms:
                gemms = [n.name for n in fp32.graph.node if tensor in n.output]
            scale, zp = qi[node.input[1]], qi[node.input[2]]

            def make(src, dst, scale=scale, zp=zp, tag=tensor):
                from onnx import numpy_helper

                s, z = f"{tag}_edgevae_scale", f"{tag}_edgevae_zp"
                nodes = [
                    helper.make_node("QuantizeLinear", [src, s, z], [f"{tag}_edgevae_q"]),
                    helper.make_node("DequantizeLinear", [f"{tag}_edgevae_q", s, z], [dst]),
                ]
                return nodes, [numpy_helper.from_array(scale, s), numpy_helper.from_array(zp, z)]

            item = ExplainItem(role, ", ".join(gemms), part, tensor)
            edits[f"a:{tensor}"] = _Edit(item, {}, make)
    return list(edits.values())


def _dynamic_edits(q, fp32, role: str) -> list[_Edit]:
    """The quantizations of a dynamically quantized model: MatMulInteger's stored weights and
    the DynamicQuantizeLinear of its input."""
    from onnx import helper

    qi, fi = _inits(q), _inits(fp32)
    by_weight = _gemms(fp32)
    edits: list[_Edit] = []
    for node in q.graph.node:
        if node.op_type != "MatMulInteger" or node.input[1] not in qi:
            continue
        stem = node.input[1].removesuffix("_quantized")
        weight = stem.removesuffix("_Transposed")
        gemm = by_weight.get(weight)
        if gemm is None:
            continue
        wq = qi[node.input[1]]
        value = _dequantize(wq, qi[stem + "_scale"], qi.get(stem + "_zero_point"), wq.ndim - 1)
        if value.shape != fi[weight].shape:
            value = value.T
        edits.append(_Edit(ExplainItem(role, gemm.name, "weights", weight), {weight: value}))
        source = next((n for n in q.graph.node if node.input[0] in n.output), None)
        if source is not None and source.op_type == "DynamicQuantizeLinear":
            tensor = source.input[0]

            def make(src, dst, tag=tensor):
                y, s, z = (f"{tag}_edgevae_{p}" for p in ("q", "scale", "zp"))
                return [
                    helper.make_node("DynamicQuantizeLinear", [src], [y, s, z]),
                    helper.make_node("DequantizeLinear", [y, s, z], [dst]),
                ], []

            item = ExplainItem(role, gemm.name, "activations", tensor)
            edits.append(_Edit(item, {}, make))
    return _merge_shared(edits)


def _merge_shared(edits: list[_Edit]) -> list[_Edit]:
    """One activation item per tensor, naming every Gemm it feeds."""
    out: list[_Edit] = []
    seen: dict[str, _Edit] = {}
    for e in edits:
        if e.item.part == "activations" and e.item.tensor in seen:
            seen[e.item.tensor].item.node += f", {e.item.node}"
            continue
        if e.item.part == "activations":
            seen[e.item.tensor] = e
        out.append(e)
    return out


def _is_fp32_tensor(fp32, name: str) -> bool:
    g = fp32.graph
    return any(name in n.output for n in g.node) or any(i.name == name for i in g.input)


def _apply_edit(fp32, edit: _Edit):
    """A copy of the fp32 model with this one quantization."""
    from onnx import numpy_helper

    m = copy.deepcopy(fp32)
    g = m.graph
    for t in g.initializer:
        if t.name in edit.values:
            t.CopyFrom(numpy_helper.from_array(edit.values[t.name], t.name))
    if edit.make_nodes is None:
        return m
    tensor = edit.item.tensor
    producer = next((i for i, n in enumerate(g.node) if tensor in n.output), None)
    if producer is None:  # a graph input: its consumers read the quantized copy
        dst = f"{tensor}_edgevae_dq"
        for n in g.node:
            for j, name in enumerate(n.input):
                if name == tensor:
                    n.input[j] = dst
        nodes, inits = edit.make_nodes(tensor, dst)
        at = 0
    else:  # the producer's output is renamed; the quantized copy takes the tensor's name
        src = f"{tensor}_edgevae_f"
        outs = g.node[producer].output
        outs[list(outs).index(tensor)] = src
        nodes, inits = edit.make_nodes(src, tensor)
        at = producer + 1
    for k, node in enumerate(nodes):
        g.node.insert(at + k, node)
    g.initializer.extend(inits)
    return m


def explain_models(
    ctx,
    recipe_method: str,
    quantized: dict[str, Path],
    work: Path,
    n: int | None = None,
    progress=None,
) -> list[ExplainItem]:
    """The cost in nats of each quantization in `quantized` ({role: model path}), alone, on
    `n` held-out images (default EXPLAIN_IMAGES). `ctx` is the search's `measure.Context`."""
    n = n or EXPLAIN_IMAGES
    import onnx

    progress = progress or (lambda stage, done, total: None)
    edits: list[_Edit] = []
    fp32 = {}
    for role, path in quantized.items():
        fp32[role] = onnx.load(str(ctx.export_dir / f"{role}.fp32.onnx"))
        q = onnx.load(str(path))
        make = _dynamic_edits if recipe_method == "dynamic" else _static_edits
        edits += make(q, fp32[role], role)
    for i, edit in enumerate(edits):
        progress("explaining", i, len(edits))
        role = edit.item.role
        path = work / f"{role}.explain{i}.onnx"
        fsio.write_bytes(path, _apply_edit(fp32[role], edit).SerializeToString())
        sess = ctx.session(path, role)
        pair = (sess, ctx.fp32["decoder"]) if role == "encoder" else (ctx.fp32["encoder"], sess)
        d, _ = ctx.paired.delta(*pair, n)
        edit.item.nll_delta, edit.item.nll_delta_se, edit.item.images = d.mean, d.se, d.n
    progress("explaining", len(edits), len(edits))
    return [e.item for e in edits]


def node_costs(items: list[ExplainItem]) -> list[tuple[str, str, float]]:
    """(role, Gemm node, nats) per node, costliest first: the sum of its items (an activation
    shared by several Gemms counts for each)."""
    cost: dict[tuple[str, str], float] = {}
    for it in items:
        for node in it.node.split(", "):
            if node:
                key = (it.role, node)
                cost[key] = cost.get(key, 0.0) + max(it.nll_delta, 0.0)
    return sorted(((r, n, c) for (r, n), c in cost.items()), key=lambda t: -t[2])
