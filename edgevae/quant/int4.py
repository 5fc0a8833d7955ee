"""The firmware's 4-bit decoder (`decoder.int4.static.onnx`): the `firmware-int4` recipe.

What it writes: the firmware recipe's QDQ graph (uint8 activations, fixed scales everywhere,
logits included) in which every Gemm but the first holds weights -8..7 with one scale per
output channel. The weights stay in int8 tensors (values -8..7): onnxruntime then fuses each
layer into the same integer QGemm as the int8 firmware decoder, so it runs exactly the
arithmetic of the C kernel (which packs these layers two weights per byte,
`edgevae firmware` with 4-bit weights). With ONNX's own INT4 type (opset 21) onnxruntime
does not run that integer QGemm, so nothing guarantees it rounds as the kernel does.

The first Gemm stays int8: its fan-in is the latent size (8 or 20 weights per channel), where
4-bit rounding costs the most nats per byte saved, and it holds 1-2 % of the weights.

The 4-bit weights of a channel come from its float weights:
- weights already on a 4-bit grid (a run fine-tuned with 4-bit quantization-aware training
  stores them so, `training/qat.py`) keep that grid exactly;
- otherwise the scale s = max|w| * r / 7, r in `RATIOS`, with the least squared rounding
  error, and q = clamp(round(w / s), -8, 7) (post-training rounding: a few nats; fine-tune).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .. import fsio
from ..runtime.manifest import FIRMWARE_DECODER_INT4
from .recipes import FIRMWARE_INT4

QMIN, QMAX = -8, 7
RATIOS = np.array([r / 100 for r in range(50, 101)], np.float64)  # clipping: max|w| * r
GRID_TOLERANCE = 1e-3  # |w / s - round(w / s)| on a stored 4-bit grid (float32 rounding)
NAME = FIRMWARE_DECODER_INT4


def _grid(row: np.ndarray) -> tuple[np.ndarray, float] | None:
    """(q, s) when the row's values are q * s with q in -8..7 (largest q range first: the
    finest grid that holds them), s the float32 that gives back every value exactly when
    there is one; None otherwise."""
    m = float(np.abs(row).max())
    if m == 0.0:
        return np.zeros(row.shape, np.int8), 1.0
    for k in range(-QMIN, 0, -1):
        r = row.astype(np.float64) / (m / k)
        q = np.rint(r)
        if np.abs(r - q).max() < GRID_TOLERANCE and q.min() >= QMIN and q.max() <= QMAX:
            return q.astype(np.int8), _exact_scale(row, q.astype(np.float32), m / k)
    return None


def _exact_scale(row: np.ndarray, q: np.ndarray, s: float) -> float:
    """The float32 next to s (within 2 units in the last place) for which float32(q * s)
    equals the row, which holds when the row was stored as such a product; else s."""
    s32 = np.float32(s)
    candidates = [s32]
    for direction in (np.float32(np.inf), np.float32(0)):
        nxt = s32
        for _ in range(2):
            nxt = np.nextafter(nxt, direction)
            candidates.append(nxt)
    for cand in candidates:
        if np.array_equal(q * cand, row):
            return float(cand)
    return float(s32)


def _least_squares(row: np.ndarray) -> tuple[np.ndarray, float]:
    """(q, s) of the clipping ratio in RATIOS with the least squared rounding error."""
    w = row.astype(np.float64)
    scales = np.abs(w).max() * RATIOS / QMAX
    q = np.clip(np.rint(w[None, :] / scales[:, None]), QMIN, QMAX)
    err = ((q * scales[:, None] - w[None, :]) ** 2).sum(axis=1)
    best = int(np.argmin(err))
    return q[best].astype(np.int8), float(scales[best])


def quantize_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float weights [out, in] -> (int8 values -8..7 [out, in], float32 scales [out])."""
    w = np.asarray(w, np.float32)
    q = np.empty(w.shape, np.int8)
    s = np.empty(w.shape[0], np.float32)
    for j, row in enumerate(w):
        found = _grid(row)
        q[j], s[j] = found if found is not None else _least_squares(row)
    s[s <= 0] = 1.0  # all-zero rows: any positive scale
    return q, s


