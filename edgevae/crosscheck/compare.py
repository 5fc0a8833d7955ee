"""The comparison of the cross-CPU check: the kinds of model and their tolerances, one output
or the sample PNG against its reference, and one candidate run against the reference run.

- static int8 models (QDQ / QOperator, fixed scales): bit-exact, every output bit equal;
- dynamic int8 models (DynamicQuantizeLinear + MatMulInteger): the max abs diff is reported and
  does not fail the check, because the integer GEMM kernels differ between CPUs
  (e.g. u8 x s8 saturates on AVX2 without VNNI and does not on ARM);
- fp32 models: max abs diff <= 1e-6;
- the PNG written by `edgevae sample`: identical bytes, otherwise the largest pixel difference
  is reported.

Only numpy is imported (Pillow lazily, to decode differing PNGs): `arm/run_check.py` compares
on the host what the emulated targets wrote.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import EdgeVAEError

if TYPE_CHECKING:
    from .results import Results

FP32 = "fp32"
STATIC = "int8-static"
DYNAMIC = "int8-dynamic"
INT4 = "int4"
FP16 = "fp16"
PNG = "png"
INPUT = "input"

#: Max abs diff allowed per kind; None = reported only (never fails the check).
DEFAULT_TOLERANCES: dict[str, float | None] = {
    FP32: 1e-6,
    STATIC: 0.0,  # bit-exact
    DYNAMIC: None,
    INT4: None,
    FP16: None,
    PNG: 0.0,  # identical bytes
}
KIND_ORDER = (STATIC, DYNAMIC, INT4, FP16, FP32, PNG)

#: Why a kind is reported only (shown in the report when the kind is present).
KIND_NOTES = {
    DYNAMIC: "dynamic int8 may differ across CPUs (activation scales come from each batch and "
    "the integer GEMM kernel depends on the instruction set); reported, not required to match",
    INT4: "4-bit weight-only models (MatMulNBits) use CPU-specific kernels and float "
    "accumulation; reported, not required to match",
    FP16: "fp16 models compute in half precision on CPUs with FP16 arithmetic (Cortex-A76, "
    "Pi 5) and in float32 elsewhere; reported, not required to match",
}

SATURATION_NOTE = (
    "{} is x86-64 with AVX2 but no AVX-512 VNNI: onnxruntime's u8 x s8 kernel (vpmaddubsw) "
    "saturates pairs of products at int16 there (seen with s8 activations too), "
    "while ARM and VNNI sum exactly; quantize with reduce_range=True (7-bit weights) or u8 "
    "weights for the same int8 results everywhere"
)


class CrosscheckError(EdgeVAEError):
    """A results file, export dir or argument the check cannot use (exit status 2)."""

    exit_code = 2


# --------------------------------------------------------------------------- comparison


def _saturating_x86(info: Mapping) -> bool:
    """An x86-64 CPU where u8 x s8 int8 GEMM goes through int16-saturating vpmaddubsw."""
    features = set(info.get("numpy_cpu_features") or ())
    return (
        info.get("machine") in ("x86_64", "AMD64")
        and "AVX2" in features
        and "AVX512VNNI" not in features
    )


@dataclass
class Check:
    """One compared quantity: an input, a model output, or the sample PNG."""

    name: str
    kind: str
    passed: bool
    max_abs_diff: float | None = None
    n_different: int = 0
    size: int = 0
    tolerance: float | None = None
    note: str = ""


@dataclass
class Report:
    """The comparison of one candidate run against a reference run."""

    reference: str
    candidate: str
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def max_diff(self, kind: str) -> float | None:
        values = [
            c.max_abs_diff for c in self.checks if c.kind == kind and c.max_abs_diff is not None
        ]
        return max(values) if values else None

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "passed": self.passed,
            "max_abs_diff": {k: _json_float(self.max_diff(k)) for k in KIND_ORDER},
            "notes": self.notes,
            "checks": [
                {**asdict(c), "max_abs_diff": _json_float(c.max_abs_diff)} for c in self.checks
            ],
        }


def _json_float(value: float | None):
    if value is None or np.isfinite(value):
        return value
    return str(value)


def _diff(ref: np.ndarray, cand: np.ndarray) -> tuple[float, int]:
    """(max abs diff over finite pairs or inf on a NaN/inf mismatch, number of bitwise-unequal)."""
    if ref.dtype.kind == "f":
        bits = np.dtype(f"u{ref.dtype.itemsize}")
        unequal = ref.view(bits) != cand.view(bits)
        same_nan = np.isnan(ref) & np.isnan(cand)
        unequal &= ~same_nan
        if not unequal.any():
            return 0.0, 0
        r, c = ref[unequal].astype(np.float64), cand[unequal].astype(np.float64)
        with np.errstate(invalid="ignore"):
            delta = np.abs(r - c)
        delta[~np.isfinite(delta) & (r != c)] = np.inf  # NaN vs number, inf vs number
        delta[np.isnan(delta)] = 0.0  # inf vs same inf cannot reach here; keep it defined
        return float(delta.max()), int(unequal.sum())
    unequal = ref != cand
    if not unequal.any():
        return 0.0, 0
    delta = np.abs(ref[unequal].astype(np.float64) - cand[unequal].astype(np.float64))
    return float(delta.max()), int(unequal.sum())


def compare_arrays(
    name: str, kind: str, ref: np.ndarray, cand: np.ndarray | None, tolerance: float | None
) -> Check:
    """One output against its reference with the kind's tolerance (None = report only)."""
    if cand is None:
        return Check(name, kind, False, note="missing in the candidate")
    if ref.shape != cand.shape or ref.dtype != cand.dtype:
        return Check(
            name,
            kind,
            False,
            size=int(ref.size),
            note=f"shape/dtype {cand.shape} {cand.dtype} != reference {ref.shape} {ref.dtype}",
        )
    max_diff, n_diff = _diff(ref, cand)
    if tolerance is None:
        passed = True
        note = "reported only" if n_diff else ""
    elif tolerance == 0:
        passed = n_diff == 0
        note = "" if passed else f"{n_diff} of {ref.size} values differ (bit-exact required)"
    else:
        passed = max_diff <= tolerance
        note = "" if passed else f"max abs diff {max_diff:.3g} > {tolerance:g}"
    return Check(name, kind, passed, max_diff, n_diff, int(ref.size), tolerance, note)


