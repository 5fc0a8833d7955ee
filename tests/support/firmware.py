"""Model builders and tool helpers shared by the firmware tests (no tests of its own).

Decoders are built with onnx.helper in the exporter's layout (Gemm transB=1 -> act -> ... ->
Gemm -> Sigmoid, outputs x_mean and logits) and quantized with quantize_static from a seeded
calibration reader: z ~ N(0, I) plus a quarter of the draws scaled by 2.5. Encoder + decoder
pairs for the score live in `support.firmware_score`.
"""

from __future__ import annotations

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


# ------------------------------------------------------------------------------------ tools


#: The firmware_demo make targets that run under QEMU, and the tools each needs.
TARGETS = {
    "run-m4": ("arm-none-eabi-gcc", "qemu-system-arm"),
    "run-m33": ("arm-none-eabi-gcc", "qemu-system-arm"),
    "run-aarch64": ("aarch64-linux-gnu-gcc", "qemu-aarch64-static"),
    "run-armv7": ("arm-linux-gnueabihf-gcc", "qemu-arm-static"),
}
#: make arguments for a demo of 32 latents with extreme values (EDGEVAE_DEMO_WIDE).
WIDE = ("DEMO_FLAGS=-DDEMO_COUNT=32 -DEDGEVAE_DEMO_WIDE",)


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


def parity_rows_with_c(export: Path, tmp_path: Path, n: int, weight_bits: int = 8) -> dict:
    """`parity_grid`'s rows by name, its C row from a host decoder built (gcc, make) from the
    export's firmware with `weight_bits` weights."""
    from edgevae.bench import parity
    from edgevae.firmware.deploy import write_firmware

    need_tools("gcc", "make")
    write_firmware(export, tmp_path / "fw", sources=False, command="t", weight_bits=weight_bits)
    binary = tmp_path / "build" / "host" / "edgevae_decode"
    make(tmp_path / "fw", tmp_path / "build", str(binary))
    _, rows = parity.parity_grid(export, n=n, torch_row=False, firmware=binary)
    return {r.name: r for r in rows}
