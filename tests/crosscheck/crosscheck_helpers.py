"""Shared pieces of the crosscheck tests: synthetic runs, PNG bytes, hand-built ONNX bytes and
a tiny real export (two fp32 models). A plain module (not a conftest.py: other test dirs import
the top-level `conftest` by name)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from edgevae.crosscheck.compare import DYNAMIC, FP32, STATIC, Check, Report
from edgevae.crosscheck.inputs import make_inputs
from edgevae.crosscheck.results import FORMAT, Results


def results(label="ref", *, seed=0, png=None, kinds=None, scale=1.0, sample=None) -> Results:
    """A small synthetic run: one model per kind with one output each."""
    kinds = kinds or {"decoder.int8": STATIC, "decoder.int8.dynamic": DYNAMIC, "decoder.fp32": FP32}
    inputs = make_inputs(seed, input_dim=16, latent_dim=4, n_random=4)
    rng = np.random.default_rng(123)
    outputs = {f"{stem}/x_mean": (rng.random((5, 16)) * scale).astype(np.float32) for stem in kinds}
    meta = {
        "format": FORMAT,
        "label": label,
        "platform": {
            "machine": "x86_64",
            "numpy": np.__version__,
            "onnxruntime": "1.32.0",
            "python": "3.11",
            "numpy_cpu_features": ["AVX2"],
        },
        "models": {stem: {"kind": kind, "sha256": stem} for stem, kind in kinds.items()},
        "sample": sample
        or (
            {"status": "ok", "message": "edgevae sample", "decoder_kind": STATIC}
            if png
            else {"status": "skipped", "message": "no CLI"}
        ),
    }
    return Results(inputs=inputs, outputs=outputs, meta=meta, png=png)


def png_bytes(pixels: np.ndarray, **save_kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="PNG", **save_kw)
    return buf.getvalue()


def check_named(report: Report, name: str) -> Check:
    """The check of that name."""
    return next(c for c in report.checks if c.name == name)


def _pb_field(num: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (payloads here are < 128 bytes or nested)."""

    def varint(v: int) -> bytes:
        out = bytearray()
        while True:
            b = v & 0x7F
            v >>= 7
            out.append(b | (0x80 if v else 0))
            if not v:
                return bytes(out)

    return varint((num << 3) | 2) + varint(len(payload)) + payload


def fake_onnx(*ops: str, dtypes: tuple[int, ...] = (1,)) -> bytes:
    """ModelProto bytes with those op types and initializer data types (nothing else: enough
    for the op/dtype reader, not for onnxruntime)."""
    nodes = b"".join(_pb_field(1, _pb_field(4, op.encode())) for op in ops)
    # initializers: TensorProto with data_type (field 2, varint) and a name (field 8)
    inits = b"".join(_pb_field(5, bytes([0x10, d]) + _pb_field(8, b"w")) for d in dtypes)
    ir_version = bytes([0x08, 0x09])  # field 1 varint 9
    return ir_version + _pb_field(7, nodes + _pb_field(2, b"graph") + inits)


def tiny_fp32_export(path: Path) -> Path:
    """encoder.fp32 (x [N,16] -> mu, logvar [N,4]) and decoder.fp32 (z [N,4] -> x_mean [N,16])
    plus a manifest, written with `onnx` (skipped without it)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    path.mkdir()

    def save(name, inp, outs, nodes, inits, d_in):
        graph = helper.make_graph(
            nodes,
            name,
            [helper.make_tensor_value_info(inp, TensorProto.FLOAT, ["N", d_in])],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["N", d]) for o, d in outs],
            initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 9
        onnx.save(model, path / f"{name}.onnx")

    w = {"W": rng.standard_normal((16, 4)).astype(np.float32), "b": np.zeros(4, np.float32)}
    save(
        "encoder.fp32",
        "x",
        [("mu", 4), ("logvar", 4)],
        [
            helper.make_node("Gemm", ["x", "W", "b"], ["mu"]),
            helper.make_node("Neg", ["mu"], ["logvar"]),
        ],
        w,
        16,
    )
    save(
        "decoder.fp32",
        "z",
        [("x_mean", 16)],
        [
            helper.make_node("Gemm", ["z", "V", "c"], ["t"]),
            helper.make_node("Sigmoid", ["t"], ["x_mean"]),
        ],
        {"V": rng.standard_normal((4, 16)).astype(np.float32), "c": np.zeros(16, np.float32)},
        4,
    )
    (path / "manifest.json").write_text(json.dumps({"latent_dim": 4, "image_shape": [4, 4]}))
    return path
