#!/usr/bin/env python3
"""Build a small stand-in export dir (random-weight 784-400-20 MLP VAE) with onnx.helper.

It follows the export contract (encoder `x` -> `mu`, `logvar`; decoder `z` -> `x_mean`, `logits`;
manifest.json with sha256s) so the cross-platform check can run before any model is trained.
The weights are random (std 1/sqrt(fan_in), fixed seed); nothing here is a trained model.

Files written (all checked by `edgevae crosscheck run`):
  encoder.fp32.onnx  decoder.fp32.onnx          float
  encoder.int8.onnx  decoder.int8.onnx          quantize_static, QDQ, u8 activations, s8 weights
                                                per channel, Gemm only, MinMax, reduce_range=True
                                                (7-bit weights: no int16 saturation on AVX2)
  encoder.int8.dynamic.onnx decoder.int8.dynamic.onnx
                                                quantize_dynamic, s8 weights per channel
  with --full-range also
  encoder.int8.fullrange.onnx decoder.int8.fullrange.onnx
                                                the static recipe with reduce_range=False: not
                                                bit-exact between AVX2-only x86 and ARM (u8 x s8
                                                pairs saturate int16 in vpmaddubsw)

Needs `onnx` (the train extra) on the host; the device side never runs this.
Usage: python arm/make_fixture_export.py --out build/arm/fixture-export [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

H, W = 28, 28
D, HID, L = H * W, 400, 20
OPSET = 17


def _dense(rng: np.random.Generator, fan_in: int, fan_out: int, name: str):
    from onnx import numpy_helper

    w = (rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in)).astype(np.float32)
    b = (rng.standard_normal(fan_out) * 0.1).astype(np.float32)
    return [
        numpy_helper.from_array(w, f"{name}.weight"),
        numpy_helper.from_array(b, f"{name}.bias"),
    ]


def _gemm(name: str, inp: str, out: str):
    from onnx import helper

    return helper.make_node(
        "Gemm", [inp, f"{name}.weight", f"{name}.bias"], [out], name=f"/{name}/Gemm", transB=1
    )


def _model(nodes, inits, inputs, outputs, precision: str, recipe: str):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        "edgevae_fixture",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", d]) for n, d in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", d]) for n, d in outputs],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    meta = {
        "edgevae.version": "fixture",
        "edgevae.latent_dim": str(L),
        "edgevae.image_shape": f"{H},{W}",
        "edgevae.likelihood": "bernoulli",
        "edgevae.precision": precision,
        "edgevae.recipe": recipe,
    }
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model


def build_float_models(seed: int):
    from onnx import helper

    rng = np.random.default_rng(seed)
    enc_inits = (
        _dense(rng, D, HID, "enc.fc")
        + _dense(rng, HID, L, "enc.mu")
        + _dense(rng, HID, L, "enc.logvar")
    )
    enc_nodes = [
        _gemm("enc.fc", "x", "h_pre"),
        helper.make_node("Relu", ["h_pre"], ["h"], name="/enc/Relu"),
        _gemm("enc.mu", "h", "mu"),
        _gemm("enc.logvar", "h", "logvar"),
    ]
    encoder = _model(enc_nodes, enc_inits, [("x", D)], [("mu", L), ("logvar", L)], "fp32", "fp32")
    dec_inits = _dense(rng, L, HID, "dec.fc") + _dense(rng, HID, D, "dec.out")
    dec_nodes = [
        _gemm("dec.fc", "z", "h_pre"),
        helper.make_node("Relu", ["h_pre"], ["h"], name="/dec/Relu"),
        _gemm("dec.out", "h", "logits"),
        helper.make_node("Sigmoid", ["logits"], ["x_mean"], name="/dec/Sigmoid"),
    ]
    decoder = _model(
        dec_nodes, dec_inits, [("z", L)], [("x_mean", D), ("logits", D)], "fp32", "fp32"
    )
    return encoder, decoder


class _Reader:
    """CalibrationDataReader over a fixed float32 array, in batches of 32."""

    def __init__(self, name: str, data: np.ndarray):
        self._batches = [{name: data[i : i + 32]} for i in range(0, len(data), 32)]
        self._it = iter(self._batches)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self._batches)


def calibration_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    # image-like calibration: sparse strokes on a dark background, 8-bit levels
    x = np.zeros((256, D), np.float32)
    for i in range(len(x)):
        img = np.zeros((H, W))
        for _ in range(rng.integers(2, 6)):
            cy, cx = rng.integers(4, H - 4), rng.integers(4, W - 4)
            r = rng.uniform(2.0, 5.0)
            yy, xx = np.mgrid[:H, :W]
            img = np.maximum(img, np.clip(1.0 - ((yy - cy) ** 2 + (xx - cx) ** 2) / r**2, 0, 1))
        x[i] = np.rint(img.ravel() * 255) / 255
    z = rng.standard_normal((512, L)).astype(np.float32)
    return x, z


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(out: Path, seed: int = 0, full_range: bool = False) -> Path:
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    logging.getLogger().setLevel(logging.ERROR)  # quantize_*'s "consider pre-processing" hints
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fixture-", dir=out.parent))
    try:
        encoder, decoder = build_float_models(seed)
        onnx.save(encoder, tmp / "encoder.fp32.onnx")
        onnx.save(decoder, tmp / "decoder.fp32.onnx")
        cal_x, cal_z = calibration_data(seed)
        recipes = {}
        static = [("int8", True)] + ([("int8.fullrange", False)] if full_range else [])
        for part, inp, cal in (("encoder", "x", cal_x), ("decoder", "z", cal_z)):
            src = tmp / f"{part}.fp32.onnx"
            quantize_dynamic(
                # quantize_dynamic rewrites Gemm into MatMul + Add and quantizes the MatMul
                src,
                tmp / f"{part}.int8.dynamic.onnx",
                per_channel=True,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Gemm"],
            )
            recipes[f"{part}.int8.dynamic.onnx"] = "dynamic: s8 weights per channel, u8 activations"
            for suffix, rr in static:
                quantize_static(
                    src,
                    tmp / f"{part}.{suffix}.onnx",
                    _Reader(inp, cal),
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    reduce_range=rr,
                    op_types_to_quantize=["Gemm"],
                    calibrate_method=CalibrationMethod.MinMax,
                )
                recipes[f"{part}.{suffix}.onnx"] = (
                    "static QDQ MinMax: u8 activations, s8 weights per channel, Gemm only, "
                    + ("reduce_range" if rr else "full range")
                )
        for p in tmp.glob("*.onnx.data"):
            p.unlink()
        manifest = {
            "edgevae_version": "fixture",
            "fixture": True,
            "note": "random weights made by arm/make_fixture_export.py; not a trained model",
            "latent_dim": L,
            "image_shape": [H, W],
            "likelihood": "bernoulli",
            "recipe": {"name": "fixture", "seed": seed, "files": recipes},
            "files": {p.name: {"sha256": _sha256(p)} for p in sorted(tmp.glob("*.onnx"))},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.chmod(0o755)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("build/arm/fixture-export"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--full-range",
        action="store_true",
        help="also write *.int8.fullrange.onnx (static, reduce_range=False)",
    )
    args = ap.parse_args(argv)
    try:
        import onnx  # noqa: F401
    except ImportError:
        print(
            "make_fixture_export: needs the 'onnx' package (pip install -e '.[train]')",
            file=sys.stderr,
        )
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out = build(args.out, args.seed, args.full_range)
    names = sorted(p.name for p in out.glob("*.onnx"))
    print(f"fixture export: {out} ({len(names)} models: {', '.join(names)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
