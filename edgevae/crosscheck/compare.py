"""The comparison side of `python -m edgevae.crosscheck`: the results file both sides share, the
kinds of model and their tolerances, one candidate run checked against the reference run, the
per-target report and the one-line summary.

Only numpy is imported (Pillow lazily, to decode differing PNGs): `arm/run_check.py` compares
on the host what the emulated targets wrote.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "edgevae.crosscheck/1"

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
DYNAMIC_NOTE = KIND_NOTES[DYNAMIC]

SATURATION_NOTE = (
    "{} is x86-64 with AVX2 but no AVX-512 VNNI: onnxruntime's u8 x s8 kernel (vpmaddubsw) "
    "saturates pairs of products at int16 there (seen with s8 activations too), "
    "while ARM and VNNI sum exactly; quantize with reduce_range=True (7-bit weights) or u8 "
    "weights for the same int8 results everywhere"
)


class CrosscheckError(Exception):
    """A results file, export dir or argument that cannot be used (exit status 2)."""


# --------------------------------------------------------------------------- results files


@dataclass
class Results:
    """One run: inputs, outputs, the sample PNG bytes (or None) and metadata."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    meta: dict
    png: bytes | None = None

    @property
    def label(self) -> str:
        return str(self.meta.get("label") or self.meta.get("platform", {}).get("machine", "?"))


def save_results(path: str | os.PathLike, results: Results) -> Path:
    """Write the results as .npz: arrays under in/ out/ png/, metadata as a JSON string."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(results.meta, sort_keys=True))}
    for name, value in results.inputs.items():
        arrays[f"in/{name}"] = np.asarray(value)
    for name, value in results.outputs.items():
        arrays[f"out/{name}"] = np.asarray(value)
    if results.png is not None:
        arrays["png/sample"] = np.frombuffer(results.png, np.uint8)
    if any(a.dtype.hasobject for a in arrays.values()):
        raise CrosscheckError("refusing to save object arrays (they would need pickle)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)
    return path


def load_results(path: str | os.PathLike) -> Results:
    """Read a results .npz written by `save_results` (allow_pickle=False)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as exc:
        raise CrosscheckError(f"{path}: not a crosscheck results file ({exc})") from None
    if "meta" not in arrays:
        raise CrosscheckError(f"{path}: not a crosscheck results file (no meta)")
    meta = json.loads(str(arrays.pop("meta")))
    if meta.get("format") != FORMAT:
        raise CrosscheckError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    png = arrays.pop("png/sample", None)
    return Results(
        inputs={k[3:]: v for k, v in arrays.items() if k.startswith("in/")},
        outputs={k[4:]: v for k, v in arrays.items() if k.startswith("out/")},
        meta=meta,
        png=None if png is None else png.tobytes(),
    )


def _array_summary(a: np.ndarray) -> dict:
    summary = {
        "shape": list(a.shape),
        "dtype": str(a.dtype),
        "sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest(),
    }
    if a.size and np.issubdtype(a.dtype, np.number):
        summary.update(
            min=float(np.nanmin(a)),
            max=float(np.nanmax(a)),
            mean=float(np.nanmean(a.astype(np.float64))),
        )
    return summary


def results_summary(results: Results) -> dict:
    """JSON-ready description of a run (no arrays): meta plus shape/sha256/range per output."""
    return {
        **results.meta,
        "inputs": {k: _array_summary(v) for k, v in results.inputs.items()},
        "outputs": {k: _array_summary(v) for k, v in results.outputs.items()},
        "png_sha256": None if results.png is None else hashlib.sha256(results.png).hexdigest(),
    }


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


def compare(
    reference: Results, candidate: Results, tolerances: Mapping[str, float | None] | None = None
) -> Report:
    """Check a candidate run against the reference run."""
    tol = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    report = Report(reference.label, candidate.label)
    rmeta, cmeta = reference.meta, candidate.meta
    for key in ("numpy", "onnxruntime", "python"):
        r, c = rmeta.get("platform", {}).get(key), cmeta.get("platform", {}).get(key)
        if r != c:
            report.notes.append(f"{key} {c} on {candidate.label}, {r} on {reference.label}")

    for name, ref in sorted(reference.inputs.items()):
        check = compare_arrays(f"input {name}", INPUT, ref, candidate.inputs.get(name), 0.0)
        if not check.passed:
            check.note = f"inputs differ ({check.note or 'missing'}): outputs are not comparable"
        report.checks.append(check)

    rmodels, cmodels = rmeta.get("models", {}), cmeta.get("models", {})
    for stem, info in sorted(rmodels.items()):
        cinfo = cmodels.get(stem)
        if cinfo is None:
            report.checks.append(Check(stem, info["kind"], False, note="model not run"))
            continue
        if cinfo.get("sha256") != info.get("sha256"):
            report.checks.append(
                Check(stem, info["kind"], False, note="different model file (sha256 differs)")
            )
            continue
    kinds = {stem: info["kind"] for stem, info in rmodels.items()}
    for name, ref in sorted(reference.outputs.items()):
        stem = name.split("/", 1)[0]
        kind = kinds.get(stem, FP32)
        report.checks.append(
            compare_arrays(name, kind, ref, candidate.outputs.get(name), tol.get(kind))
        )
    extra = sorted(set(candidate.outputs) - set(reference.outputs))
    if extra:
        report.notes.append(f"outputs only in {candidate.label}: {', '.join(extra)}")
    for kind, note in KIND_NOTES.items():
        if tol.get(kind) is None and any(c.kind == kind for c in report.checks):
            report.notes.append(note)

    if any(
        (c.kind == STATIC and not c.passed) or (c.kind == DYNAMIC and (c.max_abs_diff or 0) > 1e-4)
        for c in report.checks
    ):
        for results in (reference, candidate):
            if _saturating_x86(results.meta.get("platform", {})):
                report.notes.append(SATURATION_NOTE.format(results.label))
                break

    rs, cs = rmeta.get("sample", {}), cmeta.get("sample", {})
    if reference.png is not None or candidate.png is not None:
        png_tol, note = tol.get(PNG), ""
        decoder_kind = rs.get("decoder_kind")
        if decoder_kind not in (STATIC, None):
            png_tol = None
            note = f"decoder.int8 is {decoder_kind}, not static int8, so the PNG is reported only"
        check = compare_png(reference.png, candidate.png, png_tol, note)
        if candidate.png is None and cs.get("message"):
            check.note += f" ({cs.get('status')}: {cs['message']})"
        report.checks.append(check)
    else:
        for label, status in ((reference.label, rs), (candidate.label, cs)):
            if status.get("status") == "failed":
                report.checks.append(
                    Check(
                        "sample.png",
                        PNG,
                        False,
                        note=f"sample failed on {label}: {status['message']}",
                    )
                )
        if not any(c.kind == PNG for c in report.checks):
            report.notes.append(f"sample PNG not compared: {rs.get('message') or 'not run'}")
    return report


