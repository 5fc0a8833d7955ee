"""The export's own held-out images: a few hundred test images shipped in the export dir, so
that reconstruct, interpolate, encode and bench work on a board that has only the export and
the base install (no dataset package, no training data).

`heldout.npy` holds uint8 pixels [N, H*W] (0-255) when every intensity is a multiple of 1/255
(MNIST, Frey Face, binarized sets), else float32 in [0, 1]; the manifest's `heldout` entry
names the file, split, count, dtype and sha256, and the file is checked against it on load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import fsio
from ..data.npy import npy_bytes
from ..errors import ModelFileError

NAME = "heldout.npy"
COUNT = 500
MAX_BYTES = 64 << 20


def encode_images(x: np.ndarray) -> tuple[bytes, str]:
    """(npy bytes, dtype name) of [N, D] intensities in [0, 1], uint8 when that is exact."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    levels = np.rint(x * 255.0)
    exact = np.array_equal((levels / 255.0).astype(np.float32), x)
    arr = levels.astype(np.uint8) if exact else x
    return npy_bytes(arr), str(arr.dtype)


def write(export_dir: Path, x: np.ndarray, split: str) -> dict[str, Any]:
    """Write heldout.npy (the first COUNT images of `x`); returns the manifest entry."""
    data, dtype = encode_images(x[:COUNT])
    fsio.write_bytes(export_dir / NAME, data)
    return {
        "file": NAME,
        "split": split,
        "count": int(min(len(x), COUNT)),
        "dtype": dtype,
        "sha256": fsio.sha256_file(export_dir / NAME, ModelFileError),
    }


def read(export_dir: Path, entry: dict[str, Any], input_dim: int) -> np.ndarray:
    """The held-out images as float32 [N, D] in [0, 1], checked against the manifest entry."""
    from ..data.readers import npy_from_bytes

    path = export_dir / NAME
    data = fsio.read_regular(path, MAX_BYTES, ModelFileError)
    if fsio.sha256_of(data) != entry.get("sha256"):
        raise ModelFileError(f"{path}: sha256 differs from the manifest (changed after export)")
    try:
        arr = npy_from_bytes(data, str(path), kinds="uf", expected="uint8 or float32 pixels")
    except Exception as exc:  # DataError from the parser: the file is part of the export
        raise ModelFileError(str(exc)) from None
    if arr.ndim != 2 or arr.shape[1] != input_dim or len(arr) == 0:
        raise ModelFileError(f"{path}: shape {list(arr.shape)}, expected [N, {input_dim}]")
    x = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    if not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
        raise ModelFileError(f"{path}: pixels outside [0, 1]")
    return x
