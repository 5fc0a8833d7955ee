"""Reading a user's .npy of latent vectors: float, 2-D, finite, never with pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError

MAX_BYTES = 1 << 30


def read_npy(path: Path) -> np.ndarray:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    if size > MAX_BYTES:
        raise DataError(f"{path}: {size} bytes is too large")
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy without pickle ({exc})") from None
    if not isinstance(a, np.ndarray):
        raise DataError(f"{path}: expected a single array (.npy), not an archive")
    if a.dtype.kind not in "fiu":
        raise DataError(f"{path}: dtype {a.dtype} is not numeric")
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] == 0:
        raise DataError(f"{path}: expected a non-empty [N, L] array, got shape {list(a.shape)}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise DataError(f"{path}: holds NaN or Inf")
    return a
