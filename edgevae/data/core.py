"""`load_dataset`: read a data spec (`sources`), split it, binarize it.

See `edgevae.data` for the user-facing description of specs, kinds, splits and binarization.
"""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import fsio
from ..errors import DataError, UsageError
from . import checks as c
from .checks import fail
from .labels import keep_classes, resolve_classes
from .sources import SPLITS, Raw, read_source

BINARIZE_MODES: tuple[str, ...] = ("none", "static", "dynamic")


# Independent random streams derived from the seed.
_SPLIT_STREAM, _BINARIZE_STREAM = 0, 1


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images as float32 [N, D] in [0, 1] (D = H*W, row-major), split three ways; labels as
    int64 [N] indices into `classes`, row for row, or None when the source has none."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    image_shape: tuple[int, int]
    kind: str
    source: str
    binary: bool
    likelihood: str
    train_labels: np.ndarray | None = field(default=None, repr=False)
    valid_labels: np.ndarray | None = field(default=None, repr=False)
    test_labels: np.ndarray | None = field(default=None, repr=False)
    classes: tuple[str, ...] | None = None
    # Provenance for spec(); not part of the core interface.
    files: tuple[str, ...] = field(default=(), repr=False)
    seed: int = 0
    binarize: str = "none"
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    split_origin: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    label_files: tuple[str, ...] = field(default=(), repr=False)
    source_classes: tuple[str, ...] | None = field(default=None, repr=False)
    named: str | None = None

    @property
    def dim(self) -> int:
        return self.image_shape[0] * self.image_shape[1]

    def spec(self) -> dict[str, Any]:
        """JSON-able description for config.json (file hashes are computed now, streamed)."""
        paths = [Path(p) for p in self.files]
        hashes = [fsio.sha256_file(p, DataError) for p in paths]
        sizes = []
        for p in paths:
            with c.guard(p):
                sizes.append(p.stat().st_size)
        if self.kind == "png":
            # Class folders: the name is class/file, so the labels are covered by the digest.
            by_class = self.source_classes is not None
            digest = hashlib.sha256()
            for p, h in zip(paths, hashes, strict=True):
                name = f"{p.parent.name}/{p.name}" if by_class else p.name
                digest.update(f"{name}\0{h}\n".encode())
            what = "class/name" if by_class else "name"
            files = [
                {
                    "path": self.source,
                    "count": len(paths),
                    "bytes": sum(sizes),
                    "sha256": digest.hexdigest(),
                    "sha256_of": f"lines '{what}\\0sha256(file)\\n' in sorted {what} order",
                }
            ]
        else:
            files = [
                {"path": str(p), "bytes": n, "sha256": h}
                for p, n, h in zip(paths, sizes, hashes, strict=True)
            ]
        return {
            "kind": self.kind,
            "source": self.source,
            "files": files,
            "image_shape": list(self.image_shape),
            "sizes": {
                "train": int(self.train.shape[0]),
                "valid": int(self.valid.shape[0]),
                "test": int(self.test.shape[0]),
            },
            "split": {
                "seed": self.seed,
                "valid_fraction": self.valid_fraction,
                "test_fraction": self.test_fraction,
                "origin": dict(self.split_origin),
            },
            "binarize": self.binarize,
            "binary": self.binary,
            "likelihood": self.likelihood,
            "named": self.named,
            "classes": list(self.classes) if self.classes is not None else None,
            "labels": self._labels_spec(),
        }

    def labels(self, split: str) -> np.ndarray | None:
        """The labels of one split ("train", "valid" or "test")."""
        return {"train": self.train_labels, "valid": self.valid_labels, "test": self.test_labels}[
            split
        ]

    def _labels_spec(self) -> dict[str, Any] | None:
        """Class names, images per class, and the label files by name and sha256 (no paths:
        this part goes into export manifests as is)."""
        if self.classes is None or self.source_classes is None:
            return None
        files = []
        for name in self.label_files:
            p = Path(name)
            with c.guard(p):
                size = p.stat().st_size
            files.append({"name": p.name, "bytes": size, "sha256": fsio.sha256_file(p, DataError)})
        counts = {
            split: np.bincount(self.labels(split), minlength=len(self.classes)).tolist()
            for split in SPLITS
        }
        return {
            "source_classes": list(self.source_classes),
            "counts": counts,
            "files": files,
        }


