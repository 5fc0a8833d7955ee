"""`edgevae bench --plot`: decoder latency vs batch size, and accuracy vs file size (PNG)."""

from __future__ import annotations

import math
from pathlib import Path

from ..charts import figure, palette, save_png
from .report import PASSED, BenchReport


def bench_plot(report: BenchReport, path: Path) -> None:
    """Two panels: decoder p50 latency vs batch size (log-log) per row, wall time solid and CPU
    time dotted; NLL increase vs file size (hollow markers: over the budget)."""
    fig, (lat, acc) = figure(11, 4.2, 2)
    colors = palette(len(report.rows))
    _latency_panel(lat, report, colors)
    _accuracy_panel(acc, report, colors)
    save_png(fig, path)


def _latency_panel(ax, report: BenchReport, colors: list) -> None:
    for i, r in enumerate(report.rows):
        pts = sorted((int(bs), v.p50_us, v.cpu_p50_us) for bs, v in r.decoder.items())
        if not pts:
            continue
        xs = [p[0] for p in pts]
        style = "--" if r.runtime == "torch" else "-"
        ax.plot(xs, [p[1] / 1e3 for p in pts], style, color=colors[i], marker="o", label=r.name)
        cpu = [p[2] / 1e3 for p in pts]
        if all(math.isfinite(v) for v in cpu):
            ax.plot(xs, cpu, ":", color=colors[i], lw=1, alpha=0.7)
    if ax.lines:
        ax.plot([], [], ":", color="grey", label="dotted: CPU time")
        ax.legend(fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(report.batch_sizes, [str(b) for b in report.batch_sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("decoder p50 latency per call (ms)")
    noise = str(report.noise.get("verdict") or "").split(":")[0]
    ax.set_title(f"Decoder latency, {report.threads} thread(s), {noise} run")
    ax.grid(True, which="both", alpha=0.3)


def _accuracy_panel(ax, report: BenchReport, colors: list) -> None:
    points = [
        (i, r)
        for i, r in enumerate(report.rows)
        if r.size_kb is not None and r.nll_delta is not None
    ]
    many = len(points) > 6  # then a legend, not labels that overlap
    for i, r in points:
        ax.scatter(
            [r.size_kb],
            [r.nll_delta],
            s=40,
            facecolors=colors[i] if r.status == PASSED else "none",
            edgecolors=[colors[i]],
            zorder=3,
            label=r.name if many else None,
        )
        if not many:
            ax.annotate(
                r.name,
                (r.size_kb, r.nll_delta),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
            )
    budget = report.budget_nats
    ax.axhline(budget, color="tab:red", ls=":", lw=1, label=f"budget {budget:g}")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("encoder + decoder file size (KB)")
    ax.set_ylabel("NLL increase vs ORT fp32 (nats/image, lower is better)")
    ax.set_title(f"Accuracy vs size ({report.n_images} test images, k={report.k})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, title="hollow: over budget", title_fontsize=7)
