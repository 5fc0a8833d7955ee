"""The matplotlib helpers every chart shares (`bench.plot`, `paper.plots`): a figure without
pyplot and a byte-reproducible PNG written atomically.

matplotlib is in the `plots` extra, not a base dependency: it is imported inside the functions,
without pyplot (no global state, no GUI backend), and a missing install is a one-line error.
"""

from __future__ import annotations

import io
from pathlib import Path

from . import fsio
from .errors import MissingExtraError, UsageError

DPI = 120


def figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    """(figure, flat list of its axes) for a grid of nrows x ncols panels, size in inches."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("plots", "plots", "matplotlib") from None
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def save_png(fig, path: Path) -> None:
    """The figure as a PNG at `path` (atomic); the same data always gives the same bytes."""
    if Path(path).suffix.lower() != ".png":
        raise UsageError(f"{path}: plots are written as PNG; use a .png name")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no Software/date chunks
    fsio.write_bytes(path, buf.getvalue())


def palette(n: int) -> list:
    """n distinct colours (tab10, or tab20 for more than ten)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]
