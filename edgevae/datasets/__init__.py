"""Dataset readers, validation, splits and binarization (see `edgevae.data` for the overview)."""

from .core import (
    BINARIZE_MODES,
    DATA_KINDS,
    Dataset,
    binarize_dynamic,
    load_dataset,
    load_images,
)

__all__ = [
    "BINARIZE_MODES",
    "DATA_KINDS",
    "Dataset",
    "binarize_dynamic",
    "load_dataset",
    "load_images",
]
