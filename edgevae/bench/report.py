"""The `edgevae bench` report: its types, the min_speedup/max_delta_nats gates, and how it is
shown (table cells for Rich and Markdown, summary lines) and written (`write_outputs`).

Every JSON key is documented in `bench`'s module docstring (a test holds them in step).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import fsio
from ..errors import one_line
from .peak import PEAK_SHAPE

SCHEMA = 1
REFERENCE = "ORT fp32"
DIFF_Z = 1000
PASSED, FAILED_VALIDATION, FAILED = "passed", "exported but failed validation", "failed"


# --------------------------------------------------------------------------- report types


@dataclass
class Latency:
    p50_us: float
    p90_us: float
    p99_us: float
    spread: float
    n_samples: int
    images_per_s: float
    gmac_per_s: float
    pct_of_peak: float | None = None
    speedup_vs_fp32: float | None = None
    cpu_p50_us: float = math.nan
    cpu_speedup_vs_fp32: float | None = None
    cpu_pct_of_peak: float | None = None
    share_of_ceiling: float | None = None
    cpu_share_of_ceiling: float | None = None


@dataclass
class Row:
    name: str
    runtime: str
    precision: str
    recipe: str | None = None
    encoder_file: str | None = None
    decoder_file: str | None = None
    note: str = ""
    format: str | None = None
    ceiling: float | None = None
    status: str = PASSED
    reason: str | None = None
    size_kb: float | None = None
    neg_elbo: float | None = None
    nll_iw: float | None = None
    nll_delta: float | None = None
    kl: float | None = None
    active_units: int | None = None
    recon_mse: float | None = None
    recon_nats: float | None = None
    decoder_max_abs_diff_px: float | None = None
    decoder_mean_abs_diff_px: float | None = None
    accuracy_seconds: float | None = None
    decoder: dict[str, Latency] = field(default_factory=dict)
    encoder: dict[str, Latency] = field(default_factory=dict)

    def fail(self, status: str, reason: str | BaseException) -> None:
        """Mark the row; an exception becomes its first line, short enough for a table."""
        if isinstance(reason, BaseException):
            reason = one_line(reason)
        self.status, self.reason = status, reason


@dataclass
class BenchReport:
    export_dir: str
    run_dir: str | None
    data: str | None
    n_images: int
    k: int
    seed: int
    threads: int
    batch_sizes: list[int]
    cpu: dict[str, Any]
    versions: dict[str, str]
    peak: dict[str, Any]
    macs_per_image: dict[str, int]
    budget_nats: float
    budget_from: str
    timing: dict[str, Any]
    noise: dict[str, Any]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    split: str = "test"
    diff_z: int = DIFF_Z
    reference: str = REFERENCE
    created: str = ""
    wall_seconds: float = 0.0
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return _finite(asdict(self))

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.name == name), None)

    @property
    def int8(self) -> Row | None:
        return next((r for r in self.rows if r.name.startswith("ORT int8 (")), None)


def _finite(obj: Any) -> Any:
    """NaN/Inf become null, so the JSON is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- gates


def gate_speedup(report: BenchReport, lat: Latency | None) -> tuple[float | None, str]:
    """The speedup the min_speedup gate checks: from CPU time with one thread (exact, and immune
    to a busy machine), from wall time otherwise (the process clock counts spinning workers)."""
    if lat is None:
        return None, ""
    if report.threads == 1 and lat.cpu_speedup_vs_fp32 is not None:
        return lat.cpu_speedup_vs_fp32, "CPU-time"
    return lat.speedup_vs_fp32, "wall-time"


@dataclass(frozen=True)
class GateFailure:
    """A missed gate: `param` is run_bench's/check_gates' name of the gate's threshold."""

    param: str  # min_speedup | max_delta_nats
    detail: str

    def __str__(self) -> str:
        return f"{self.param}: {self.detail}"


