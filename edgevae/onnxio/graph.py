"""An ONNX model as plain nodes, numpy initializers and metadata, for the firmware's QDQ reader.

Parsed with `proto` (protobuf's runtime and onnx's schema, no `onnx` package), so `edgevae
firmware` works with the runtime install. Tensors stored as external data are refused (the
exporter writes one file); Constant nodes become initializers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFileError
from ..fsio import read_regular
from . import proto
from .vet import MAX_MODEL_BYTES


@dataclass
class Node:
    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    domain: str = ""
    # FLOAT/INT/STRING/TENSOR/FLOATS/INTS attributes as float/int/bytes/ndarray/list; None
    # for the kinds nothing here reads (graphs, sparse tensors, strings lists, types)
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


def _name(value: str | bytes) -> str:
    return proto.text(value, strict=True)  # two undecodable names must not become one


def _attribute(attr: Any) -> object:
    kind = attr.type
    A = type(attr)
    if kind == A.FLOAT:
        return attr.f
    if kind == A.INT:
        return attr.i
    if kind == A.STRING:
        return attr.s
    if kind == A.TENSOR:
        return proto.to_array(attr.t)
    if kind == A.FLOATS:
        return list(attr.floats)
    if kind == A.INTS:
        return list(attr.ints)
    return None


def _node(node: Any) -> Node:
    return Node(
        op_type=_name(node.op_type),
        name=_name(node.name),
        inputs=[_name(s) for s in node.input],
        outputs=[_name(s) for s in node.output],
        domain=_name(node.domain),
        attrs={_name(a.name): _attribute(a) for a in node.attribute},
    )


def graph_of(model: Any) -> Graph:
    """The Graph view of a ModelProto; OnnxFormatError for what it cannot represent."""
    if not model.HasField("graph"):
        raise proto.OnnxFormatError("no graph")
    g = model.graph
    nodes = [_node(n) for n in g.node]
    inits = {_name(t.name): proto.to_array(t) for t in g.initializer}
    for node in [n for n in nodes if n.op_type == "Constant" and n.domain in ("", "ai.onnx")]:
        if isinstance(node.attrs.get("value"), np.ndarray) and node.outputs:
            inits[node.outputs[0]] = node.attrs["value"]
            nodes.remove(node)
    return Graph(
        nodes,
        inits,
        [name for name in (_name(v.name) for v in g.input) if name not in inits],
        [_name(v.name) for v in g.output],
        {_name(p.key): _name(p.value) for p in model.metadata_props},
        {_name(o.domain): o.version for o in model.opset_import},
    )


def parse_graph(data: bytes, label: str = "model") -> Graph:
    """The Graph of serialized ModelProto bytes; ModelFileError naming `label` if malformed
    (or when parsing it could exceed the memory limit)."""
    try:
        return graph_of(proto.decode_model(data, label))
    except proto.OnnxFormatError as exc:
        raise ModelFileError(f"{label}: not a readable ONNX model ({exc})") from None


def load_graph(path: Path) -> Graph:
    path = Path(path)
    return parse_graph(read_regular(path, MAX_MODEL_BYTES, ModelFileError), path.name)