# --------------------------------------------------------------------------- summary


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    return f"{value:.3g}"


def summary_line(
    reports: list[Report],
    failed_runs: Mapping[str, str] | None = None,
    skipped: Mapping[str, str] | None = None,
    tolerances: Mapping[str, float | None] | None = None,
) -> str:
    """One line: targets, max abs diff per kind over all targets, PASS/FAIL (SKIP).

    `failed_runs` ({target: reason}) are targets whose run did not produce results; they fail
    the summary. `skipped` targets are listed but do not fail it; with every target skipped
    the line ends in SKIP.
    """
    failed_runs = dict(failed_runs or {})
    skipped = dict(skipped or {})
    targets = [r.candidate for r in reports]
    ref = reports[0].reference if reports else "?"
    parts = []
    tol = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    for kind in KIND_ORDER:
        values = [r.max_diff(kind) for r in reports if r.max_diff(kind) is not None]
        if not values:
            continue
        worst = max(values)
        if kind == PNG:
            same = all(c.n_different == 0 for r in reports for c in r.checks if c.kind == PNG)
            parts.append(
                "sample PNG identical" if same else f"sample PNG max pixel diff {_fmt(worst)}"
            )
        elif tol.get(kind) is None:
            parts.append(f"{kind} {_fmt(worst)} (reported; may differ across CPUs)")
        elif tol[kind] == 0:
            parts.append(f"{kind} {_fmt(worst)} (bit-exact required)")
        else:
            parts.append(f"{kind} {_fmt(worst)} (<= {tol[kind]:g})")
    if not any(c.kind == PNG for r in reports for c in r.checks):
        parts.append("sample PNG not checked (see notes)")
    n_fail = sum(len(r.failures()) for r in reports) + len(failed_runs)
    ok = n_fail == 0 and bool(reports)
    target_text = ", ".join(targets + [f"{t} (run failed)" for t in failed_runs]) or "none"
    text = f"crosscheck: {len(targets) + len(failed_runs)} target(s) [{target_text}] vs {ref}"
    if skipped:
        text += f"; skipped [{', '.join(skipped)}]"
    text += f"; max |diff|: {', '.join(parts) if parts else 'none'}"
    if not reports and skipped and not n_fail:
        return f"{text}; nothing compared; SKIP"  # every target skipped (not a failure)
    if not ok:
        text += f"; {n_fail} failure(s)" if n_fail else "; nothing compared"
    return f"{text}; {'PASS' if ok else 'FAIL'}"


def render_report(report: Report) -> list[str]:
    """Human-readable lines for one candidate (failures and notes; passes are counted)."""
    status = "PASS" if report.passed else "FAIL"
    lines = [
        f"{report.candidate} vs {report.reference}: {status}, "
        f"{sum(c.passed for c in report.checks)}/{len(report.checks)} checks passed"
    ]
    for kind in KIND_ORDER:
        checks = [c for c in report.checks if c.kind == kind]
        if checks:
            exact = sum(c.n_different == 0 for c in checks)
            worst = max(checks, key=lambda c: c.max_abs_diff or 0.0)
            where = f" (worst: {worst.name})" if worst.max_abs_diff else ""
            lines.append(
                f"  {kind:13s} max |diff| {_fmt(report.max_diff(kind)):>9s}   "
                f"{exact}/{len(checks)} bit-identical{where}"
            )
    for c in report.checks:
        if not c.passed or (c.kind == PNG and c.n_different):
            lines.append(f"  {'FAIL' if not c.passed else 'note'} {c.name}: {c.note}")
    lines.extend(f"  note: {n}" for n in report.notes)
    return lines
