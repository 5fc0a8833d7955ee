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


def one_hot(classes: Sequence[str], labels, n: int, param: str = "labels") -> np.ndarray:
    """float32 [n, C] rows for one label (repeated) or n labels (positions or names)."""
    if isinstance(labels, (str, int, np.integer)) and not isinstance(labels, bool):
        index = np.full(n, class_index(classes, labels, param), dtype=np.int64)
    else:
        items = list(np.asarray(labels).reshape(-1)) if labels is not None else []
        if len(items) != n:
            raise UsageError(f"expected {n} labels, got {len(items)}", param=param)
        index = np.array([class_index(classes, item, param) for item in items], dtype=np.int64)
    return np.eye(len(classes), dtype=np.float32)[index]
