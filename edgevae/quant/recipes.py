"""Quantization recipes and the hardware-aware choice of candidates (no onnx/torch imports).

Facts behind the defaults (measured; see README "Quantization"):
- x86 without VNNI multiplies u8 x s8 with VPMADDUBSW, whose 16-bit pair sums saturate
  when weights use the full int8 range (measured here: +6 nats on a small decoder, and
  outputs up to 100 quantization steps off the exact result that ARM computes);
  `reduce_range` (7-bit weights) avoids it and is bit-exact on AVX2, VNNI and ARM.
- int8 activations (s8 x s8) are several times slower than u8 x s8 on x86.
- Quantizing the logits (the last Gemm's output) costs most of the accuracy; runtime recipes
  keep Gemm outputs in float ("float_output"), the firmware recipe must quantize them.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Recipe:
    name: str
    method: str  # static | dynamic | int4 | fp16
    description: str
    activation: str = "u8"  # u8 | s8
    weight: str = "s8"  # s8 | u8
    per_channel: bool = False
    reduce_range: bool = False
    float_output: bool = True
    calibration: str = "minmax"  # minmax | percentile
    defaults: bool = False  # quantize_static with its own defaults (the baseline to beat)

    @property
    def is_static_integer(self) -> bool:
        """Fixed scales everywhere: what the C firmware and bit-exactness need."""
        return self.method == "static" and not self.float_output

    @property
    def exact_across_cpus(self) -> bool:
        """Same output bits on AVX2, VNNI and ARM (checked by `make test-arm`).

        x86 without VNNI sums u8 x s8 pairs in saturating 16-bit (VPMADDUBSW); s8
        activations are shifted to u8 first, so they saturate too. 7-bit weights or u8
        weights cannot overflow. Dynamic recipes compute scales in float per batch, which
        rounds differently across kernels.
        """
        if self.method != "static":
            return False
        return self.reduce_range or self.weight == "u8"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["exact_across_cpus"] = self.exact_across_cpus
        return d


_R = [
    Recipe(
        "static-pc",
        "static",
        "QDQ, u8 activations, s8 per-channel weights, float logits",
        per_channel=True,
    ),
    Recipe("static-pt", "static", "QDQ, u8 activations, s8 per-tensor weights, float logits"),
    Recipe(
        "static-pc-rr",
        "static",
        "as static-pc with 7-bit weights (no AVX2 saturation)",
        per_channel=True,
        reduce_range=True,
    ),
    Recipe("static-pt-rr", "static", "as static-pt with 7-bit weights", reduce_range=True),
    Recipe(
        "static-pc-pct",
        "static",
        "as static-pc-rr, percentile calibration",
        per_channel=True,
        reduce_range=True,
        calibration="percentile",
    ),
    Recipe(
        "static-s8-pc",
        "static",
        "QDQ, s8 activations and per-channel weights (ARM)",
        activation="s8",
        per_channel=True,
    ),
    Recipe(
        "static-u8u8-pt", "static", "QDQ, u8 activations and u8 per-tensor weights", weight="u8"
    ),
    Recipe(
        "dynamic-pc", "dynamic", "dynamic u8 activations, s8 per-channel weights", per_channel=True
    ),
    Recipe("dynamic-pt", "dynamic", "dynamic u8 activations, s8 per-tensor weights"),
    Recipe(
        "dynamic-pt-u8", "dynamic", "dynamic u8 activations, u8 per-tensor weights", weight="u8"
    ),
    Recipe(
        "static-default",
        "static",
        "quantize_static with default arguments (baseline)",
        activation="s8",
        float_output=False,
        defaults=True,
    ),
    Recipe(
        "firmware",
        "static",
        "QDQ everywhere incl. logits, u8/s8 per-channel, 7-bit "
        "weights: integer-only, exact across CPUs, what the C kernel runs",
        per_channel=True,
        reduce_range=True,
        float_output=False,
    ),
    Recipe("int4", "int4", "4-bit weight-only blockwise (MatMulNBits) after Gemm->MatMul"),
    Recipe("fp16", "fp16", "float16 weights and compute, float32 I/O"),
]
RECIPES: dict[str, Recipe] = {r.name: r for r in _R}
FIRMWARE = RECIPES["firmware"]
# The 4-bit firmware decoder (quant/int4.py writes it with these quantize_static options):
# the firmware recipe with every Gemm but the first on -8..7 per channel. Not a search
# candidate: it is written beside the int8 firmware pair.
FIRMWARE_INT4 = Recipe(
    "firmware-int4",
    "static",
    "as firmware, with 4-bit per-channel weights (-8..7 in int8 tensors) in every Gemm but "
    "the first: the C kernel packs them two per byte",
    per_channel=True,
    reduce_range=True,
    float_output=False,
)


@dataclass
class CpuInfo:
    arch: str
    model: str
    flags: frozenset[str]

    @property
    def vnni(self) -> bool:
        return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & self.flags)

    @property
    def arm_dotprod(self) -> bool:
        return "asimddp" in self.flags

    @property
    def kind(self) -> str:
        if self.arch in ("aarch64", "arm64"):
            return "arm-dotprod" if self.arm_dotprod else "arm"
        if self.vnni:
            return "x86-vnni"
        return "x86-avx2" if "avx2" in self.flags else "x86"

    def to_dict(self) -> dict:
        interesting = {
            "avx2",
            "avx512f",
            "avx512_vnni",
            "avx_vnni",
            "amx_int8",
            "fma",
            "asimd",
            "asimddp",
            "i8mm",
            "sve",
        }
        return {
            "arch": self.arch,
            "model": self.model,
            "kind": self.kind,
            "flags": sorted(self.flags & interesting),
        }


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    arch = platform.machine().lower()
    model, flags = platform.processor() or arch, set()
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("model name", "cpu model") and model in (arch, ""):
            model = value.strip()
    return CpuInfo(arch, model, frozenset(flags))


def gemm_format(recipe: Recipe, cpu: CpuInfo) -> str | None:
    """The integer GEMM kind onnxruntime runs for `recipe` on `cpu`, as the peak probe names
    it (`bench.peak.FORMATS`); None for int4/fp16, which have no int8 ceiling.

    Dynamic recipes quantize activations to u8. On x86 onnxruntime shifts the s8 activations
    of a QDQ graph with float Gemm outputs to u8 (measured: static-s8-pc runs as fast as
    static-pc here, while an s8 x s8 MatMulInteger runs at a fifth of fp32's speed); the
    baseline static-default quantizes its outputs too and keeps s8 x s8.
    """
    if recipe.method not in ("static", "dynamic"):
        return None
    if recipe.weight == "u8":
        return "u8u8"
    activation = "u8" if recipe.method == "dynamic" else recipe.activation
    if activation == "s8" and (recipe.defaults or cpu.arch in ("aarch64", "arm64")):
        return "s8s8"
    return "u8s8-7bit" if recipe.reduce_range else "u8s8"


def auto_candidates(cpu: CpuInfo) -> list[str]:
    """Recipes worth measuring on this CPU, most promising first."""
    return {
        "x86-vnni": ["static-pc", "static-pt", "dynamic-pc", "dynamic-pt"],
        # Full-range u8 x s8 saturates here (measured: +6 nats on a small decoder).
        "x86-avx2": ["static-pc-rr", "static-pt-rr", "static-u8u8-pt", "dynamic-pt-u8"],
        "x86": ["dynamic-pt-u8", "static-u8u8-pt", "dynamic-pt"],
        "arm-dotprod": ["static-s8-pc", "static-pc", "dynamic-pc"],
        "arm": ["static-pt", "dynamic-pt", "static-s8-pc"],
    }[cpu.kind]
