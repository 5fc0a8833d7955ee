"""Image grids as PNG via Pillow: samples, reconstructions, interpolations, manifolds."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from .. import fsio
from ..errors import UsageError

PAD = 2


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[0, 1] floats to 8-bit pixels, rounding half to even (numpy's rint)."""
    return np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def grid(images: np.ndarray, nrow: int | None = None, pad: int = PAD) -> np.ndarray:
    """Tile [N, H, W] images into one uint8 picture, `nrow` images per row, black padding."""
    images = np.asarray(images)
    if images.ndim != 3 or len(images) == 0:
        raise UsageError("needs a non-empty [N, H, W] stack", param="images")
    n, h, w = images.shape
    # Only None means "choose for me": 0 is an error, not the default layout.
    ncol = nrow if nrow is not None else math.ceil(math.sqrt(n))
    if ncol < 1:
        raise UsageError(f"must be >= 1, got {ncol}", param="nrow")
    nrows = math.ceil(n / ncol)
    pix = images if images.dtype == np.uint8 else to_uint8(images)
    out = np.zeros((nrows * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y : y + h, x : x + w] = pix[i]
    return out


def png_bytes(picture: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    # No timestamps or other chunks: the same pixels always give the same bytes.
    Image.fromarray(picture, mode="L").save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def save_png(path: str | Path, picture: np.ndarray) -> None:
    """Write a uint8 [H, W] picture as PNG (atomically)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UsageError(f"{path} should end in .png", param="path")
    fsio.write_bytes(path, png_bytes(picture))


def save_grid(path: str | Path, images: np.ndarray, nrow: int | None = None) -> tuple[int, int]:
    """`images` [N, H, W] tiled `nrow` per row into a PNG; returns its (width, height)."""
    picture = grid(images, nrow)
    save_png(path, picture)
    return picture.shape[1], picture.shape[0]
