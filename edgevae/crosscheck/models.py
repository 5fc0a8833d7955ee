"""What the exported ONNX models are, read from their bytes: op types, initializer types, the
kind (fp32, fp16, static or dynamic int8, int4), and the sizes the cross-platform check feeds.

Only numpy, onnxruntime and protobuf (through `onnxio.proto`): runs on the device side too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from .. import fsio
from ..onnxio import proto
from ..onnxio.vet import MAX_MODEL_BYTES
from ..runtime.session import create_session
from .compare import DYNAMIC, FP16, FP32, INT4, STATIC, CrosscheckError

_DYNAMIC_OPS = {
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeMatMul",
    "DynamicQuantizeLSTM",
    "MatMulIntegerToFloat",
}
_STATIC_OPS = {"QuantizeLinear", "DequantizeLinear", "QGemm", "QLinearMatMul", "QLinearConv"}


def onnx_graph_info(data: bytes, label: str = "model") -> tuple[set[str], set[int]]:
    """(op types, initializer data types) of an ONNX model's main graph, from its bytes;
    CrosscheckError naming `label` (the file) when they are not one or could not be parsed
    within the memory limit. Truncated files stop here, before onnxruntime sees them.

    Reads the ModelProto only, not `onnxio.graph`: that decodes every tensor and refuses the
    data types it has no use for (fp16, bf16), and a kind is needed for every model.
    """
    try:
        model = proto.decode_model(data, label, CrosscheckError)
    except proto.OnnxFormatError:
        raise CrosscheckError(f"{label}: not an ONNX model (truncated or not protobuf)") from None
    graph = model.graph
    return {proto.text(n.op_type) for n in graph.node}, {t.data_type for t in graph.initializer}


def onnx_op_types(data: bytes) -> set[str]:
    """Op types of an ONNX model's main graph."""
    return onnx_graph_info(data)[0]


def model_kind(ops: Iterable[str], dtypes: Iterable[int] = ()) -> str:
    """int8-static, int8-dynamic, int4, fp16 or fp32 from a graph's ops and weight types."""
    ops = set(ops)
    if ops & _DYNAMIC_OPS:
        return DYNAMIC
    if ops & _STATIC_OPS or any(op.startswith("QLinear") for op in ops):
        return STATIC
    if any("NBits" in op for op in ops):
        return INT4
    if set(dtypes) & {10, 16}:  # TensorProto.FLOAT16, BFLOAT16
        return FP16
    return FP32


def open_session(path: Path):
    """Any model of the export (int4 and fp16 too), one thread, unvetted: the check runs
    the user's own export on their own board."""
    return create_session(path, threads=1)


def _feature_dim(shape) -> int | None:
    return shape[-1] if len(shape) == 2 and isinstance(shape[-1], int) else None


def describe_models(export_dir: str | os.PathLike) -> dict[str, dict]:
    """{model stem: {file, kind, sha256, ops}} for every `*.onnx` in the export dir."""
    export_dir = Path(export_dir)
    paths = sorted(export_dir.glob("*.onnx"))
    if not paths:
        raise CrosscheckError(f"no *.onnx models in {export_dir}")
    models = {}
    for path in paths:
        data = fsio.read_regular(path, MAX_MODEL_BYTES, CrosscheckError)
        ops, dtypes = onnx_graph_info(data, str(path))
        models[path.name[: -len(".onnx")]] = {
            "file": path.name,
            "kind": model_kind(ops, dtypes),
            "sha256": fsio.sha256_of(data),
            "ops": sorted(ops),
        }
    return models


def _manifest_dims(path: Path) -> dict:
    """latent_dim, n_classes, image_shape and input_dim from the manifest at `path` (those
    it has); a value it has that is not one (a wrong type, out of the runtime's ranges) is
    refused naming the manifest."""
    from ..runtime.manifest import MAX_CLASSES, MAX_LATENT, MAX_MANIFEST_BYTES, MAX_SIDE

    data = fsio.read_regular(path, MAX_MANIFEST_BYTES, CrosscheckError)
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise CrosscheckError(f"{path}: not valid JSON") from None
    if not isinstance(manifest, dict):
        raise CrosscheckError(f"{path}: not an edgevae manifest (not a JSON object)")

    def count(value, top: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= top

    dims: dict = {}
    latent, classes, shape = (manifest.get(k) for k in ("latent_dim", "classes", "image_shape"))
    if latent is not None:
        if not count(latent, MAX_LATENT):
            raise CrosscheckError(
                f"{path}: latent_dim must be in 1..{MAX_LATENT}, got {latent!r:.40}"
            )
        dims["latent_dim"] = latent
    dims["n_classes"] = 0  # an unconditional model's manifest has no classes
    if classes is not None:
        if not isinstance(classes, list) or len(classes) > MAX_CLASSES:
            raise CrosscheckError(f"{path}: classes must be a list of at most {MAX_CLASSES} names")
        dims["n_classes"] = len(classes)
    if isinstance(shape, str):  # "28x28" or "28,28"
        parts = shape.replace("x", ",").split(",")
        shape = [int(p) if p.strip().isdigit() else p for p in parts]
    if shape is not None:
        if (
            not isinstance(shape, list)
            or len(shape) != 2
            or not all(count(v, MAX_SIDE) for v in shape)
        ):
            raise CrosscheckError(
                f"{path}: image_shape must be [height, width] in 1..{MAX_SIDE}, got {shape!r:.40}"
            )
        dims["image_shape"] = (shape[0], shape[1])
        dims["input_dim"] = shape[0] * shape[1]
    return dims


def model_dims(export_dir: str | os.PathLike) -> dict:
    """input_dim, latent_dim, image_shape and n_classes (0: not conditional) from
    manifest.json, else from the model inputs."""
    export_dir = Path(export_dir)
    manifest_path = export_dir / "manifest.json"
    dims = _manifest_dims(manifest_path) if manifest_path.is_file() else {}
    for path in sorted(export_dir.glob("*.onnx")):
        if all(k in dims for k in ("input_dim", "latent_dim", "n_classes")):
            break
        try:
            inp = open_session(path).get_inputs()
        except Exception:  # noqa: BLE001 - a broken model is reported by run_models
            continue
        for arg in inp:
            key = {"x": "input_dim", "z": "latent_dim", "y": "n_classes"}.get(arg.name)
            if key and _feature_dim(arg.shape):
                dims.setdefault(key, _feature_dim(arg.shape))
        if inp and "y" not in [a.name for a in inp]:
            dims.setdefault("n_classes", 0)
    dims.setdefault("input_dim", 784)
    dims.setdefault("latent_dim", 20)
    dims.setdefault("n_classes", 0)
    return dims