def compare_png(
    ref: bytes | None, cand: bytes | None, tolerance: float | None = 0.0, note: str = ""
) -> Check:
    """Sample PNGs: identical bytes pass; otherwise the largest pixel difference is reported."""
    if ref is None or cand is None:
        missing = "reference" if ref is None else "candidate"
        return Check("sample.png", PNG, False, note=f"no sample PNG in the {missing}")
    if ref == cand:
        return Check("sample.png", PNG, True, 0.0, 0, len(ref), tolerance, note)
    try:
        from PIL import Image

        a = np.asarray(Image.open(io.BytesIO(ref)))
        b = np.asarray(Image.open(io.BytesIO(cand)))
    except Exception as exc:  # noqa: BLE001 - undecodable PNG is a difference, not a crash
        return Check(
            "sample.png",
            PNG,
            tolerance is None,
            float("inf"),
            1,
            len(ref),
            tolerance,
            f"PNG bytes differ and could not be decoded: {exc}",
        )
    if a.shape != b.shape:
        return Check(
            "sample.png",
            PNG,
            tolerance is None,
            float("inf"),
            int(a.size),
            int(a.size),
            tolerance,
            f"PNG bytes differ: image shapes {b.shape} != {a.shape}",
        )
    delta = np.abs(a.astype(np.int64) - b.astype(np.int64))
    max_diff, n_diff = float(delta.max()), int(np.count_nonzero(delta))
    passed = tolerance is None or (tolerance > 0 and max_diff <= tolerance)
    text = (
        f"PNG bytes differ: largest pixel difference {max_diff:g}, "
        f"{n_diff} of {a.size} pixel values differ"
    )
    return Check(
        "sample.png",
        PNG,
        passed,
        max_diff,
        n_diff,
        int(a.size),
        tolerance,
        f"{text}; {note}" if note else text,
    )


def _platform_notes(reference: Results, candidate: Results) -> list[str]:
    notes = []
    for key in ("numpy", "onnxruntime", "python"):
        r = reference.meta.get("platform", {}).get(key)
        c = candidate.meta.get("platform", {}).get(key)
        if r != c:
            notes.append(f"{key} {c} on {candidate.label}, {r} on {reference.label}")
    return notes


