"""Applying one quantization recipe to one fp32 model with onnxruntime's own tools, and the
calibration data those tools need. `search` decides which recipe; this module only applies.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import fsio
from ..errors import UsageError
from ..runtime.session import feeds, open_session
from .recipes import Recipe


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantizer logs advice and prints progress; the CLI shows its own."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


Feeds = dict[str, np.ndarray]  # a model's inputs by name: {"x": ...} or {"z": ..., "y": ...}


def rows(f: Feeds, start: int, stop: int) -> Feeds:
    """Rows start:stop of every input."""
    return {k: v[start:stop] for k, v in f.items()}


class _Reader:
    """Equal-sized calibration batches of every input (onnxruntime's histogram calibrators
    stack them); a conditional model's `y` rows stay with their `x` or `z` rows."""

    def __init__(self, data: Feeds, batch: int = 256):
        n = len(next(iter(data.values())))
        if n > batch:
            n -= n % batch
        batch = min(batch, n)
        self.items = iter([rows(data, i, i + batch) for i in range(0, n, batch)])

    def get_next(self):
        return next(self.items, None)


def calibration_sets(
    export_dir: Path,
    train_images: np.ndarray,
    n: int,
    seed: int,
    labels: np.ndarray | None = None,
) -> tuple[Feeds, Feeds]:
    """The encoder's and the decoder's calibration feeds. Encoder: n training images (and
    their one-hot `labels` [N, C], a conditional model). Decoder: their posterior means plus
    as many prior draws, each with the label of the image it came from."""
    if n < 1:
        raise UsageError(f"must be >= 1, got {n}", param="calib")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(train_images))[: min(n, len(train_images))]
    x = np.ascontiguousarray(train_images[idx], dtype=np.float32)
    y = None if labels is None else np.ascontiguousarray(labels[idx], dtype=np.float32)
    enc = open_session(export_dir / "encoder.fp32.onnx", "encoder", conditional=y is not None)
    enc_feeds = feeds("encoder", x, y)
    mu = np.concatenate(
        [enc.run(["mu"], rows(enc_feeds, i, i + 1024))[0] for i in range(0, len(x), 1024)]
    )
    z = np.concatenate([mu, rng.standard_normal(mu.shape).astype(np.float32)])
    return enc_feeds, feeds("decoder", z, None if y is None else np.concatenate([y, y]))


def gemm_nodes(path: Path) -> list[tuple[str, int]]:
    """(name, multiply-accumulates per row) of every Gemm in an fp32 model, in graph order:
    what mixed precision can keep in float."""
    import onnx

    model = onnx.load(str(path))
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type == "Gemm" and len(node.input) > 1:
            dims = shapes.get(node.input[1], ())
            out.append((node.name, int(np.prod(dims)) if dims else 0))
    return out


def _gemm_to_matmul(model):
    """Gemm(transB=1) -> MatMul + Add, so MatMulNBits can see the weights."""
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    nodes = []
    for node in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Gemm" or attrs.get("transA", 0) or node.input[1] not in inits:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            w = w.T
        alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
        wname = node.input[1] + "_kn"
        g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w * alpha), wname))
        mm_out = node.output[0] + "_mm"
        nodes.append(
            helper.make_node("MatMul", [node.input[0], wname], [mm_out], node.name + "_mm")
        )
        if len(node.input) > 2 and node.input[2]:
            b = numpy_helper.to_array(inits[node.input[2]]) * beta
            bname = node.input[2] + "_b"
            g.initializer.append(numpy_helper.from_array(b.astype(np.float32), bname))
            nodes.append(
                helper.make_node("Add", [mm_out, bname], [node.output[0]], node.name + "_add")
            )
        else:
            nodes[-1].output[0] = node.output[0]
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.checker.check_model(model)
    return model


def apply_recipe(
    recipe: Recipe,
    src: Path,
    dst: Path,
    calib: Feeds | np.ndarray,
    input_name: str | None = None,
    keep_float: Sequence[str] = (),
) -> None:
    """Write dst, the recipe applied to the fp32 model src, with edgevae metadata. `calib` is
    the static recipes' calibration: feeds by input name (`calibration_sets`), or one array
    for the input `input_name`. The nodes named in `keep_float` stay in float (int8 recipes:
    mixed precision).

    onnxruntime's quantizers write a shape-inferred copy next to the model they are given
    (`<name>-inferred.onnx`) and delete it: they get a private copy of src, so that nothing is
    written into an export dir and two quantizations of one export never share that file."""
    import onnx

    if not isinstance(calib, dict):
        if input_name is None:
            raise ValueError("apply_recipe: an array calibration needs its input_name")
        calib = {input_name: calib}

    with tempfile.TemporaryDirectory() as tmp, _quiet():
        out = Path(tmp) / "q.onnx"
        src = Path(shutil.copyfile(src, Path(tmp) / "src.onnx"))
        if recipe.method in ("static", "dynamic"):
            _quantize_int8(recipe, src, out, calib, list(keep_float))
        elif recipe.method == "int4":
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            q = MatMulNBitsQuantizer(
                _gemm_to_matmul(onnx.load(str(src))), block_size=32, is_symmetric=True
            )
            q.process()
            q.model.save_model_to_file(str(out), use_external_data_format=False)
        elif recipe.method == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(out))
        else:  # pragma: no cover - recipes are a closed set
            raise ValueError(recipe.method)
        model = onnx.load(str(out))
        meta = {p.key: p.value for p in onnx.load(str(src)).metadata_props}
        int8 = recipe.method in ("static", "dynamic")
        meta["edgevae.precision"] = "int8" if int8 else recipe.method
        meta["edgevae.recipe"] = recipe.name
        if keep_float:
            meta["edgevae.kept_float"] = ",".join(keep_float)
        del model.metadata_props[:]
        for k, v in sorted(meta.items()):
            model.metadata_props.add(key=k, value=v)
        model.producer_name = "edgevae"
        fsio.write_bytes(dst, model.SerializeToString())


def _quantize_int8(recipe: Recipe, src: Path, out: Path, calib: Feeds, keep: list[str]) -> None:
    """onnxruntime's quantize_static or quantize_dynamic with the recipe's options."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    qt = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    if recipe.method == "dynamic":
        # quantize_dynamic first rewrites each Gemm as NAME_MatMul + NAME_Add.
        quantize_dynamic(
            str(src),
            str(out),
            per_channel=recipe.per_channel,
            weight_type=qt[recipe.weight],
            op_types_to_quantize=["Gemm", "MatMul"],
            nodes_to_exclude=keep + [f"{name}_MatMul" for name in keep],
        )
    elif recipe.defaults:
        quantize_static(str(src), str(out), _Reader(calib), nodes_to_exclude=keep)
    else:
        extra: dict[str, Any] = {}
        if recipe.float_output:
            extra["OpTypesToExcludeOutputQuantization"] = ["Gemm", "MatMul"]
        percentile = recipe.calibration == "percentile"
        quantize_static(
            str(src),
            str(out),
            _Reader(calib),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Gemm"],
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            activation_type=qt[recipe.activation],
            weight_type=qt[recipe.weight],
            nodes_to_exclude=keep,
            calibrate_method=CalibrationMethod.Percentile
            if percentile
            else CalibrationMethod.MinMax,
            extra_options=extra,
        )
