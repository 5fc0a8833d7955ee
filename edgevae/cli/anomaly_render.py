"""The picture `edgevae detect` writes: the flagged images, each captioned with its score."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..runtime.images import captioned_grid, save_png


def flagged_grid(
    out: Path, images: np.ndarray, scores: np.ndarray, index: np.ndarray
) -> tuple[int, int]:
    """Write the grid; returns its (width, height)."""
    captions = [f"#{i} {s:.0f}" for i, s in zip(index, scores, strict=True)]
    picture = captioned_grid(images, captions, nrow=min(8, len(images)))
    save_png(out, picture)
    return picture.shape[1], picture.shape[0]