# ------------------------------------------------------------------------ splits, binarizing


def _check_options(seed: int, binarize: str, valid_fraction: float, test_fraction: float) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"expected a non-negative integer, got {seed!r}", param="seed")
    if binarize not in BINARIZE_MODES:
        raise UsageError(
            f"expected one of {', '.join(BINARIZE_MODES)}, got {binarize!r}", param="binarize"
        )
    for name, value in (("valid", valid_fraction), ("test", test_fraction)):
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not 0.0 < float(value) < 1.0
        ):
            raise UsageError(
                f"expected a number in (0, 1), got {value!r}", param=f"{name}_fraction"
            )
    if valid_fraction + test_fraction >= 1.0:
        raise UsageError("valid_fraction + test_fraction must be below 1")


def _split(raw: Raw, seed: int, valid_fraction: float, test_fraction: float):
    """(images by split, labels by split or None, where each split came from); a split the
    source lacks is carved from train by a seeded permutation that the labels follow."""
    parts = dict(raw.parts)
    labels = dict(raw.labels.by_split) if raw.labels.by_split is not None else None
    origin = {split: "file" for split in parts}
    missing = [s for s in ("test", "valid") if s not in parts]
    if missing:
        n = parts["train"].shape[0]
        perm = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(n)
        fractions = {"test": test_fraction, "valid": valid_fraction}
        start = 0
        whole = "all images" if len(parts) == 1 else "the train file"
        chosen = {}
        for split in missing:
            count = max(1, int(round(n * fractions[split])))
            chosen[split] = perm[start : start + count]
            origin[split] = f"{fractions[split]:g} of {whole}, seeded shuffle"
            start += count
        if start >= n:
            raise fail(
                raw.source,
                f"only {n} images: too few to split off "
                f"{' and '.join(missing)} and keep a train split",
            )
        chosen["train"] = perm[start:]
        origin["train"] = f"rest of {whole}, seeded shuffle"
        for table in (parts, labels) if labels is not None else (parts,):
            pool = table["train"]
            for split, rows in chosen.items():
                table[split] = pool[rows]
    for split in SPLITS:
        if parts[split].shape[0] == 0:
            raise fail(raw.source, f"the {split} split is empty")
    return parts, labels, origin


def _keep(raw: Raw, parts, labels, classes: Sequence[int | str]) -> tuple[str, ...]:
    """Keep only the rows of the wanted classes in every split (in place); returns their
    names in the given order. Applied after splitting and binarizing, so that every kept
    image sits in the same split, with the same pixels, as without the filter."""
    assert labels is not None and raw.labels.classes is not None
    names = raw.labels.classes
    positions = resolve_classes(classes, names)
    kept = tuple(names[p] for p in positions)
    for split in SPLITS:
        parts[split], labels[split] = keep_classes(parts[split], labels[split], positions)
        if parts[split].shape[0] == 0:
            raise fail(raw.source, f"the {split} split has no images of classes {', '.join(kept)}")
    return kept


def _check_memory(raw: Raw, copies: int = 1) -> None:
    """Refuse a source whose images, as the float32 the models take (`copies` of them), would
    not fit in the memory limit (`edgevae.limits`): the readers cap the bytes a file holds,
    but 8-bit pixels take four times as much as float32."""
    from .. import limits

    n = sum(part.shape[0] for part in raw.parts.values())
    h, w = raw.image_shape
    need = copies * n * h * w * 4
    limits.check(need, f"{raw.source}: {n} images of {h}x{w} as float32", error=DataError)


