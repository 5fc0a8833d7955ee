"""Labels of a conditional model: a class given by position or by name, as one-hot rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import UsageError


def class_index(classes: Sequence[str], label: int | str, param: str = "label") -> int:
    """The position of `label` in `classes`: a name, else a position (int or decimal text)."""
    if isinstance(label, str) and label in classes:
        return list(classes).index(label)
    try:
        index = int(label)
    except (TypeError, ValueError):
        index = -1
    if isinstance(label, bool) or not 0 <= index < len(classes):
        raise UsageError(
            f"{label!r} is not one of the model's classes ({', '.join(classes)})", param=param
        )
    return index


def indices(classes: Sequence[str], labels, n: int, param: str = "labels") -> np.ndarray:
    """int64 [n] class positions for one label (repeated) or n labels (positions or names)."""
    if isinstance(labels, (str, int, np.integer)) and not isinstance(labels, bool):
        return np.full(n, class_index(classes, labels, param), dtype=np.int64)
    items = list(np.asarray(labels).reshape(-1)) if labels is not None else []
    if len(items) != n:
        raise UsageError(f"expected {n} labels, got {len(items)}", param=param)
    return np.array([class_index(classes, item, param) for item in items], dtype=np.int64)


def rows(n_classes: int, index: np.ndarray) -> np.ndarray:
    """One-hot float32 [len(index), n_classes] (no [C, C] identity matrix in between)."""
    out = np.zeros((len(index), n_classes), dtype=np.float32)
    out[np.arange(len(index)), index] = 1.0
    return out


def one_hot(classes: Sequence[str], labels, n: int, param: str = "labels") -> np.ndarray:
    """float32 [n, C] rows for one label (repeated) or n labels (positions or names)."""
    return rows(len(classes), indices(classes, labels, n, param))


def match_one_hot(classes: Sequence[str], data_classes, labels, param: str = "data") -> np.ndarray:
    """float32 [N, C] one-hot rows, in the model's `classes`, of data labels given as
    positions into the data's own class names `data_classes` (as `data.Dataset` holds them).
    Names are matched, not positions: a model trained on classes 3 and 8 knows "3" as 0."""
    if labels is None:
        raise UsageError("a conditional model needs labelled data", param=param)
    index = {name: i for i, name in enumerate(classes)}
    names = [str(n) for n in (data_classes or [])]
    missing = [n for n in names if n not in index]
    if missing:
        raise UsageError(
            f"the data has classes {missing} that the model does not know ({list(classes)})",
            param=param,
        )
    mapped = np.array([index[n] for n in names], dtype=np.int64)[np.asarray(labels, np.int64)]
    return rows(len(classes), mapped)


def cycle_one_hot(n: int, n_classes: int) -> np.ndarray | None:
    """float32 [n, n_classes] one-hot rows of classes 0, 1, ..., C-1, 0, 1, ...: labels for
    inputs that have none of their own (timing, seeded z); None when `n_classes` is 0 (an
    unconditional model)."""
    if not n_classes:
        return None
    return rows(n_classes, np.arange(n) % n_classes)
