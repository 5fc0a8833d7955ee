"""Shared pieces of the dataset readers: one-line errors, bounded reads, content sniffing.

Every reader turns whatever goes wrong into `DataError("<file>: <what is wrong>")`, one line.
Nothing here allocates memory from a size a file declares before that size has been checked
against the bytes actually present (or against `MAX_FILE_BYTES`).
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from ..errors import DataError, one_line

#: Largest (decompressed) file or array held in memory; protects against gzip/zip bombs and
#: headers that declare absurd sizes. Module-level so tests can lower it.
MAX_FILE_BYTES = 2 * 1024**3
#: Largest image side accepted from any source (PNG headers are checked before decoding).
MAX_SIDE = 4096
CHUNK = 1 << 20

GZIP_MAGIC = b"\x1f\x8b"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: IDX element type codes (third magic byte) -> name.
IDX_TYPES = {
    0x08: "uint8",
    0x09: "int8",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}


def fail(path: object, what: object) -> DataError:
    """`DataError("<path>: <what>")` with the message folded onto one line."""
    return DataError(f"{path}: {' '.join(str(what).split())}")


@contextlib.contextmanager
def guard(path: object, what: str = "cannot read") -> Iterator[None]:
    """Turn low-level read/parse failures into a one-line DataError naming `path`."""
    try:
        yield
    except DataError:
        raise
    except FileNotFoundError:
        raise fail(path, "no such file or directory") from None
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise fail(
            path, f"corrupt or truncated gzip data ({one_line(exc, 160, with_type=True)})"
        ) from None
    except zipfile.BadZipFile as exc:
        raise fail(path, f"corrupt zip archive ({one_line(exc, 160, with_type=True)})") from None
    except MemoryError:
        raise fail(path, "not enough memory to load it") from None
    except (OSError, ValueError, struct.error, RuntimeError, NotImplementedError) as exc:
        raise fail(path, f"{what} ({one_line(exc, 160, with_type=True)})") from None


def is_gzip(path: Path) -> bool:
    with guard(path), open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


@contextlib.contextmanager
def open_content(path: Path) -> Iterator[tuple[IO[bytes], bool]]:
    """(binary stream of the content, gzipped?) - gzip is decompressed transparently."""
    with guard(path), open(path, "rb") as raw:
        gz = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        if gz:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield stream, True
        else:
            yield raw, False


def read_upto(stream: IO[bytes], limit: int) -> bytes:
    """Read at most `limit` bytes in chunks (never one allocation of an unchecked size)."""
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = stream.read(min(CHUNK, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def read_content(path: Path, limit: int | None = None) -> bytes:
    """All (decompressed) bytes of `path`; DataError when there are more than `limit`."""
    limit = MAX_FILE_BYTES if limit is None else limit
    with open_content(path) as (stream, gz):
        if not gz:
            size = os.fstat(stream.fileno()).st_size
            if size > limit:
                raise fail(path, f"{size} bytes, more than the {limit}-byte limit")
        data = read_upto(stream, limit + 1)
    if len(data) > limit:
        raise fail(path, f"decompresses to more than the {limit}-byte limit")
    return data


def sniff(path: Path, n: int = 512) -> bytes:
    """The first `n` bytes of the (decompressed) content."""
    with open_content(path) as (stream, _gz):
        return read_upto(stream, n)


_TEXT_BYTES = b"0123456789 .+-eE\t\r\n"


def detect_bytes(head: bytes) -> str | None:
    """Kind from the first bytes of the content; 'png-file' for a lone PNG; None if unknown."""
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "npz"
    if head.startswith(b"MATLAB"):
        return "frey"
    if head.startswith(PNG_MAGIC):
        return "png-file"
    if (
        len(head) >= 4
        and head[0] == 0
        and head[1] == 0
        and head[2] in IDX_TYPES
        and 1 <= head[3] <= 4
    ):
        return "idx"
    if head and not head.translate(None, _TEXT_BYTES) and any(48 <= b <= 57 for b in head):
        return "amat"
    return None


def folder_entry_problem(root: Path, path: Path) -> str | None:
    """Why a file found by scanning a data folder is NOT read (None: read it).

    The policy for every folder kind (PNG files, IDX pairs, .amat splits, .mat files): only
    regular files are read, and a symlink only when its target resolves to a regular file
    INSIDE the folder (`root`, already resolved). Links leading outside, dangling links, loops,
    FIFOs, devices and sockets are ignored, so a data folder can never make edgevae read
    files elsewhere on the machine (nor block on a FIFO). A path given to --data itself is
    followed as usual: the user named it.
    """
    try:
        if path.is_symlink():
            target = path.resolve(strict=True)
            if not target.is_relative_to(root):
                return "a symlink leading outside the folder"
            return None if target.is_file() else "a symlink to something not a regular file"
        return None if path.is_file() else "not a regular file"
    except (OSError, RuntimeError):
        return "a dangling or looping symlink"


def skipped_note(folder: Path) -> str:
    """' (ignored: ...)' naming hidden files and unusable symlinks in `folder`, or ''.

    Appended to "nothing usable here" errors so that a folder whose only images are hidden or
    linked from elsewhere says why, instead of looking empty.
    """
    try:
        root = folder.resolve()
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except (OSError, RuntimeError):
        return ""
    hidden, links = 0, []
    for entry in entries:
        if entry.name.startswith("."):
            hidden += entry.is_file(follow_symlinks=False)
        elif entry.is_symlink():
            why = folder_entry_problem(root, Path(entry.path))
            if why is not None:
                links.append(f"{entry.name} ({why})")
    parts = [f"{hidden} hidden file{'s' if hidden != 1 else ''}"] if hidden else []
    parts += links[:3] + ([f"{len(links) - 3} more links"] if len(links) > 3 else [])
    return f" (ignored: {', '.join(parts)})" if parts else ""


def square_side(d: int) -> int | None:
    side = math.isqrt(d)
    return side if side * side == d and d > 0 else None


def as_images(arr: np.ndarray, path: object) -> np.ndarray:
    """(N,H,W) or (N,D) with D a perfect square -> (N,H,W); anything else is a DataError."""
    if arr.ndim == 2:
        side = square_side(arr.shape[1])
        if side is None:
            raise fail(
                path,
                f"array of shape {arr.shape}: {arr.shape[1]} values per image is not "
                "a square image; save it as (N, H, W)",
            )
        arr = arr.reshape(arr.shape[0], side, side)
    elif arr.ndim != 3:
        raise fail(path, f"array of shape {arr.shape}; expected (N, H, W) or (N, D)")
    n, h, w = arr.shape
    if n == 0 or h == 0 or w == 0:
        raise fail(path, f"empty array (shape {arr.shape})")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise fail(path, f"images of {h}x{w} pixels exceed the {MAX_SIDE}-pixel side limit")
    return arr


def check_pixels(arr: np.ndarray, path: object) -> None:
    """uint8 (0-255), bool, or finite float in [0, 1]; anything else is a DataError."""
    if arr.dtype in (np.uint8, np.bool_):
        return
    if arr.dtype.kind != "f" or arr.dtype.itemsize > 8:
        raise fail(
            path,
            f"dtype {arr.dtype} is not supported; expected uint8 (0-255), bool, or float in [0, 1]",
        )
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise fail(path, f"{bad} values are NaN or infinite")
    outside = int(np.count_nonzero((arr < 0) | (arr > 1)))
    if outside:
        raise fail(
            path,
            f"{outside} values lie outside [0, 1] (min {float(arr.min()):g}, "
            f"max {float(arr.max()):g}); scale to [0, 1] or save uint8 0-255",
        )


def to_unit_float(arr: np.ndarray) -> np.ndarray:
    """Checked pixels (see check_pixels) -> float32 [N, D], C-contiguous, in [0, 1]."""
    n = arr.shape[0]
    if arr.dtype == np.uint8:
        out = np.divide(arr, np.float32(255), dtype=np.float32)  # exact: 255 -> 1.0
    else:
        out = arr.astype(np.float32)
    return np.ascontiguousarray(out.reshape(n, -1))


def is_binary(x: np.ndarray, block: int = 4096) -> bool:
    """Every value is 0 or 1 (checked block by block, stopping at the first other value)."""
    for start in range(0, x.shape[0], block):
        part = x[start : start + block]
        if not np.all((part == 0) | (part == 1)):
            return False
    return True
