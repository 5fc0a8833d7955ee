"""Matplotlib charts for `edgevae bench --plot` and `edgevae figures` (PNG, written atomically).

matplotlib is a dev/train extra, not a base dependency: it is imported inside the functions,
without pyplot (no global state, no GUI backend), and a missing install is a one-line error.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import fsio
from ..errors import EdgeVAEError, UsageError

if TYPE_CHECKING:
    from ..bench.run import BenchReport

DPI = 120


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise EdgeVAEError(
            "plots need matplotlib, which is not installed (pip install 'edgevae[dev]')"
        ) from None
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _save(fig, path: Path) -> None:
    if Path(path).suffix.lower() != ".png":
        raise UsageError(f"{path}: plots are written as PNG; use a .png name")
    buf = io.BytesIO()
    # No Software/date chunks: the same data always gives the same bytes.
    fig.savefig(buf, format="png", metadata={"Software": None})
    fsio.write_bytes(path, buf.getvalue())


def _palette(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def bench_plot(report: BenchReport, path: Path) -> None:
    """Two panels: decoder p50 latency vs batch size (log-log) per row, wall time solid and CPU
    time dotted; NLL increase vs file size (hollow markers: over the budget)."""
    fig, (lat, acc) = _figure(11, 4.2, 2)
    palette = _palette(len(report.rows))
    for i, r in enumerate(report.rows):
        pts = sorted((int(bs), v.p50_us, v.cpu_p50_us) for bs, v in r.decoder.items())
        if not pts:
            continue
        xs = [p[0] for p in pts]
        style = "--" if r.runtime == "torch" else "-"
        lat.plot(xs, [p[1] / 1e3 for p in pts], style, color=palette[i], marker="o", label=r.name)
        cpu = [p[2] / 1e3 for p in pts]
        if all(math.isfinite(v) for v in cpu):
            lat.plot(xs, cpu, ":", color=palette[i], lw=1, alpha=0.7)
    if lat.lines:
        lat.plot([], [], ":", color="grey", label="dotted: CPU time")
        lat.legend(fontsize=7)
    lat.set_xscale("log")
    lat.set_yscale("log")
    lat.set_xticks(report.batch_sizes, [str(b) for b in report.batch_sizes])
    lat.set_xlabel("batch size")
    lat.set_ylabel("decoder p50 latency per call (ms)")
    noise = str(report.noise.get("verdict") or "").split(":")[0]
    lat.set_title(f"Decoder latency, {report.threads} thread(s), {noise} run")
    lat.grid(True, which="both", alpha=0.3)

    points = [
        (i, r)
        for i, r in enumerate(report.rows)
        if r.size_kb is not None and r.nll_delta is not None
    ]
    many = len(points) > 6  # then a legend, not labels that overlap
    for i, r in points:
        acc.scatter(
            [r.size_kb],
            [r.nll_delta],
            s=40,
            facecolors=palette[i] if r.status == "passed" else "none",
            edgecolors=[palette[i]],
            zorder=3,
            label=r.name if many else None,
        )
        if not many:
            acc.annotate(
                r.name,
                (r.size_kb, r.nll_delta),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
            )
    acc.axhline(
        report.budget_nats, color="tab:red", ls=":", lw=1, label=f"budget {report.budget_nats:g}"
    )
    acc.axhline(0.0, color="grey", lw=0.8)
    acc.set_xlabel("encoder + decoder file size (KB)")
    acc.set_ylabel("NLL increase vs ORT fp32 (nats/image, lower is better)")
    acc.set_title(f"Accuracy vs size ({report.n_images} test images, k={report.k})")
    acc.grid(True, alpha=0.3)
    acc.legend(fontsize=7, title="hollow: over budget", title_fontsize=7)
    _save(fig, path)


def bound_plot(panels: Sequence[dict[str, Any]], path: Path) -> None:
    """Kingma & Welling Fig. 2: the ELBO (higher is better) vs training samples seen.

    Each panel: {"title": str, "curves": [{"label", "samples", "train", "test"}]} with
    `train`/`test` the per-epoch ELBO (= -(-ELBO)); train dashed, test solid, same colour.
    """
    fig, axes = _figure(5.2 * len(panels), 4.2, len(panels))
    for ax, panel in zip(axes, panels, strict=True):
        for i, c in enumerate(panel["curves"]):
            color = f"C{i % 10}"
            ax.plot(c["samples"], c["train"], "--", color=color, lw=1.2)
            ax.plot(c["samples"], c["test"], "-", color=color, lw=1.6, label=c["label"])
        ax.set_xscale("log")
        ax.set_xlabel("# training samples evaluated")
        ax.set_ylabel("ELBO, nats per image (higher is better)")
        ax.set_title(panel["title"])
        ax.grid(True, which="both", alpha=0.3)
        ax.plot([], [], "--", color="grey", label="train (dashed)")
        ax.plot([], [], "-", color="grey", label="test (solid)")
        ax.legend(fontsize=8)
        lows = [v for c in panel["curves"] for v in (*c["test"][1:], *c["train"][1:])]
        if lows:  # the first epoch's bound is far below the rest; keep the curves readable
            top = max(v for c in panel["curves"] for v in (*c["test"], *c["train"]))
            bottom = min(lows)
            ax.set_ylim(bottom - 0.1 * (top - bottom + 1), top + 0.05 * (top - bottom + 1))
    _save(fig, path)


def training_plot(groups: Sequence[dict[str, Any]], path: Path) -> None:
    """One row per dataset: validation -ELBO and seconds per epoch of each of its runs.

    groups: [{"title": str, "runs": [{"label": str, "rows": metrics.jsonl rows}]}]."""
    fig, axes = _figure(11, 3.8 * len(groups), 2, nrows=len(groups))
    for g, group in enumerate(groups):
        loss, secs = axes[2 * g], axes[2 * g + 1]
        for i, run in enumerate(group["runs"]):
            epochs = [r["epoch"] for r in run["rows"]]
            color = f"C{i % 10}"
            loss.plot(
                epochs, [r["valid_neg_elbo"] for r in run["rows"]], color=color, label=run["label"]
            )
            secs.plot(
                epochs,
                [r["epoch_seconds"] for r in run["rows"]],
                color=color,
                marker=".",
                label=run["label"],
            )
        loss.set_xlabel("epoch")
        loss.set_ylabel("validation -ELBO (nats/image, lower is better)")
        loss.set_title(f"{group['title']}: validation -ELBO")
        secs.set_xlabel("epoch")
        secs.set_ylabel("seconds per epoch")
        secs.set_ylim(bottom=0)
        secs.set_title(f"{group['title']}: epoch time")
        for ax in (loss, secs):
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
    _save(fig, path)
