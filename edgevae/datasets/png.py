"""Folder of PNG images -> (N, H, W) float32 in [0, 1] (grayscale, one image per file).

Which files count:
- names ending in `.png` (any case), taken in sorted name order so the result is deterministic;
  hidden files (leading dot), other suffixes and sub-folders are skipped; no recursion;
- symlinks are followed only when their target resolves to a regular file INSIDE the folder;
  links that point outside it, dangling links and loops are skipped silently, so a data folder
  can never be used to read arbitrary files elsewhere on the machine;
- an empty (zero-byte) `.png`, a file that is not a PNG, a truncated PNG, or an image whose
  size differs from the first image's is an error naming that file.

Decompression bombs: every image's size is read from its header and checked before any pixel
is decoded; a side over 4096 pixels (or over 4096 x 4096 in total) is refused. Pillow's own
`DecompressionBombWarning` is turned into a refusal as well. Colour images are converted to 8-bit
grayscale ('L'); 16-bit grayscale is scaled by 1/65535. Pillow's process-wide
`Image.MAX_IMAGE_PIXELS` is left untouched (other modules share it).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from . import _common as c
from ._common import fail

MAX_PIXELS = 4096 * 4096


def png_files(folder: Path) -> list[Path]:
    """The PNG files of `folder` that will be read, sorted by name (policy above)."""
    root = folder.resolve()
    found: list[Path] = []
    with c.guard(folder, "cannot list the folder"):
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    for entry in entries:
        name = entry.name
        if name.startswith(".") or not name.lower().endswith(".png"):
            continue
        path = Path(entry.path)
        try:
            if entry.is_symlink():
                target = path.resolve(strict=True)
                if not target.is_relative_to(root) or not target.is_file():
                    continue
            elif not entry.is_file(follow_symlinks=False):
                continue
        except (OSError, RuntimeError):
            continue
        found.append(path)
    return found


def _open_checked(path: Path):
    """Open one PNG (header only) and check its size; returns the lazy Pillow image."""
    from PIL import Image

    try:
        if os.stat(path).st_size == 0:
            raise fail(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path, formats=["PNG"])
    except c.DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise fail(path, f"image too large (over {MAX_PIXELS} pixels); refused") from None
    except Image.UnidentifiedImageError:
        raise fail(path, "not a PNG image") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ...
        raise fail(path, f"not a readable PNG image ({c.describe(exc)})") from None
    w, h = im.size
    if w > c.MAX_SIDE or h > c.MAX_SIDE or w * h > MAX_PIXELS or w == 0 or h == 0:
        im.close()
        raise fail(path, f"image of {w}x{h} pixels exceeds the {c.MAX_SIDE}x{c.MAX_SIDE} limit; "
                         "refused before decoding")
    return im


def _decode(im, path: Path) -> np.ndarray:
    try:
        with im:
            im.load()
            if im.mode in ("I", "I;16", "I;16B", "I;16L"):
                arr = np.asarray(im, dtype=np.float64) / 65535.0
                return np.clip(arr, 0.0, 1.0).astype(np.float32)
            gray = np.asarray(im.convert("L"), dtype=np.uint8)
    except Exception as exc:  # truncated data, bad CRC, ...
        raise fail(path, f"cannot decode the PNG ({c.describe(exc)})") from None
    return np.divide(gray, np.float32(255), dtype=np.float32)


def read_png_folder(folder: Path, files: list[Path] | None = None) -> np.ndarray:
    files = png_files(folder) if files is None else files
    if not files:
        raise fail(folder, "no .png files in the folder")
    images: list[np.ndarray] = []
    first: tuple[Path, tuple[int, int]] | None = None
    for path in files:
        im = _open_checked(path)
        if first is None:
            first = (path, im.size)
        elif im.size != first[1]:
            size, ref = im.size, first[1]
            im.close()
            raise fail(path, f"{size[0]}x{size[1]} pixels, but {first[0].name} is "
                             f"{ref[0]}x{ref[1]}; all images must have one size")
        images.append(_decode(im, path))
    return np.stack(images)