def gemm_weights(model) -> list[tuple[object, object, bool]]:
    """(Gemm node, its weight initializer, transB) for every Gemm with constant weights, in
    graph order."""
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type == "Gemm" and len(node.input) > 1 and node.input[1] in inits:
            attrs = {a.name: a.i for a in node.attribute if a.name == "transB"}
            out.append((node, inits[node.input[1]], bool(attrs.get("transB", 0))))
    return out


def snap(src: Path) -> tuple[object, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The fp32 model with every Gemm but the first on its 4-bit grid (float32 q * s), and
    per Gemm node name its (q [out, in], s [out])."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    grids = {}
    for node, init, trans_b in gemm_weights(model)[1:]:
        w = numpy_helper.to_array(init).astype(np.float32)
        w = w if trans_b else w.T  # -> [out, in]
        q, s = quantize_weights(w)
        grids[node.name] = (q, s)
        snapped = (q.astype(np.float32) * s[:, None]).astype(np.float32)
        init.CopyFrom(numpy_helper.from_array(snapped if trans_b else snapped.T, init.name))
    return model, grids


def _producers(model) -> dict[str, object]:
    return {out: node for node in model.graph.node for out in node.output}


def _set_init(model, name: str, value: np.ndarray) -> None:
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            init.CopyFrom(numpy_helper.from_array(value, name))
            return
    raise ValueError(f"no initializer {name!r}")


def _inits(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def install_grids(qdq, fp32, grids: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Put the 4-bit weights and scales into the QDQ model's Gemms (named as in the fp32
    model), and re-quantize their int32 biases to the new scales as quantize_static does:
    round(bias / float32(input_scale * weight_scale))."""
    from onnx import numpy_helper

    prod = _producers(qdq)
    inits = _inits(qdq)
    fp32_inits = {t.name: numpy_helper.to_array(t) for t in fp32.graph.initializer}
    fp32_bias = {n.name: n.input[2] for n in fp32.graph.node if n.op_type == "Gemm"}
    for node in qdq.graph.node:
        if node.op_type != "Gemm" or node.name not in grids:
            continue
        q, s = grids[node.name]
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        w_dq = prod[node.input[1]]
        _set_init(qdq, w_dq.input[0], np.ascontiguousarray(q if trans_b else q.T))
        _set_init(qdq, w_dq.input[1], s.astype(np.float32))
        if len(node.input) < 3 or not node.input[2]:
            continue
        in_scale = np.float32(inits[prod[node.input[0]].input[1]].reshape(()))
        bias_scale = (in_scale * s).astype(np.float32)
        bias = fp32_inits[fp32_bias[node.name]].astype(np.float32)
        b_dq = prod[node.input[2]]
        _set_init(qdq, b_dq.input[0], np.rint(bias / bias_scale).astype(np.int32))
        _set_init(qdq, b_dq.input[1], bias_scale)


def write_int4_decoder(src: str | Path, dst: str | Path, calib) -> dict[str, int]:
    """Write the `firmware-int4` decoder for the fp32 decoder `src` into `dst`: the 4-bit
    grids (`snap`), the firmware recipe's QDQ graph calibrated on `calib` (z vectors, as
    `apply_recipe` takes them) with that model, then the 4-bit weights put in. Returns
    {Gemm name: 4 or 8}, each Gemm's weight bits."""
    import onnx

    from .apply import apply_recipe

    src, dst = Path(src), Path(dst)
    snapped, grids = snap(src)
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = Path(tmp) / "snapped.onnx"
        onnx.save(snapped, str(fp32_path))
        apply_recipe(FIRMWARE_INT4, fp32_path, Path(tmp) / "q.onnx", calib, "z")
        qdq = onnx.load(str(Path(tmp) / "q.onnx"))
    install_grids(qdq, snapped, grids)
    qdq.metadata_props.add(key="edgevae.weight_bits", value="4")
    onnx.checker.check_model(qdq)
    fsio.write_bytes(dst, qdq.SerializeToString())
    return {node.name: 4 if node.name in grids else 8 for node, _, _ in gemm_weights(snapped)}
