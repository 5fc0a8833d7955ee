"""The int8 encoder (uint8 pixels -> quantized mu and logvar) as the kernel's integer model.

The graph `quantize_static` makes of the exporter's encoder, read with the decoder's chain
walker (`qdq.ChainReader.walk`):

    x -> Q -> [FC -> Q -> (DQ -> act -> Q)*]*  (the body, shared by both heads)
      body -> DQ -> FC(mu) -> Q -> DQ -> mu,    body -> DQ -> FC(logvar) -> Q -> DQ -> logvar

The firmware keeps the heads' quantized outputs: the score's KL and the decoder's input are
256-entry tables indexed by them (`score.py`), so nothing after the heads needs the float
values. Pixels enter as uint8: x = float32(p) / 255 (what the data readers compute), then the
model's QuantizeLinear, both folded into one 256-entry table at load time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelFileError, UsageError
from ..fsio import sha256_file
from ..onnxio.graph import load_graph
from .fixedpoint import dequantize_linear, quantize_linear
from .intmodel import IntLayer, image_shape, int_layers
from .intref import forward
from .qdq import ChainReader, FcStep, QType

OUTPUTS = ("mu", "logvar")
_DYNAMIC = ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul")
_STATIC_HINT = (
    "; the firmware needs the statically quantized encoder (encoder.int8.static.onnx, from "
    "quantize_static in QDQ format with its outputs quantized)"
)


@dataclass
class IntEncoder:
    source: str
    sha256: str
    input_dim: int
    latent_dim: int
    image_shape: tuple[int, int]
    input_q: QType
    body: list[IntLayer]  # the hidden layers both heads read
    mu: IntLayer  # head: last body output -> quantized mu
    logvar: IntLayer  # head: last body output -> quantized logvar
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def macs(self) -> int:
        return sum(layer.in_dim * layer.out_dim for layer in (*self.body, self.mu, self.logvar))

    @property
    def pixel_input(self) -> np.ndarray:
        """int64 [256]: pixel value -> the first layer's quantized input, like QuantizeLinear
        on x = float32(p) / 255."""
        x = np.arange(256, dtype=np.float32) / np.float32(255)
        return quantize_linear(x, self.input_q)


def _head(reader: ChainReader, output: str) -> tuple[str, QType, list]:
    node = reader.prod.get(output)
    if node is None:
        reader.fail(f"output {output!r} has no producer")
    if node.op_type != "DequantizeLinear":
        reader.fail(
            f"output {output!r} comes from {node.label()} in float; the firmware needs it "
            f"quantized{_STATIC_HINT}"
        )
    qname, q_seen = reader.dequantized(output, node)
    src, input_q, steps = reader.walk(qname, q_seen)
    if not isinstance(steps[-1], FcStep):
        reader.fail(f"{output!r} must be the output of a Gemm/MatMul; found op {steps[-1].kind}")
    return src, input_q, steps


def _same_body(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        type(x) is type(y) and x.name == y.name and x.out_q.same_as(y.out_q)
        for x, y in zip(a, b, strict=True)
    )


def load_int_encoder(onnx_path: str | Path) -> IntEncoder:
    """Read a QDQ int8 encoder (outputs mu and logvar) into the kernel's integer model;
    ModelFileError naming the node when the kernel cannot run it."""
    path = Path(onnx_path)
    label = path.name
    graph = load_graph(path)
    reader = ChainReader(graph, label)
    for node in graph.nodes:
        if node.op_type in _DYNAMIC:
            reader.refuse(node, f"is not supported by the firmware kernel{_STATIC_HINT}")
    missing = [name for name in OUTPUTS if name not in graph.outputs]
    if missing or len(graph.inputs) != 1:
        reader.fail(f"expected one input (x) and outputs mu, logvar; found {graph.outputs}")
    src, input_q, mu_steps = _head(reader, "mu")
    _, _, lv_steps = _head(reader, "logvar")
    if not _same_body(mu_steps[:-1], lv_steps[:-1]):
        reader.fail("mu and logvar must be two Gemm/MatMul heads on the same hidden layers")
    layers, notes, tail = int_layers(mu_steps, label)
    lv_layers, lv_notes, lv_tail = int_layers(lv_steps[-1:], label)
    if tail is not None or lv_tail is not None:
        reader.fail("an element-wise node after the mu or logvar Gemm is not supported")
    body, mu, logvar = layers[:-1], layers[-1], lv_layers[0]
    if logvar.in_dim != mu.in_dim or logvar.out_dim != mu.out_dim:
        reader.fail(f"mu has {mu.out_dim} outputs from {mu.in_dim}, logvar {logvar.out_dim}")
    input_dim = (body[0] if body else mu).in_dim
    return IntEncoder(
        source=label,
        sha256=sha256_file(path, ModelFileError),
        input_dim=input_dim,
        latent_dim=mu.out_dim,
        image_shape=image_shape(graph.metadata, input_dim, label),
        input_q=input_q,
        body=body,
        mu=mu,
        logvar=logvar,
        metadata=dict(graph.metadata),
        notes=notes + lv_notes,
    )


def check_pixels(pixels: np.ndarray, dim: int, param: str = "pixels") -> np.ndarray:
    """uint8 images [N, D] or [N, H, W] (H * W = D) -> a contiguous uint8 [N, D] array."""
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8:
        raise UsageError(f"expected uint8 pixel values 0..255, got dtype {arr.dtype}", param=param)
    if arr.ndim == 3:
        arr = arr.reshape(len(arr), -1)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise UsageError(
            f"expected images of {dim} pixels, got shape {list(arr.shape)}", param=param
        )
    return np.ascontiguousarray(arr)


def encode_q(enc: IntEncoder, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images -> the heads' quantized values (int64 [N, L] each), as the kernel's
    edgevae_encode_q computes them."""
    x = enc.pixel_input[check_pixels(pixels, enc.input_dim)]
    hidden = forward(enc.body, x)
    return forward([enc.mu], hidden), forward([enc.logvar], hidden)


def encode_int(enc: IntEncoder, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images -> (mu, logvar) float32 [N, L]: the model's DequantizeLinear outputs,
    equal to onnxruntime's on x = pixels / 255."""
    mu_q, lv_q = encode_q(enc, pixels)
    return dequantize_linear(mu_q, enc.mu.out_q), dequantize_linear(lv_q, enc.logvar.out_q)
