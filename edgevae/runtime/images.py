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


CAPTION = 12  # pixels of caption band under each captioned image


def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=10)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def draw_text(picture: np.ndarray, texts: list[tuple[int, int, str]]) -> np.ndarray:
    """`picture` (uint8 [H, W]) with white text drawn at each (x, y), Pillow's default font."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(np.ascontiguousarray(picture), mode="L")
    draw = ImageDraw.Draw(im)
    font = _font()
    for x, y, text in texts:
        draw.text((x, y), text, fill=255, font=font)
    return np.asarray(im, dtype=np.uint8)


def captioned_grid(images: np.ndarray, captions: list[str], nrow: int = 8) -> np.ndarray:
    """Tile [N, H, W] images `nrow` per row, each with its caption in a band below it; cells
    are widened to fit a caption of about 9 characters."""
    n, h, w = images.shape
    cell_w = max(w, 56)
    rows = math.ceil(n / nrow)
    out = np.zeros((rows * (h + CAPTION + PAD) + PAD, nrow * (cell_w + PAD) + PAD), np.uint8)
    pix = images if images.dtype == np.uint8 else to_uint8(images)
    texts = []
    for i in range(n):
        r, c = divmod(i, nrow)
        y, x = PAD + r * (h + CAPTION + PAD), PAD + c * (cell_w + PAD)
        out[y : y + h, x + (cell_w - w) // 2 : x + (cell_w - w) // 2 + w] = pix[i]
        texts.append((x, y + h, captions[i]))
    return draw_text(out, texts)
