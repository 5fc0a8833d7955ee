"""Vet an ONNX file before onnxruntime sees it, with a minimal protobuf reader (no `onnx` needed).

The device path has only numpy and onnxruntime, so this walks the ModelProto wire format
itself: enough to refuse external data, unexpected ops or domains, oversized initializers,
an IR/opset newer than the installed onnxruntime, and the wrong I/O contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelFileError
from . import wire as pb

MAX_MODEL_BYTES = 64 << 20
MAX_INITIALIZER_ELEMENTS = 16 << 20
ALLOWED_OPS = {
    "": {
        "Gemm",
        "MatMul",
        "Add",
        "Relu",
        "Tanh",
        "Sigmoid",
        "Identity",
        "Cast",
        "Mul",
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "QLinearMatMul",
        "Reshape",
        "Constant",
        "Clip",
        "Transpose",
        "Shape",
        "Gather",
        "Unsqueeze",
        "Concat",
        "Flatten",
    },
    "com.microsoft": {
        "QGemm",
        "MatMulNBits",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "QLinearSigmoid",
        "QLinearAdd",
        "FusedGemm",
        "FusedMatMul",
    },
}


@dataclass
class OnnxInfo:
    path: Path
    ir_version: int = 0
    opsets: dict[str, int] = field(default_factory=dict)
    ops: list[tuple[str, str, str]] = field(default_factory=list)  # (domain, op_type, name)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    external_data: list[str] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)  # model-local FunctionProto names
    largest_initializer: int = 0


def _str(v) -> str:
    return bytes(v).decode("utf-8", "replace")


def _value_info_name(buf) -> str:
    return next((_str(v) for n, w, v in pb.fields(buf) if n == 1 and w == 2), "")


def _tensor(buf, info: OnnxInfo) -> None:
    dims, name, external = [], "", False
    for n, w, v in pb.fields(buf):
        if n == 1 and w == 0:
            dims.append(v)
        elif n == 1 and w == 2:  # packed dims
            dims += pb.packed_varints(v)
        elif n == 8 and w == 2:
            name = _str(v)
        elif n == 13 and w == 2:  # external_data entries
            external = True
        elif n == 14 and w == 0 and v == 1:  # data_location = EXTERNAL
            external = True
    size = 1
    for d in dims:
        size *= max(d, 0)
    info.largest_initializer = max(info.largest_initializer, size)
    if external:
        info.external_data.append(name)


def _sparse(buf, info: OnnxInfo) -> None:
    """SparseTensorProto: values (1) and indices (2) are TensorProtos, dims (3) the dense shape.

    Fix: these were not walked, so external data hidden in a sparse initializer (which
    onnxruntime densifies and loads) got past the single-file check, and a huge dense shape
    past the size limit.
    """
    dims = []
    for n, w, v in pb.fields(buf):
        if n in (1, 2) and w == 2:
            _tensor(v, info)
        elif n == 3 and w == 0:
            dims.append(v)
        elif n == 3 and w == 2:  # packed dims
            dims += pb.packed_varints(v)
    size = 1
    for d in dims:
        size *= max(d, 0)
    info.largest_initializer = max(info.largest_initializer, size)


def _graph(buf, info: OnnxInfo) -> None:
    for n, w, v in pb.fields(buf):
        if w != 2:
            continue
        if n == 1:  # NodeProto
            op = dom = name = ""
            subgraph = False
            for fn, fw, fv in pb.fields(v):
                if fw != 2:
                    continue
                if fn == 4:
                    op = _str(fv)
                elif fn == 7:
                    dom = _str(fv)
                elif fn == 3:
                    name = _str(fv)
                elif fn == 5:  # attributes may hold tensors (Constant) or subgraphs
                    for an, aw, av in pb.fields(fv):
                        if an in (5, 10) and aw == 2:  # t, tensors (fix: tensors was skipped)
                            _tensor(av, info)
                        elif an in (22, 23) and aw == 2:  # sparse_tensor(s) (fix: skipped)
                            _sparse(av, info)
                        elif an in (6, 11) and aw == 2:
                            subgraph = True
            if subgraph:
                # Fix: raised mid-node before, so the message could not name the op (Loop, If,
                # Scan): report it once the whole NodeProto is read.
                raise ModelFileError(
                    f"{info.path}: node '{name}' has unexpected op {op} with a subgraph"
                )
            info.ops.append((dom, op, name))
        elif n == 5:
            _tensor(v, info)
        elif n == 15:  # sparse_initializer (fix: was not checked for external data)
            _sparse(v, info)
        elif n == 11:
            info.inputs.append(_value_info_name(v))
        elif n == 12:
            info.outputs.append(_value_info_name(v))


def read_info(path: Path) -> OnnxInfo:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    if not path.is_file():
        raise ModelFileError(f"{path}: not a regular file")
    if size == 0:
        raise ModelFileError(f"{path}: empty file")
    if size > MAX_MODEL_BYTES:
        raise ModelFileError(f"{path}: {size} bytes is larger than any edgevae model")
    info = OnnxInfo(path)
    try:
        data = memoryview(path.read_bytes())
        for n, w, v in pb.fields(data):
            if n == 1 and w == 0:
                info.ir_version = v
            elif n == 8 and w == 2:
                dom, ver = "", 0
                for on, ow, ov in pb.fields(v):
                    if on == 1 and ow == 2:
                        dom = _str(ov)
                    elif on == 2 and ow == 0:
                        ver = ov
                info.opsets[dom] = ver
            elif n == 7 and w == 2:
                _graph(v, info)
            elif n == 14 and w == 2:
                kv = {fn: _str(fv) for fn, fw, fv in pb.fields(v) if fw == 2}
                info.metadata[kv.get(1, "")] = kv.get(2, "")
            elif n == 25 and w == 2:  # FunctionProto: its body's nodes are never walked
                info.functions.append(
                    next((_str(fv) for fn, fw, fv in pb.fields(v) if fn == 1 and fw == 2), "")
                )
    except (pb.Truncated, IndexError):
        raise ModelFileError(f"{path}: truncated or not an ONNX model") from None
    if not info.ops or not info.inputs or not info.outputs:
        raise ModelFileError(f"{path}: not an ONNX model (no graph)")
    return info


def vet(path: Path, role: str, inputs: list[str], outputs: list[str]) -> OnnxInfo:
    """Refuse anything but a single-file edgevae model of the given role."""
    info = read_info(path)
    if info.external_data:
        raise ModelFileError(
            f"{path}: tensor '{info.external_data[0]}' is stored as external data; "
            "edgevae loads single-file models only"
        )
    if info.functions:
        # Fix: ops inside model-local functions were not vetted (a node calling one only had
        # to use an allowed name); edgevae never exports functions, so refuse them outright.
        raise ModelFileError(
            f"{path}: defines the local function '{info.functions[0]}'; edgevae models have none"
        )
    for dom, op, name in info.ops:
        dom = "" if dom == "ai.onnx" else dom
        if dom not in ALLOWED_OPS:
            raise ModelFileError(f"{path}: node '{name}' uses custom domain '{dom}'")
        if op not in ALLOWED_OPS[dom]:
            raise ModelFileError(f"{path}: node '{name}' has unexpected op {op}")
    if info.largest_initializer > MAX_INITIALIZER_ELEMENTS:
        raise ModelFileError(f"{path}: an initializer has {info.largest_initializer} elements")
    declared = info.metadata.get("edgevae.role")
    if declared and declared != role:
        raise ModelFileError(f"{path}: this is an {declared} model, expected the {role}")
    if info.inputs[:1] != inputs[:1] or not set(outputs) <= set(info.outputs):
        raise ModelFileError(
            f"{path}: I/O {info.inputs}->{info.outputs} is not the {role} contract "
            f"{inputs}->{outputs}"
        )
    return info