def binarize_dynamic(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fresh Bernoulli(x) sample of every pixel, as float32 0/1 (call once per epoch)."""
    x = np.asarray(x)
    u = rng.random(x.shape, dtype=np.float32)
    return np.less(u, x).astype(np.float32)


def _binarize_static(x: np.ndarray, seed: int, index: int) -> np.ndarray:
    if c.is_binary(x):
        return x  # Bernoulli(0/1) is the identity
    return binarize_dynamic(x, np.random.default_rng([seed, _BINARIZE_STREAM, index]))


def load_dataset(
    spec: str | None,
    *,
    seed: int = 0,
    binarize: str = "none",
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    classes: Sequence[int | str] | None = None,
    labels: bool = False,
) -> Dataset:
    """Read `spec` (see `edgevae.data`), split it, binarize it.

    classes: keep only these classes (ints: positions in the source's class list; strs:
    names); `Dataset.classes` is then the kept names in this order, labels re-indexed into
    it. labels: require labels. A source without usable labels is an error (naming the file
    and why) when `labels` is true or `classes` is given; otherwise its labels are None.
    """
    _check_options(seed, binarize, valid_fraction, test_fraction)
    raw = read_source(spec)
    _check_memory(raw, copies=1 if binarize == "none" else 3)  # + the draws and the 0/1 result
    if (labels or classes is not None) and raw.labels.by_split is None:
        raise DataError(f"{raw.labels.problem or raw.source}; labels are needed here")
    parts, ys, origin = _split(raw, int(seed), valid_fraction, test_fraction)
    for index, split in enumerate(SPLITS):
        parts[split] = c.to_unit_float(parts[split])  # after splitting: copies uint8, not float
        if binarize == "static" or (binarize == "dynamic" and split != "train"):
            parts[split] = _binarize_static(parts[split], int(seed), index)
    names = raw.labels.classes if ys is not None else None
    if classes is not None:
        names = _keep(raw, parts, ys, classes)
    binary = all(c.is_binary(parts[split]) for split in SPLITS)
    return Dataset(
        train=parts["train"],
        valid=parts["valid"],
        test=parts["test"],
        image_shape=raw.image_shape,
        kind=raw.kind,
        source=raw.source,
        binary=binary,
        likelihood="gaussian" if raw.kind == "frey" else "bernoulli",
        train_labels=ys["train"] if ys is not None else None,
        valid_labels=ys["valid"] if ys is not None else None,
        test_labels=ys["test"] if ys is not None else None,
        classes=names,
        files=tuple(str(p) for p in raw.files),
        seed=int(seed),
        binarize=binarize,
        valid_fraction=float(valid_fraction),
        test_fraction=float(test_fraction),
        split_origin=tuple((s, origin[s]) for s in SPLITS),
        label_files=tuple(str(p) for p in raw.labels.files) if ys is not None else (),
        source_classes=raw.labels.classes if ys is not None else None,
        named=raw.named,
    )


def load_images(
    spec: str | None,
    *,
    split: str = "test",
    seed: int = 0,
    binarize: str = "none",
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> tuple[np.ndarray, tuple[int, int]]:
    """One split as float32 [N, D] plus (H, W); split 'all' = every image in source order."""
    if split == "all":
        if binarize != "none":
            raise UsageError("only 'none' with split 'all'", param="binarize")
        _check_options(seed, binarize, valid_fraction, test_fraction)
        raw = read_source(spec)
        _check_memory(raw, copies=2)  # the splits' float32 images, then joined
        order = [c.to_unit_float(raw.parts[s]) for s in SPLITS if s in raw.parts]
        x = order[0] if len(order) == 1 else np.concatenate(order)
        return np.ascontiguousarray(x, dtype=np.float32), raw.image_shape
    if split not in SPLITS:
        raise UsageError(f"expected one of train, valid, test, all; got {split!r}", param="split")
    ds = load_dataset(
        spec,
        seed=seed,
        binarize=binarize,
        valid_fraction=valid_fraction,
        test_fraction=test_fraction,
    )
    return getattr(ds, split), ds.image_shape
