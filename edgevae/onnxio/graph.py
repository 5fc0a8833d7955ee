"""Parse an ONNX file into nodes, initializers and metadata, without the `onnx` package.

`edgevae firmware` has to work with the runtime install (numpy + onnxruntime), so this reads
the fields onnx.proto assigns to ModelProto, GraphProto, NodeProto, AttributeProto and
TensorProto with the wire-format helpers of `protobuf` and skips the rest. Tensors stored as
external data are refused (the exporter writes one file); Constant nodes become initializers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from . import wire as pb

# TensorProto.DataType -> numpy dtype (only the types a quantized MLP uses)
_DTYPES = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    4: np.uint16,
    5: np.int16,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    11: np.float64,
    12: np.uint32,
    13: np.uint64,
}


@dataclass
class Node:
    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    domain: str = ""
    attrs: dict[str, object] = field(default_factory=dict)

    def label(self) -> str:
        return f"node {self.name or '<unnamed>'!r} (op {self.op_type})"


@dataclass
class Graph:
    nodes: list[Node]
    initializers: dict[str, np.ndarray]
    inputs: list[str]
    outputs: list[str]
    metadata: dict[str, str]
    opsets: dict[str, int]

    def producer(self) -> dict[str, Node]:
        return {out: node for node in self.nodes for out in node.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        table: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                if name:
                    table.setdefault(name, []).append(node)
        return table


class _WireError(Exception):
    """Readable protobuf that is not an ONNX model this reader can take."""


def _ints(wire: int, value) -> list[int]:
    """A repeated int32/int64 field's values; negative ones are stored as 64-bit varints."""
    return [pb.int64(v) for v in pb.repeated_varints(wire, value)]


def _tensor(buf: bytes) -> tuple[str, np.ndarray]:
    dims: list[int] = []
    dtype_code = 0
    name = ""
    raw = None
    floats: list[float] = []
    ints32: list[int] = []
    ints64: list[int] = []
    doubles: list[float] = []
    external = False
    for number, wire, value in pb.fields(buf):
        if number == 1:
            dims.extend(_ints(wire, value))
        elif number == 2:
            dtype_code = value
        elif number == 4:
            floats.extend(pb.repeated_fixed(wire, value, "f"))
        elif number == 5:
            ints32.extend(_ints(wire, value))
        elif number == 7:
            ints64.extend(_ints(wire, value))
        elif number == 8:
            name = value.decode("utf-8")
        elif number == 9:
            raw = bytes(value)
        elif number == 10:
            doubles.extend(pb.repeated_fixed(wire, value, "d"))
        elif number == 14 and value == 1:
            external = True
    if external:
        raise _WireError(f"tensor {name!r} is stored as external data; re-export as one file")
    if dtype_code not in _DTYPES:
        raise _WireError(f"tensor {name!r} has unsupported data type {dtype_code}")
    dtype = np.dtype(_DTYPES[dtype_code]).newbyteorder("<")
    if raw is not None:
        array = np.frombuffer(raw, dtype=dtype)
    elif dtype_code == 1:
        array = np.asarray(floats, dtype=np.float32)
    elif dtype_code == 11:
        array = np.asarray(doubles, dtype=np.float64)
    elif dtype_code in (7, 13):
        array = np.asarray(ints64, dtype=np.int64).astype(dtype)
    else:
        array = np.asarray(ints32, dtype=np.int64).astype(dtype)
    count = int(np.prod(dims)) if dims else 1
    if array.size != count:
        raise _WireError(f"tensor {name!r}: {array.size} values for shape {dims}")
    return name, array.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def _attribute(buf: bytes) -> tuple[str, object]:
    name = ""
    value: object = None
    ints: list[int] = []
    floats: list[float] = []
    for number, wire, raw in pb.fields(buf):
        if number == 1:
            name = raw.decode("utf-8")
        elif number == 2:
            value = struct.unpack("<f", raw)[0]
        elif number == 3:
            value = pb.int64(raw)
        elif number == 4:
            value = bytes(raw)
        elif number == 5:
            value = _tensor(raw)[1]
        elif number == 7:
            floats.extend(pb.repeated_fixed(wire, raw, "f"))
        elif number == 8:
            ints.extend(_ints(wire, raw))
    if value is None and ints:
        value = ints
    if value is None and floats:
        value = floats
    return name, value


def _node(buf: bytes) -> Node:
    node = Node(op_type="", name="", inputs=[], outputs=[])
    for number, _wire, value in pb.fields(buf):
        if number == 1:
            node.inputs.append(value.decode("utf-8"))
        elif number == 2:
            node.outputs.append(value.decode("utf-8"))
        elif number == 3:
            node.name = value.decode("utf-8")
        elif number == 4:
            node.op_type = value.decode("utf-8")
        elif number == 5:
            key, attr = _attribute(value)
            node.attrs[key] = attr
        elif number == 7:
            node.domain = value.decode("utf-8")
    return node


def _value_info_name(buf: bytes) -> str:
    for number, _wire, value in pb.fields(buf):
        if number == 1:
            return value.decode("utf-8")
    return ""


def _graph(buf: bytes) -> tuple[list[Node], dict[str, np.ndarray], list[str], list[str]]:
    nodes: list[Node] = []
    inits: dict[str, np.ndarray] = {}
    inputs: list[str] = []
    outputs: list[str] = []
    for number, _wire, value in pb.fields(buf):
        if number == 1:
            nodes.append(_node(value))
        elif number == 5:
            name, array = _tensor(value)
            inits[name] = array
        elif number == 11:
            inputs.append(_value_info_name(value))
        elif number == 12:
            outputs.append(_value_info_name(value))
    return nodes, inits, inputs, outputs


def parse_model(data: bytes, label: str = "model") -> Graph:
    """Parse serialized ONNX ModelProto bytes; ModelFileError naming `label` if malformed."""
    try:
        graph_buf = None
        metadata: dict[str, str] = {}
        opsets: dict[str, int] = {}
        for number, _wire, value in pb.fields(data):
            if number == 7:
                graph_buf = value
            elif number == 14:
                entry = {n: v.decode("utf-8") for n, _w, v in pb.fields(value) if n in (1, 2)}
                metadata[entry.get(1, "")] = entry.get(2, "")
            elif number == 8:
                domain, version = "", 0
                for n, _w, v in pb.fields(value):
                    if n == 1:
                        domain = v.decode("utf-8")
                    elif n == 2:
                        version = v
                opsets[domain] = version
        if graph_buf is None:
            raise _WireError("no graph")
        nodes, inits, inputs, outputs = _graph(graph_buf)
    except (pb.Truncated, _WireError, UnicodeDecodeError, struct.error, ValueError) as exc:
        detail = "truncated or not protobuf" if isinstance(exc, pb.Truncated) else exc
        raise ModelFileError(f"{label}: not a readable ONNX model ({detail})") from None
    constants = [n for n in nodes if n.op_type == "Constant" and n.domain in ("", "ai.onnx")]
    for node in constants:
        if isinstance(node.attrs.get("value"), np.ndarray):
            inits[node.outputs[0]] = node.attrs["value"]
            nodes.remove(node)
    inputs = [name for name in inputs if name not in inits]
    return Graph(nodes, inits, inputs, outputs, metadata, opsets)


def load_graph(path: Path) -> Graph:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_model(data, path.name)
