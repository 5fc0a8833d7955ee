"""A trained run's data again: the same source, seed and splits as in training, for
evaluation, calibration and the export's held-out images."""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from .core import Dataset, load_dataset


def load_run_data(
    train: dict[str, Any], image_shape: list[int] | tuple[int, int], data: str | None = None
) -> Dataset:
    """The run's Dataset (or `data`'s, split with the run's seed), binarized as in training
    and with the classes it trained on; dynamic binarization becomes the fixed seeded sample
    that evaluation uses. `train` is the run's train config (config.json "train"),
    `image_shape` the model's."""
    binarize = train.get("binarize", "none")
    ds = load_dataset(
        data if data is not None else train.get("data"),
        seed=int(train.get("seed", 0)),
        binarize="static" if binarize == "dynamic" else binarize,
        classes=train.get("classes"),
        labels=bool(train.get("conditional", False)),
    )
    want = int(image_shape[0]) * int(image_shape[1])
    if ds.train.shape[1] != want:
        raise UsageError(
            f"images have {ds.train.shape[1]} pixels, the model expects {want}", param="data"
        )
    return ds
