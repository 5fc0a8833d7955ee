"""Reading a user's .npy of latent vectors: float, 2-D, finite, never with pickle.

The header is parsed here and the size it declares is compared with the bytes actually in the
file BEFORE any array is allocated (np.load allocated the declared size first: a 128-byte
file claiming 8e12 values failed with a MemoryError traceback, or tried to take the memory).
"""

from __future__ import annotations

import io
import stat
from pathlib import Path

import numpy as np

from .errors import DataError

MAX_BYTES = 1 << 30


def _parse(path: Path, data: bytes) -> np.ndarray:
    fmt = np.lib.format
    bio = io.BytesIO(data)
    try:
        version = fmt.read_magic(bio)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(bio)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(bio)
        else:
            raise DataError(f"{path}: unsupported .npy format version {version}")
    except DataError:
        raise
    except Exception as exc:  # numpy's header parser raises ValueError, TokenError, ...
        detail = " ".join(str(exc).split())[:120]
        raise DataError(f"{path}: not a readable .npy ({detail or type(exc).__name__})") from None
    if dtype.hasobject:
        raise DataError(f"{path}: not a readable .npy without pickle (it holds Python objects)")
    if dtype.kind not in "fiu" or dtype.fields is not None or dtype.subdtype is not None:
        raise DataError(f"{path}: dtype {dtype} is not numeric")
    count = 1
    for dim in shape:
        count *= int(dim)
    declared = count * dtype.itemsize
    offset = bio.tell()
    actual = len(data) - offset
    if actual != declared:
        kind = "truncated" if actual < declared else "trailing data"
        raise DataError(
            f"{path}: {kind}: header declares shape {shape} {dtype} ({declared} bytes) but "
            f"{actual} bytes of data follow"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return arr.reshape(shape, order="F" if fortran else "C")


def read_npy(path: Path) -> np.ndarray:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    # Fix: a FIFO or device (e.g. /dev/zero) would block or stream forever.
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file")
    if st.st_size > MAX_BYTES:
        raise DataError(f"{path}: {st.st_size} bytes is too large")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if data[:2] == b"PK":
        raise DataError(f"{path}: expected a single array (.npy), not an archive")
    a = _parse(path, data)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise DataError(f"{path}: expected a non-empty [N, L] array, got shape {list(a.shape)}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise DataError(f"{path}: holds NaN or Inf")
    return a
