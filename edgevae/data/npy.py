"""A user's .npy of latent vectors (float, 2-D, finite, never with pickle), and .npy bytes.

The header is parsed here and the size it declares is compared with the bytes actually in the
file BEFORE any array is allocated (np.load allocated the declared size first: a 128-byte
file claiming 8e12 values failed with a MemoryError traceback, or tried to take the memory).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .. import fsio
from ..errors import DataError
from .readers import npy_from_bytes

MAX_BYTES = 1 << 30


def read_npy(path: Path) -> np.ndarray:
    data = fsio.read_regular(path, MAX_BYTES, DataError)
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


def npy_bytes(a: np.ndarray) -> bytes:
    """`a` as the bytes of a .npy file (no pickle), for an atomic write."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()
