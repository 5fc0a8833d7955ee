"""Encoder + decoder pairs for the firmware score's tests (no tests of its own).

Encoders (x -> act(Gemm) ... -> Gemm mu, Gemm logvar) are built with onnx.helper and calibrated
on synthetic digit-like images (`sample_images`); `make_pair` writes an encoder and a mirrored
decoder (`support.firmware.build_fp32`) with a manifest, as an export folder for the score.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from support.firmware import Variant, build_fp32, quantize


@dataclass(frozen=True)
class Pair:
    """An encoder and a matching decoder (hidden sizes mirrored), as one export folder."""

    name: str
    latent: int = 8
    hidden: tuple[int, ...] = (64,)  # the encoder's; the decoder's are reversed
    shape: tuple[int, int] = (28, 28)
    act: str = "Relu"
    activation_type: str = "u8"
    per_channel: bool = True
    likelihood: str = "bernoulli"
    seed: int = 0

    @property
    def dim(self) -> int:
        return self.shape[0] * self.shape[1]

    def decoder(self) -> Variant:
        return Variant(
            f"{self.name}-decoder",
            latent=self.latent,
            hidden=tuple(reversed(self.hidden)),
            out=self.dim,
            act=self.act,
            activation_type=self.activation_type,
            per_channel=self.per_channel,
            ops=("Gemm",),
            seed=self.seed,
            shape=self.shape,
        )


PAIRS = {
    p.name: p
    for p in (
        Pair("firmware"),  # the firmware recipe's choices: u8, per-channel, 7-bit weights
        Pair("deep-odd", latent=5, hidden=(37, 22), shape=(9, 11), seed=2),  # padding everywhere
        Pair("s8", activation_type="s8", seed=3),
        Pair("tanh", act="Tanh", latent=6, hidden=(40,), seed=4),
        Pair("gaussian", latent=6, hidden=(48,), shape=(28, 20), likelihood="gaussian", seed=5),
    )
}
PAIRS_ORT_EXACT = ("firmware", "deep-odd", "gaussian")  # see ORT_EXACT for why not s8, tanh


def sample_images(shape: tuple[int, int], n: int, seed: int = 0) -> np.ndarray:
    """uint8 [n, H*W]: a few soft strokes per image on black (digit-like), seeded."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    images = np.zeros((n, h, w))
    for k in range(3):
        cy = rng.uniform(0.2, 0.8, (n, 1, 1)) * h
        cx = rng.uniform(0.2, 0.8, (n, 1, 1)) * w
        sy, sx = rng.uniform(0.8, 3.0, (2, n, 1, 1)) * (1.0 if k else 2.0)
        images += np.exp(-0.5 * (((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2))
    return np.clip(np.rint(images * 400), 0, 255).astype(np.uint8).reshape(n, h * w)


def score_images_for_tests(shape: tuple[int, int], n: int = 300, seed: int = 9) -> np.ndarray:
    """Digit-like images, their negatives, noise, and all-black / all-white / checkerboard."""
    rng = np.random.default_rng(seed)
    dim = shape[0] * shape[1]
    normal = sample_images(shape, n, seed)
    extremes = np.stack(
        [
            np.zeros(dim),
            np.full(dim, 255),
            (np.indices(shape).sum(axis=0) % 2 * 255).reshape(-1),
        ]
    )
    return np.concatenate(
        [
            normal,
            255 - normal[: n // 3],
            rng.integers(0, 256, (n // 3, dim)),
            rng.choice([0, 255], (n // 6, dim)),
            extremes,
        ]
    ).astype(np.uint8)


def build_encoder_fp32(path: Path, pair: Pair) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(pair.seed + 100)
    nodes, inits = [], []
    prev, fan = "x", pair.dim
    for i, width in enumerate(pair.hidden):
        w = rng.standard_normal((width, fan)) * 3.0 / np.sqrt(fan)
        b = rng.standard_normal(width) * 0.3 - 0.5
        inits += [
            numpy_helper.from_array(w.astype(np.float32), f"body.{i}.weight"),
            numpy_helper.from_array(b.astype(np.float32), f"body.{i}.bias"),
        ]
        gemm = helper.make_node(
            "Gemm", [prev, f"body.{i}.weight", f"body.{i}.bias"], [f"pre{i}"], transB=1
        )
        gemm.name = f"node_linear_{i}"
        nodes += [gemm, helper.make_node(pair.act, [f"pre{i}"], [f"h{i}"], name=f"node_act{i}")]
        prev, fan = f"h{i}", width
    for head, scale, offset in (("mu", 1.0, 0.0), ("logvar", 0.3, -1.5)):
        w = rng.standard_normal((pair.latent, fan)) * scale / np.sqrt(fan)
        b = rng.standard_normal(pair.latent) * 0.2 + offset
        inits += [
            numpy_helper.from_array(w.astype(np.float32), f"{head}.weight"),
            numpy_helper.from_array(b.astype(np.float32), f"{head}.bias"),
        ]
        nodes.append(
            helper.make_node(
                "Gemm",
                [prev, f"{head}.weight", f"{head}.bias"],
                [head],
                name=f"node_{head}",
                transB=1,
            )
        )
    graph = helper.make_graph(
        nodes,
        "encoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", pair.dim])],
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", pair.latent])
            for name in ("mu", "logvar")
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    for key, value in {
        "edgevae.latent_dim": str(pair.latent),
        "edgevae.image_shape": f"{pair.shape[0]},{pair.shape[1]}",
        "edgevae.precision": "fp32",
    }.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def make_pair(directory: Path, pair: Pair, threshold: dict | None = None) -> Path:
    """An export-like folder: static encoder and decoder, fp32 sources, manifest.json."""
    directory.mkdir(parents=True, exist_ok=True)
    enc_variant = Variant(
        f"{pair.name}-encoder",
        activation_type=pair.activation_type,
        per_channel=pair.per_channel,
        ops=("Gemm",),
    )
    calib = sample_images(pair.shape, 400, pair.seed + 1).astype(np.float32) / np.float32(255)
    build_encoder_fp32(directory / "encoder.fp32.onnx", pair)
    quantize(
        directory / "encoder.fp32.onnx", directory / "encoder.int8.static.onnx", enc_variant, calib
    )
    build_fp32(directory / "decoder.fp32.onnx", pair.decoder())
    quantize(
        directory / "decoder.fp32.onnx", directory / "decoder.int8.static.onnx", pair.decoder()
    )
    manifest = {
        "latent_dim": pair.latent,
        "image_shape": list(pair.shape),
        "likelihood": pair.likelihood,
        "firmware_decoder": "decoder.int8.static.onnx",
    }
    if pair.likelihood == "gaussian":
        rng = np.random.default_rng(pair.seed + 7)
        manifest["gaussian_logvar"] = rng.uniform(-5.0, -1.0, pair.dim).tolist()
    if threshold is not None:
        manifest["threshold"] = threshold
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


_PAIRS: dict[str, Path] = {}


def shared_pair(tmp_path_factory, name: str) -> Path:
    """One export folder per pair for the whole session (under pytest's tmp dirs)."""
    if name not in _PAIRS or not (_PAIRS[name] / "manifest.json").exists():
        _PAIRS[name] = make_pair(tmp_path_factory.mktemp(f"pair-{name}"), PAIRS[name])
    return _PAIRS[name]


def ort_encode_decode(export: Path, pixels: np.ndarray):
    """onnxruntime on the static pair: (mu, logvar, logits at z = mu), float32."""
    import onnxruntime as ort

    x = pixels.astype(np.float32) / np.float32(255)
    enc = ort.InferenceSession(
        str(export / "encoder.int8.static.onnx"), providers=["CPUExecutionProvider"]
    )
    dec = ort.InferenceSession(
        str(export / "decoder.int8.static.onnx"), providers=["CPUExecutionProvider"]
    )
    mu, logvar = enc.run(["mu", "logvar"], {"x": x})
    return mu, logvar, dec.run(["logits"], {"z": mu})[0]


def score_with(binary, pixels: np.ndarray, *args: str, prefix=(), timeout: float = 300):
    """Run a built edgevae_score on raw images; float32 [N] (or [N, k] with --parts)."""
    result = subprocess.run(
        [*prefix, str(binary), *args],
        input=np.ascontiguousarray(pixels, np.uint8).tobytes(),
        capture_output=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b"", result.stderr.decode()
    rows = [line.split() for line in result.stdout.decode().splitlines()]
    values = np.array(rows, dtype=np.float64).astype(np.float32)
    return values[:, 0] if values.shape[1] == 1 else values


def with_static_encoder(export: Path, dst: Path) -> Path:
    """A copy of a real export with encoder.int8.static.onnx: the firmware recipe on 500
    training images of the bundled digits, as .ci/run does, when quantize did not write it."""
    import shutil

    from edgevae.data.core import load_images
    from edgevae.quant.apply import apply_recipe, calibration_sets
    from edgevae.quant.recipes import RECIPES

    shutil.copytree(export, dst)
    if not (dst / "encoder.int8.static.onnx").exists():
        train, _ = load_images(None, split="train")
        x_cal, _ = calibration_sets(dst, train, 500, 0)
        apply_recipe(
            RECIPES["firmware"],
            dst / "encoder.fp32.onnx",
            dst / "encoder.int8.static.onnx",
            x_cal,
            "x",
        )
    return dst
