"""What the cross-CPU check tells its reader: reference vs candidate results files compared,
one block of lines per target, the JSON report and the one-line summary (targets, the largest
difference per kind of model, PASS/FAIL).

Only numpy is imported: `arm/run_check.py` renders on the host what the emulated targets wrote.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from .compare import DEFAULT_TOLERANCES, KIND_ORDER, PNG, Report, compare
from .results import load_results


def compare_files(
    reference: str | os.PathLike,
    candidates: Iterable[str | os.PathLike],
    tolerances: Mapping[str, float | None] | None = None,
) -> list[Report]:
    """Each candidate results file checked against the reference results file."""
    ref = load_results(reference)
    return [compare(ref, load_results(path), tolerances) for path in candidates]


def report_dict(
    reports: list[Report], tolerances: Mapping[str, float | None] | None = None
) -> dict:
    """The JSON report: pass/fail, the tolerances used, every check, the summary line."""
    return {
        "passed": bool(reports) and all(r.passed for r in reports),
        "tolerances": {**DEFAULT_TOLERANCES, **(tolerances or {})},
        "reports": [r.to_dict() for r in reports],
        "summary": summary_line(reports, tolerances=tolerances),
    }


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
