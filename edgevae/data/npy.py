"""Reading a user's .npy of latent vectors: float, 2-D, finite, never with pickle.

The header is parsed here and the size it declares is compared with the bytes actually in the
file BEFORE any array is allocated (np.load allocated the declared size first: a 128-byte
file claiming 8e12 values failed with a MemoryError traceback, or tried to take the memory).
"""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np

from ..errors import DataError
from .readers import npy_from_bytes

MAX_BYTES = 1 << 30


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
    a = npy_from_bytes(
        data,
        str(path),
        kinds="fiu",
        expected="a numeric array (dtype is not numeric)",
        objects="not a readable .npy without pickle (it holds Python objects)",
    )
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise DataError(f"{path}: expected a non-empty [N, L] array, got shape {list(a.shape)}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise DataError(f"{path}: holds NaN or Inf")
    return a