def check_gates(
    report: BenchReport, min_speedup: float | None, max_delta_nats: float | None
) -> list[GateFailure]:
    """One failure per missed gate (empty: all passed or no gates)."""
    out: list[GateFailure] = []
    int8 = report.int8
    if min_speedup is not None:
        bs = str(max(report.batch_sizes))
        lat = int8.decoder.get(bs) if int8 is not None else None
        speedup, clock = gate_speedup(report, lat)
        if speedup is None:
            detail = f"the int8 decoder was not timed at batch {bs}"
            out.append(GateFailure("min_speedup", detail))
        elif speedup < min_speedup:
            detail = (
                f"int8 decoder speedup {speedup:.2f}x ({clock} p50) vs ORT fp32 at batch {bs} "
                f"is below {min_speedup:g}"
            )
            out.append(GateFailure("min_speedup", detail))
    if max_delta_nats is not None:
        if int8 is None or int8.nll_delta is None:
            out.append(GateFailure("max_delta_nats", "the int8 NLL delta could not be measured"))
        elif not int8.nll_delta <= max_delta_nats:
            detail = f"int8 NLL delta {int8.nll_delta:+.3f} nats exceeds {max_delta_nats:g}"
            out.append(GateFailure("max_delta_nats", detail))
    return out


# --------------------------------------------------------------------------- tables


