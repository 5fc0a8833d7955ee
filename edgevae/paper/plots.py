"""Matplotlib charts of `edgevae figures` (PNG, written atomically); the shared helpers are in
`edgevae.charts`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..charts import figure, save_png


def bound_plot(panels: Sequence[dict[str, Any]], path: Path) -> None:
    """Kingma & Welling Fig. 2: the ELBO (higher is better) vs training samples seen.

    Each panel: {"title": str, "curves": [{"label", "samples", "train", "test"}]} with
    `train`/`test` the per-epoch ELBO (= -(-ELBO)); train dashed, test solid, same colour.
    """
    fig, axes = figure(5.2 * len(panels), 4.2, len(panels))
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
    save_png(fig, path)


def training_plot(groups: Sequence[dict[str, Any]], path: Path) -> None:
    """One row per dataset: validation -ELBO and seconds per epoch of each of its runs.

    groups: [{"title": str, "runs": [{"label": str, "rows": metrics.jsonl rows}]}]."""
    fig, axes = figure(11, 3.8 * len(groups), 2, nrows=len(groups))
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
    save_png(fig, path)
