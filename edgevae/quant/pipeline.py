"""Export then quantize: the step `edgevae train` ends with, and `edgevae export` runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..runtime import manifest


def run_dataset(man: dict[str, Any], data: str | None):
    """A run's Dataset (or --data's), split and binarized as in training; dynamic
    binarization becomes the fixed seeded sample that evaluation uses. `man` needs "train"
    (the run's train config) and "image_shape": a manifest, or the run's config.json parts."""
    from ..data.core import load_dataset

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
    return ds


def run_images(man: dict[str, Any], data: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) images: calibration and held-out sets for quantization."""
    ds = run_dataset(man, data)
    return ds.train, ds.valid


def quantize_dir(
    export_dir: Path,
    data: str | None = None,
    progress=None,
    **options: Any,
):
    from .search import quantize_export

    man = manifest.read(export_dir)
    train, valid = run_images(man, data)
    return quantize_export(export_dir, train, valid, progress=progress, **options)
