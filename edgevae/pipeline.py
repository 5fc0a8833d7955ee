"""Export then quantize: the step `edgevae train` ends with, and `edgevae export` runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import manifest
from .errors import UsageError


def run_images(man: dict[str, Any], data: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) images: from --data, or from the data the exported run was trained on."""
    from .data import load_dataset

    train = man.get("train") or {}
    binarize = train.get("binarize", "none")
    ds = load_dataset(
        data if data is not None else train.get("data"),
        seed=int(train.get("seed", 0)),
        binarize="static" if binarize == "dynamic" else binarize,
    )
    want = int(np.prod(man["image_shape"]))
    if ds.train.shape[1] != want:
        raise UsageError(f"--data: images have {ds.train.shape[1]} pixels, the model {want}")
    return ds.train, ds.valid


def quantize_dir(
    export_dir: Path,
    data: str | None = None,
    progress=None,
    **options: Any,
):
    from .quantize import quantize_export

    man = manifest.read(export_dir)
    train, valid = run_images(man, data)
    return quantize_export(export_dir, train, valid, progress=progress, **options)
