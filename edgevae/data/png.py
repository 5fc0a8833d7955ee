"""Folder of PNG images -> (N, H, W) float32 in [0, 1] (grayscale, one image per file).

A folder with PNG files directly inside is read as one unlabelled set. A folder without any,
whose subfolders hold PNG files, is read as classes (torchvision's ImageFolder layout): one
subfolder per class, class names = the sorted names of the subfolders that hold PNGs, images
in (class, file name) order; only one level deep, hidden subfolders skipped, and a subfolder
that is a symlink is followed only when it resolves to a folder inside the top folder.

Which files count (in the folder, or in each class subfolder):
- names ending in `.png` (any case), taken in sorted name order so the result is deterministic;
  hidden files (leading dot), other suffixes and sub-folders are skipped (no deeper recursion);
- symlinks are followed only when their target resolves to a regular file INSIDE the folder;
  links that point outside it, dangling links and loops are skipped (the same policy as for
  every data folder, see `checks.folder_entry_problem`), so a data folder can never be used
  to read arbitrary files elsewhere on the machine; when nothing usable is left, the error
  names what was ignored;
- an empty (zero-byte) `.png`, a file that is not a PNG, a truncated PNG, or an image whose
  size differs from the first image's is an error naming that file.

Decompression bombs: every image's size is read from its header and checked before any pixel
is decoded; a side over 4096 pixels (or over 4096 x 4096 in total) is refused. Pillow's own
`DecompressionBombWarning` is turned into a refusal as well. The whole folder is bounded too:
(number of files) x (first image's pixels) x 4 bytes must stay within `MAX_FILE_BYTES`
(2 GiB) and the memory limit (`edgevae.limits`), checked from the first header before
anything is decoded, and no single .png file may be larger than that on disk. Colour images
are converted to 8-bit grayscale ('L'); 16-bit grayscale is scaled by 1/65535. Pillow's
process-wide `Image.MAX_IMAGE_PIXELS` is left untouched (other modules share it).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import limits
from ..errors import one_line
from . import checks as c
from .checks import fail

MAX_PIXELS = 4096 * 4096


@dataclass
class PngSet:
    """The PNG files to read, with a class index per file for a class-folder layout."""

    files: list[Path]
    labels: np.ndarray | None = None  # int64, one per file
    classes: tuple[str, ...] | None = None


def png_files(folder: Path, root: Path | None = None) -> list[Path]:
    """The PNG files of `folder` that will be read, sorted by name (policy above); symlinks
    must resolve inside `root` (default: the folder itself)."""
    found: list[Path] = []
    with c.guard(folder, "cannot list the folder"):
        root = folder.resolve() if root is None else root
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    for entry in entries:
        name = entry.name
        if name.startswith(".") or not name.lower().endswith(".png"):
            continue
        path = Path(entry.path)
        if c.folder_entry_problem(root, path) is None:
            found.append(path)
    return found


def _class_dir(root: Path, entry: os.DirEntry) -> bool:
    """A subfolder to read as a class: a real folder, or a link to a folder inside root."""
    if entry.name.startswith("."):
        return False
    try:
        if entry.is_symlink():
            target = Path(entry.path).resolve(strict=True)
            return target != root and target.is_relative_to(root) and target.is_dir()
        return entry.is_dir(follow_symlinks=False)
    except (OSError, RuntimeError):
        return False


def png_set(folder: Path) -> PngSet | None:
    """The folder's PNG files: flat when it has any directly inside, else by class subfolder;
    None when there are none either way."""
    flat = png_files(folder)
    if flat:
        return PngSet(flat)
    with c.guard(folder, "cannot list the folder"):
        root = folder.resolve()
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    files: list[Path] = []
    labels: list[int] = []
    classes: list[str] = []
    for entry in entries:
        if not _class_dir(root, entry):
            continue
        found = png_files(Path(entry.path), root)
        if found:
            labels += [len(classes)] * len(found)
            classes.append(entry.name)
            files += found
    if not files:
        return None
    return PngSet(files, np.asarray(labels, dtype=np.int64), tuple(classes))


def _open_checked(path: Path):
    """Open one PNG (header only) and check its size; returns the lazy Pillow image."""
    from PIL import Image

    try:
        size = os.stat(path).st_size
        if size == 0:
            raise fail(path, "empty file (0 bytes)")
        if size > c.MAX_FILE_BYTES:  # before Pillow reads any chunk
            raise fail(path, f"{size} bytes, more than the {c.MAX_FILE_BYTES}-byte limit")
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
        raise fail(
            path, f"not a readable PNG image ({one_line(exc, 160, with_type=True)})"
        ) from None
    w, h = im.size
    if w > c.MAX_SIDE or h > c.MAX_SIDE or w * h > MAX_PIXELS or w == 0 or h == 0:
        im.close()
        raise fail(
            path,
            f"image of {w}x{h} pixels exceeds the {c.MAX_SIDE}x{c.MAX_SIDE} limit; "
            "refused before decoding",
        )
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
        raise fail(path, f"cannot decode the PNG ({one_line(exc, 160, with_type=True)})") from None
    return np.divide(gray, np.float32(255), dtype=np.float32)


def read_png_folder(folder: Path, files: list[Path] | None = None) -> np.ndarray:
    files = png_files(folder) if files is None else files
    if not files:
        raise fail(folder, f"no .png files in the folder{c.skipped_note(folder)}")
    images: list[np.ndarray] = []
    first: tuple[Path, tuple[int, int]] | None = None
    for path in files:
        im = _open_checked(path)
        if first is None:
            first = (path, im.size)
            # The folder as a whole is capped too: 100,000 tiny PNGs declaring 4096x4096 each
            # would decode into ~6 TB of float32. All images share this size, so the total is
            # known from the first header.
            total = len(files) * im.size[0] * im.size[1] * 4
            if total > c.MAX_FILE_BYTES:
                im.close()
                raise fail(
                    folder,
                    f"{len(files)} images of {im.size[0]}x{im.size[1]} pixels would take "
                    f"{limits.human(total)}, more than the {limits.human(c.MAX_FILE_BYTES)} "
                    "limit; refused before decoding",
                )
            try:
                what = f"{folder}: {len(files)} images of {im.size[0]}x{im.size[1]} pixels"
                limits.check(total, what, error=c.DataError)
            except c.DataError:
                im.close()
                raise
        elif im.size != first[1]:
            size, ref = im.size, first[1]
            im.close()
            raise fail(
                path,
                f"{size[0]}x{size[1]} pixels, but {first[0].name} is "
                f"{ref[0]}x{ref[1]}; all images must have one size",
            )
        images.append(_decode(im, path))
    return np.stack(images)