def _fmt(v: float | None, spec: str, dash: str = "-") -> str:
    return dash if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _us(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


LATENCY_HEADERS = [
    "row",
    "part",
    "batch",
    "p50 µs",
    "p90 µs",
    "p99 µs",
    "spread",
    "img/s",
    "GMAC/s",
    "% peak",
    "× fp32",
    "cpu ×",
    "% ceil",
]
ACCURACY_HEADERS = [
    "row",
    "status",
    "KB",
    "-ELBO",
    "NLL",
    "ΔNLL",
    "MSE",
    "recon",
    "max|Δ|px",
    "mean|Δ|px",
]


def latency_rows(report: BenchReport) -> list[list[str]]:
    """Latency table cells: one line per (row, batch size, decoder/encoder)."""
    out = []
    for r in report.rows:
        for bs in report.batch_sizes:
            for part, lats in (("dec", r.decoder), ("enc", r.encoder)):
                d = lats.get(str(bs))
                if d is None:
                    continue
                out.append(
                    [
                        r.name,
                        part,
                        str(bs),
                        _us(d.p50_us),
                        _us(d.p90_us),
                        _us(d.p99_us),
                        _fmt(d.spread, ".2f"),
                        _fmt(d.images_per_s, ",.0f"),
                        _fmt(d.gmac_per_s, ".1f"),
                        _fmt(d.pct_of_peak, ".0f"),
                        _fmt(d.speedup_vs_fp32, ".2f"),
                        _fmt(d.cpu_speedup_vs_fp32, ".2f"),
                        _fmt(_pct(share_of_ceiling(report, d)), ".0f"),
                    ]
                )
    return out


def accuracy_rows(report: BenchReport, with_reason: bool = True) -> list[list[str]]:
    """Accuracy table cells, one line per row; the status carries its reason if asked."""
    out = []
    for r in report.rows:
        status = r.status if r.reason is None or not with_reason else f"{r.status}: {r.reason}"
        out.append(
            [
                r.name,
                status,
                _fmt(r.size_kb, ",.0f"),
                _fmt(r.neg_elbo, ".2f"),
                _fmt(r.nll_iw, ".2f"),
                _fmt(r.nll_delta, "+.3f"),
                _fmt(r.recon_mse, ".4f"),
                _fmt(r.recon_nats, ".2f"),
                _fmt(r.decoder_max_abs_diff_px, ".2f"),
                _fmt(r.decoder_mean_abs_diff_px, ".3f"),
            ]
        )
    return out


def summary_lines(report: BenchReport) -> list[str]:
    """What the tables do not show: machine, peak, accuracy settings, noise, versions."""
    cpu = report.cpu
    v = report.versions
    return [
        f"CPU: {cpu.get('model')} [{cpu.get('kind')}; {', '.join(cpu.get('flags', []))}], "
        f"{report.threads} thread(s), load average {_load(cpu.get('loadavg'))}",
        _peak_line(report),
        f"accuracy: {report.n_images} {report.split} images, k={report.k}, seed {report.seed} "
        f"(same noise for every row); budget {report.budget_nats:g} nats ({report.budget_from})",
        f"timing noise: median spread {_fmt(report.noise.get('median_spread'), '.2f')}, worst "
        f"{_fmt(report.noise.get('max_spread'), '.2f')} -> {report.noise.get('verdict')}",
        "versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
    ]


def _pct(v: float | None) -> float | None:
    return None if v is None else 100.0 * v


def share_of_ceiling(report: BenchReport, lat: Latency | None) -> float | None:
    """A latency's speedup over its row's int8 ceiling, from the clock the gate trusts (CPU
    time with one thread, wall time otherwise)."""
    if lat is None:
        return None
    if report.threads == 1 and lat.cpu_share_of_ceiling is not None:
        return lat.cpu_share_of_ceiling
    return lat.share_of_ceiling


def _peak_line(report: BenchReport) -> str:
    pk = report.peak
    formats = pk.get("formats") or {}
    shape = "x".join(str(d) for d in pk.get("shape", PEAK_SHAPE))
    gmacs = ", ".join(
        f"{f} {_fmt(v.get('cpu_gmac_per_s') or v.get('gmac_per_s'), '.0f')}"
        for f, v in formats.items()
    )
    ceil = ", ".join(f"{f} {_fmt(v, '.2f')}x" for f, v in (pk.get("ceiling") or {}).items())
    return (
        f"peak ({shape} MatMul/MatMulInteger, onnxruntime, GMAC/s): {gmacs or 'not measured'}; "
        f"int8 ceiling (x fp32): {ceil or 'not measured'}; % ceil = a row's speedup over its "
        f"format's ceiling; MACs/image: decoder {report.macs_per_image['decoder']:,}, "
        f"encoder {report.macs_per_image['encoder']:,}"
    )


def _load(loadavg: list[float] | None) -> str:
    return "n/a" if not loadavg else "/".join(f"{x:.2f}" for x in loadavg)


def to_markdown(report: BenchReport) -> str:
    def table(headers: list[str], rows: list[list[str]]) -> str:
        esc = [[c.replace("|", "\\|") for c in r] for r in rows]
        lines = ["| " + " | ".join(h.replace("|", "\\|") for h in headers) + " |"]
        lines.append("| " + " | ".join("---" for _ in headers) + " |")
        lines += ["| " + " | ".join(r) + " |" for r in esc]
        return "\n".join(lines)

    parts = [
        f"# edgevae bench: {report.export_dir}",
        "",
        f"_{report.created}, {report.wall_seconds:.0f} s_",
        "",
        "## Accuracy (nats per image; pixel differences vs ORT fp32 on a 0-255 scale)",
        "",
        table(ACCURACY_HEADERS, accuracy_rows(report)),
        "",
        "## Latency per call (× fp32 = ORT fp32 p50 / p50; cpu × = the same in CPU time)",
        "",
        table(LATENCY_HEADERS, latency_rows(report)),
        "",
        *[f"- {line}" for line in summary_lines(report)],
        *[f"- note: {n}" for n in report.notes],
        "",
    ]
    return "\n".join(parts)


def write_outputs(
    report: BenchReport,
    *,
    json_path: Path | None = None,
    markdown: Path | None = None,
    plot: Path | None = None,
) -> list[Path]:
    """Write the report as JSON, Markdown and/or a PNG plot (each atomically); the paths
    written, in that order. The plot needs matplotlib (the `dev` extra)."""
    written = []
    if json_path is not None:
        fsio.write_json(json_path, report.to_dict())
        written.append(Path(json_path))
    if markdown is not None:
        fsio.write_text(markdown, to_markdown(report))
        written.append(Path(markdown))
    if plot is not None:
        from .plot import bench_plot

        bench_plot(report, plot)
        written.append(Path(plot))
    return written
