"""Vet an ONNX file before onnxruntime sees it: refuse anything but a single-file edgevae model.

Parsed with `proto` (protobuf's runtime and onnx's schema; no `onnx` package on the device).
Refused: files over MAX_MODEL_BYTES or whose worst-case parse is over the memory limit
(`proto.check_parse_memory`; both before parsing), empty or undecodable files, external
data, model-local functions, subgraphs, ops outside ALLOWED_OPS, initializers over
MAX_INITIALIZER_ELEMENTS and graph I/O that is not the role's contract. The OnnxInfo it
returns also carries the IR version, opsets and metadata, for callers' messages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelFileError
from ..fsio import read_regular
from . import proto
from .proto import text

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

    def tensor(self, tensor: Any) -> None:
        self.largest_initializer = max(self.largest_initializer, proto.dense_size(tensor.dims))
        if proto.is_external(tensor):
            self.external_data.append(text(tensor.name))

    def sparse(self, sparse: Any) -> None:
        """onnxruntime densifies a sparse initializer and loads its values' (and indices')
        data wherever it lives, so both tensors and the dense shape count."""
        self.tensor(sparse.values)
        self.tensor(sparse.indices)
        self.largest_initializer = max(self.largest_initializer, proto.dense_size(sparse.dims))


def _node(node: Any, info: OnnxInfo) -> None:
    op, name = text(node.op_type), text(node.name)
    subgraph = False
    for attr in node.attribute:  # attributes hold tensors (Constant) or subgraphs (Loop, If)
        if attr.HasField("t"):
            info.tensor(attr.t)
        for t in attr.tensors:
            info.tensor(t)
        if attr.HasField("sparse_tensor"):
            info.sparse(attr.sparse_tensor)
        for s in attr.sparse_tensors:
            info.sparse(s)
        subgraph = subgraph or attr.HasField("g") or len(attr.graphs) > 0
    if subgraph:
        raise ModelFileError(f"{info.path}: node '{name}' has unexpected op {op} with a subgraph")
    info.ops.append((text(node.domain), op, name))


def read_info(path: Path) -> OnnxInfo:
    path = Path(path)
    if not os.path.exists(path):
        raise ModelFileError(f"{path}: no such model file")
    data = read_regular(path, MAX_MODEL_BYTES, ModelFileError)
    if not data:
        raise ModelFileError(f"{path}: empty file")
    model = proto.parse_model(data, str(path))
    info = OnnxInfo(path, ir_version=model.ir_version)
    info.opsets = {text(o.domain): o.version for o in model.opset_import}
    info.metadata = {text(p.key): text(p.value) for p in model.metadata_props}
    info.functions = [text(f.name) for f in model.functions]  # their bodies are never walked
    graph = model.graph
    for node in graph.node:
        _node(node, info)
    for t in graph.initializer:
        info.tensor(t)
    for s in graph.sparse_initializer:
        info.sparse(s)
    info.inputs = [text(v.name) for v in graph.input]
    info.outputs = [text(v.name) for v in graph.output]
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
        # A node calling a local function only has to use an allowed name, and the function's
        # own ops would go unvetted; edgevae never exports functions, so refuse them outright.
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