def _input_checks(reference: Results, candidate: Results) -> list[Check]:
    checks = []
    for name, ref in sorted(reference.inputs.items()):
        check = compare_arrays(f"input {name}", INPUT, ref, candidate.inputs.get(name), 0.0)
        if not check.passed:
            check.note = f"inputs differ ({check.note or 'missing'}): outputs are not comparable"
        checks.append(check)
    return checks


def _model_checks(reference: Results, candidate: Results) -> list[Check]:
    """A model the candidate did not run, or ran from other bytes, fails on its own."""
    checks = []
    cmodels = candidate.meta.get("models", {})
    for stem, info in sorted(reference.meta.get("models", {}).items()):
        cinfo = cmodels.get(stem)
        if cinfo is None:
            checks.append(Check(stem, info["kind"], False, note="model not run"))
        elif cinfo.get("sha256") != info.get("sha256"):
            checks.append(
                Check(stem, info["kind"], False, note="different model file (sha256 differs)")
            )
    return checks


def _output_checks(
    reference: Results, candidate: Results, tol: Mapping[str, float | None]
) -> list[Check]:
    kinds = {stem: info["kind"] for stem, info in reference.meta.get("models", {}).items()}
    checks = []
    for name, ref in sorted(reference.outputs.items()):
        kind = kinds.get(name.split("/", 1)[0], FP32)
        checks.append(compare_arrays(name, kind, ref, candidate.outputs.get(name), tol.get(kind)))
    return checks


def _saturation_note(reference: Results, candidate: Results, checks: list[Check]) -> str | None:
    """The AVX2-without-VNNI hint, when int8 results differ and either side is such a CPU."""
    if not any(
        (c.kind == STATIC and not c.passed) or (c.kind == DYNAMIC and (c.max_abs_diff or 0) > 1e-4)
        for c in checks
    ):
        return None
    for results in (reference, candidate):
        if _saturating_x86(results.meta.get("platform", {})):
            return SATURATION_NOTE.format(results.label)
    return None


def _png_checks(
    reference: Results, candidate: Results, tol: Mapping[str, float | None]
) -> tuple[list[Check], list[str]]:
    """(checks, notes) for the sample PNG; a failed sample run fails even without a PNG."""
    rs, cs = reference.meta.get("sample", {}), candidate.meta.get("sample", {})
    if reference.png is not None or candidate.png is not None:
        png_tol, note = tol.get(PNG), ""
        decoder_kind = rs.get("decoder_kind")
        if decoder_kind not in (STATIC, None):
            png_tol = None
            note = f"decoder.int8 is {decoder_kind}, not static int8, so the PNG is reported only"
        check = compare_png(reference.png, candidate.png, png_tol, note)
        if candidate.png is None and cs.get("message"):
            check.note += f" ({cs.get('status')}: {cs['message']})"
        return [check], []
    checks = [
        Check("sample.png", PNG, False, note=f"sample failed on {label}: {status['message']}")
        for label, status in ((reference.label, rs), (candidate.label, cs))
        if status.get("status") == "failed"
    ]
    if checks:
        return checks, []
    return [], [f"sample PNG not compared: {rs.get('message') or 'not run'}"]


def compare(
    reference: Results, candidate: Results, tolerances: Mapping[str, float | None] | None = None
) -> Report:
    """Check a candidate run against the reference run (tolerances override the defaults)."""
    tol = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    report = Report(reference.label, candidate.label)
    report.notes.extend(_platform_notes(reference, candidate))
    report.checks.extend(_input_checks(reference, candidate))
    report.checks.extend(_model_checks(reference, candidate))
    report.checks.extend(_output_checks(reference, candidate, tol))
    extra = sorted(set(candidate.outputs) - set(reference.outputs))
    if extra:
        report.notes.append(f"outputs only in {candidate.label}: {', '.join(extra)}")
    for kind, note in KIND_NOTES.items():
        if tol.get(kind) is None and any(c.kind == kind for c in report.checks):
            report.notes.append(note)
    saturation = _saturation_note(reference, candidate, report.checks)
    if saturation:
        report.notes.append(saturation)
    png_checks, png_notes = _png_checks(reference, candidate, tol)
    report.checks.extend(png_checks)
    report.notes.extend(png_notes)
    return report
