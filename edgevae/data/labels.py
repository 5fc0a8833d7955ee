"""Class labels: IDX label files, label arrays, class names, and keeping only some classes.

Labels are int64 indices into a tuple of class names. A source whose labels cannot be read
(no label file, a count that differs from the images, ...) is not an error by itself: the
reason is kept (`Labels.problem`) and becomes the error only when labels are needed.
"""

from __future__ import annotations

import hashlib
import numbers
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UsageError
from . import checks as c
from .checks import fail
from .registry import classes_for_labels

IDX_LABEL_MAGIC = 0x00000801  # 2049: unsigned bytes, one dimension
#: Most classes labels may name: the cap a manifest's `classes` has (runtime.manifest).
MAX_CLASSES = 10_000


@dataclass
class Labels:
    """A source's labels by split (aligned with its images), or why it has none."""

    by_split: dict[str, np.ndarray] | None = None  # int64 (N,)
    classes: tuple[str, ...] | None = None
    files: list[Path] = field(default_factory=list)  # label files read (IDX)
    problem: str | None = None  # "<file>: <why>" when by_split is None

    @classmethod
    def missing(cls, where: object, why: str) -> Labels:
        return cls(problem=f"{where}: {' '.join(why.split())}")


def digit_names(values: Sequence[np.ndarray], where: object = "labels") -> tuple[str, ...]:
    """Class names "0".."K-1" for integer labels whose largest value is K-1; a DataError
    naming `where` for a label of MAX_CLASSES or more (one name per class is made here)."""
    top = max(int(v.max()) for v in values if v.size)
    if top >= MAX_CLASSES:
        raise fail(where, f"label {top} is over the limit of {MAX_CLASSES} classes")
    return tuple(str(i) for i in range(top + 1))


# --------------------------------------------------------------------------------------- IDX


def read_idx_labels(path: Path, count: int) -> tuple[np.ndarray, str]:
    """(int64 labels, sha256 of the decompressed content) from an IDX label file (magic
    2049, raw or gzipped) that must hold exactly `count` labels."""
    data = c.read_content(path, limit=8 + count + 1)
    if len(data) < 8:
        raise fail(path, "truncated IDX label header")
    magic, n = struct.unpack(">II", data[:8])
    if magic != IDX_LABEL_MAGIC:
        raise fail(path, f"not an IDX label file (magic {magic}, expected {IDX_LABEL_MAGIC})")
    if n != count:
        raise fail(path, f"holds {n} labels but the images file has {count} images")
    if len(data) != 8 + n:
        kind = "truncated" if len(data) < 8 + n else "trailing data"
        raise fail(path, f"{kind}: header declares {n} labels, {len(data) - 8} bytes follow")
    labels = np.frombuffer(data, dtype=np.uint8, offset=8).astype(np.int64)
    return labels, hashlib.sha256(data).hexdigest()


def idx_label_names(image_name: str) -> list[str]:
    """The label file names that belong to an IDX images file name ([] if it has none)."""
    base = image_name[:-3] if image_name.endswith(".gz") else image_name
    for images, labels in (
        ("-images-idx3-ubyte", "-labels-idx1-ubyte"),
        ("-images.idx3", "-labels.idx1"),
    ):
        if images in base:
            stem = base.replace(images, labels)
            return [stem, stem + ".gz"]
    return []


def idx_labels(images: dict[str, Path], counts: dict[str, int], find) -> Labels:
    """Labels for IDX image files by split; `find(image_path, names)` returns the label file
    beside an images file (folder policy applied) or None."""
    by_split, files, digests = {}, [], {}
    for split, image_path in images.items():
        names = idx_label_names(image_path.name)
        if not names:
            return Labels.missing(image_path, "no label file name belongs to this file name")
        label_path = find(image_path, names)
        if label_path is None:
            return Labels.missing(
                image_path.parent / names[0], f"no label file beside {image_path.name}"
            )
        try:
            by_split[split], digests[split] = read_idx_labels(label_path, counts[split])
        except c.DataError as exc:
            return Labels(problem=str(exc))
        files.append(label_path)
    first = next(iter(digests.values()))
    classes = classes_for_labels(first) or digit_names(list(by_split.values()))
    return Labels(by_split, classes, files)


# --------------------------------------------------------------------------- choosing classes


def resolve_classes(wanted: Sequence[int | str], names: tuple[str, ...]) -> list[int]:
    """Positions in `names` of the wanted classes: an int is a position, a str a name (or,
    when no class has that name, a decimal position)."""
    if isinstance(wanted, (str, bytes)) or not isinstance(wanted, Sequence) or not wanted:
        raise UsageError(
            f"expected a non-empty list of class positions or names, got {wanted!r}",
            param="classes",
        )
    out: list[int] = []
    for item in wanted:
        if isinstance(item, str) and item in names:
            pos = names.index(item)
        elif isinstance(item, str) and item.strip().isdecimal():
            pos = int(item)
        elif isinstance(item, numbers.Integral) and not isinstance(item, bool):
            pos = int(item)
        else:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise UsageError(f"no class {item!r}; the classes are: {shown}", param="classes")
        if not 0 <= pos < len(names):
            raise UsageError(
                f"class position {pos} is out of range: the data has {len(names)} classes "
                f"(0-{len(names) - 1})",
                param="classes",
            )
        if pos in out:
            raise UsageError(f"class {names[pos]!r} is listed twice", param="classes")
        out.append(pos)
    return out


def keep_classes(
    images: np.ndarray, labels: np.ndarray, positions: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The rows whose label is in `positions` (order kept), labels re-indexed into it."""
    remap = np.full(max(int(labels.max(initial=0)), max(positions)) + 1, -1, dtype=np.int64)
    remap[positions] = np.arange(len(positions))
    new = remap[labels]
    rows = np.flatnonzero(new >= 0)
    return images[rows], new[rows]
