"""Model builders and tool helpers shared by the firmware tests (no tests of its own).

Decoders are built with onnx.helper in the exporter's layout (Gemm transB=1 -> act -> ... ->
Gemm -> Sigmoid, outputs x_mean and logits) and quantized with quantize_static from a seeded
calibration reader: z ~ N(0, I) plus a quarter of the draws scaled by 2.5. Encoders (x ->
act(Gemm) ... -> Gemm mu, Gemm logvar) are calibrated on synthetic images (`sample_images`);
`make_pair` writes both with a manifest, as an export folder for the score.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgevae.firmware.deploy import kernel_dir

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware_demo"  # the demo, bare-metal startup and the Makefile
KERNEL = kernel_dir()  # the C kernel and host decoder the package ships (firmware_demo uses them)
IN_CI = os.environ.get("CI", "").lower() == "true"


@dataclass(frozen=True)
class Variant:
    """One way to build and quantize a decoder."""

    name: str
    latent: int = 8
    hidden: tuple[int, ...] = (64,)
    out: int = 784
    act: str = "Relu"
    activation_type: str = "u8"
    per_channel: bool = True
    reduce_range: bool = True
    ops: tuple[str, ...] = ("Gemm",)
    matmul: bool = False  # MatMul + Add instead of Gemm
    mnist_like: bool = False  # output biases like a trained MNIST decoder (dark border)
    seed: int = 0
    shape: tuple[int, int] | None = None  # image shape metadata (default: square or 1 x out)


VARIANTS = {
    v.name: v
    for v in (
        Variant("firmware"),  # edgevae's firmware recipe: u8, per-channel, 7-bit weights
        Variant("mnist-like", latent=20, hidden=(96,), mnist_like=True, seed=1),
        Variant("relu-fused", ops=("Gemm", "Relu")),
        Variant("per-tensor", per_channel=False),
        Variant("s8", activation_type="s8"),
        Variant("tanh", act="Tanh"),
        Variant("deep", hidden=(48, 40), latent=5, out=100),
        Variant("odd", hidden=(37, 22), latent=5, out=99),  # padding in every dimension
        Variant("sigmoid-q", ops=("Gemm", "Relu", "Sigmoid")),
        Variant("full-range", reduce_range=False),
        Variant("matmul-add", matmul=True, ops=("MatMul", "Add")),
    )
}
# Variants onnxruntime itself computes exactly like the integer kernel (fused QGemm); see
# intref's docstring for why the others are not bit-exact against onnxruntime (s8: ORT 1.32
# leaves the second Gemm unfused and runs it in float).
ORT_EXACT = (
    "firmware",
    "mnist-like",
    "relu-fused",
    "per-tensor",
    "tanh",
    "deep",
    "odd",
    "sigmoid-q",
    "matmul-add",
)
ORT_CLOSE = ("s8", "full-range")


def build_fp32(path: Path, v: Variant) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(v.seed)
    nodes, inits = [], []
    prev, fan = "z", v.latent
    dims = [*v.hidden, v.out]
    for i, width in enumerate(dims):
        last = i == len(dims) - 1
        w = rng.standard_normal((width, fan)) / np.sqrt(fan) * (2.5 if last else 1.0)
        b = rng.standard_normal(width) * 0.3
        if last and v.mnist_like:
            side = int(round(np.sqrt(width)))
            yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
            b = np.where((xx**2 + yy**2).ravel() < (side / 3) ** 2, 0.5, -6.0)
        out = "logits" if last else f"pre{i}"
        if v.matmul:
            inits += [
                numpy_helper.from_array(w.T.astype(np.float32), f"w{i}"),
                numpy_helper.from_array(b.astype(np.float32), f"b{i}"),
            ]
            nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"mm{i}"], name=f"mm{i}"))
            nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [out], name=f"add{i}"))
        else:
            inits += [
                numpy_helper.from_array(w.astype(np.float32), f"fc{i}.weight"),
                numpy_helper.from_array(b.astype(np.float32), f"fc{i}.bias"),
            ]
            nodes.append(
                helper.make_node(
                    "Gemm",
                    [prev, f"fc{i}.weight", f"fc{i}.bias"],
                    [out],
                    name=f"node_gemm{i}",
                    transB=1,
                )
            )
        if last:
            nodes.append(helper.make_node("Sigmoid", [out], ["x_mean"], name="node_sigmoid"))
        else:
            nodes.append(helper.make_node(v.act, [out], [f"h{i}"], name=f"node_act{i}"))
            prev = f"h{i}"
        fan = width
    graph = helper.make_graph(
        nodes,
        "decoder",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", v.latent])],
        [
            helper.make_tensor_value_info("x_mean", TensorProto.FLOAT, ["N", v.out]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", v.out]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    side = int(round(np.sqrt(v.out)))
    shape = f"{side},{side}" if side * side == v.out else f"1,{v.out}"
    shape = f"{v.shape[0]},{v.shape[1]}" if v.shape else shape
    for key, value in {
        "edgevae.latent_dim": str(v.latent),
        "edgevae.image_shape": shape,
        "edgevae.precision": "fp32",
        "edgevae.recipe": "test",
    }.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def calibration_z(latent: int, n: int = 400, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, latent))
    return np.concatenate([z, 2.5 * z[: n // 4]]).astype(np.float32)


def quantize(src: Path, dst: Path, v: Variant, calib: np.ndarray | None = None) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    name = "z" if calib is None else "x"
    data = calibration_z(v.latent) if calib is None else calib

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{name: data[i : i + 50]} for i in range(0, len(data), 50)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8 if v.activation_type == "u8" else QuantType.QInt8,
        per_channel=v.per_channel,
        reduce_range=v.reduce_range,
        op_types_to_quantize=list(v.ops),
        calibrate_method=CalibrationMethod.MinMax,
    )
    return dst


def make_decoder(directory: Path, v: Variant) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    fp32 = build_fp32(directory / "decoder.fp32.onnx", v)
    return quantize(fp32, directory / "decoder.int8.static.onnx", v)


_DECODERS: dict[str, Path] = {}


def shared_decoder(tmp_path_factory, name: str) -> Path:
    """One quantized decoder per variant for the whole session (under pytest's tmp dirs)."""
    if name not in _DECODERS or not _DECODERS[name].exists():
        _DECODERS[name] = make_decoder(tmp_path_factory.mktemp(f"decoder-{name}"), VARIANTS[name])
    return _DECODERS[name]


def sample_latents(latent: int, n: int = 1200, seed: int = 7) -> np.ndarray:
    """Prior draws plus extremes: |z| up to 1e3, zeros, -0.0, tiny values, mixed signs."""
    rng = np.random.default_rng(seed)
    extremes = [
        np.zeros(latent),
        -np.zeros(latent),
        np.full(latent, 1e3),
        np.full(latent, -1e3),
        np.full(latent, 1e-30),
        np.full(latent, -1e-38),
    ]
    mixed = rng.choice([-1e3, 1e3, 0.0, -0.0, 0.5, -0.5, 1e-7, 37.5], (100, latent))
    return np.concatenate(
        [
            rng.standard_normal((n, latent)),
            3 * rng.standard_normal((n // 5, latent)),
            rng.uniform(-1e3, 1e3, (100, latent)),
            mixed,
            np.array(extremes),
        ]
    ).astype(np.float32)


def z_text(z: np.ndarray) -> str:
    """One line per vector; repr() of a float32 widened to float64 round-trips exactly."""

    def fmt(v: np.float32) -> str:
        return ("-0.0" if np.signbit(v) else "0") if v == 0 else repr(float(v))

    return "".join(" ".join(fmt(v) for v in row) + "\n" for row in z)


def ort_pixels(model: Path, z: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x_mean = session.run(["x_mean"], {"z": z})[0]
    return np.rint(x_mean.astype(np.float64) * 255).astype(np.int64)


# ------------------------------------------------------------------------ encoder + decoder


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


# ------------------------------------------------------------------------------------ tools


def need_tools(*names: str) -> None:
    """Skip when a tool is missing, except under CI=true where it must be installed."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        message = f"missing tools: {', '.join(missing)} (see firmware_demo/README.md)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def make(
    weights: Path, build: Path, *targets: str, timeout: float = 120, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    cmd = [
        "make",
        "-s",
        "-j2",
        "-C",
        str(FIRMWARE),
        f"WEIGHTS={weights}",
        f"BUILD={build}",
        *extra,
        *targets,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}"
    return result


def checksum_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("checksum: 0x")]
    assert len(lines) == 1, output
    return lines[0]


def decode_with(binary: Path, z: np.ndarray, timeout: float = 120) -> np.ndarray:
    result = subprocess.run(
        [str(binary)], input=z_text(z), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    values = np.fromstring(result.stdout, dtype=np.int64, sep=" ")  # text mode: not deprecated
    return values.reshape(len(z), -1)
