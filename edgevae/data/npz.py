"""`.npz` data sets: images by split, and labels when the archive has them.

Images: `x_train` (+ `x_valid`, `x_test`; Keras-style `X_*` and `x_val` too), `train` (+
`valid`, `test`), or a single array. Labels: `y_train`/`y_valid`/`y_test` beside split images,
or `y` beside a single array (split with the images by the seeded shuffle); integers >= 0, one
per image. An optional `classes` array of strings names them (else "0".."K-1"). Every member
is parsed by `npy_from_bytes` (no pickle), its size checked before it is read.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from . import checks as c
from .checks import fail, guard
from .labels import MAX_CLASSES, Labels, digit_names
from .readers import npy_from_bytes

_SPLIT_KEYS = {
    "train": ("x_train", "train", "X_train"),
    "valid": ("x_valid", "valid", "x_val", "val", "validation", "X_valid", "X_val"),
    "test": ("x_test", "test", "X_test"),
}
_LABEL_KEYS = {
    "train": ("y_train", "Y_train"),
    "valid": ("y_valid", "y_val", "y_validation", "Y_valid", "Y_val"),
    "test": ("y_test", "Y_test"),
}
_SINGLE_LABEL_KEY = "y"
_CLASSES_KEY = "classes"
_NOT_IMAGES = {k for keys in _LABEL_KEYS.values() for k in keys} | {
    _SINGLE_LABEL_KEY,
    _CLASSES_KEY,
}


def _member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> bytes:
    if info.file_size > c.MAX_FILE_BYTES:
        raise fail(where, f"{info.file_size} bytes, more than the {c.MAX_FILE_BYTES}-byte limit")
    with zf.open(info) as member:
        raw = c.read_upto(member, c.MAX_FILE_BYTES + 1)
    if len(raw) > c.MAX_FILE_BYTES:
        raise fail(where, f"more than the {c.MAX_FILE_BYTES}-byte limit")
    return raw


def _image_keys(path: Path, members: dict[str, zipfile.ZipInfo]) -> dict[str, str]:
    chosen = {}
    for split, keys in _SPLIT_KEYS.items():
        key = next((k for k in keys if k in members), None)
        if key is not None:
            chosen[split] = key
    if "train" in chosen:
        return chosen
    images = [k for k in members if k not in _NOT_IMAGES] or list(members)
    if len(images) != 1:
        raise fail(
            path,
            f"arrays {', '.join(sorted(members))}: expected x_train "
            "(+ x_valid, x_test), train (+ valid, test), or a single array (+ y)",
        )
    return {"train": images[0]}


def read_npz(path: Path) -> tuple[dict[str, tuple[np.ndarray, str]], Labels]:
    """(split -> ((N, H, W), 'file[key]'), labels) from an .npz archive."""
    data = c.read_content(path)
    with guard(path, "cannot read the zip archive"), zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = {
            info.filename[:-4]: info for info in zf.infolist() if info.filename.endswith(".npy")
        }
        if not members:
            raise fail(path, "holds no arrays")
        chosen = _image_keys(path, members)
        out: dict[str, tuple[np.ndarray, str]] = {}
        for split, key in chosen.items():
            where = f"{path}[{key}]"
            arr = npy_from_bytes(_member(zf, members[key], where), where)
            out[split] = (c.as_images(arr, where), where)
        labels = _labels(path, zf, members, chosen, {s: a.shape[0] for s, (a, _) in out.items()})
    return out, labels


def _label_keys(members: dict, chosen: dict[str, str]) -> dict[str, str] | str:
    """Label key by split, or why the archive has no usable labels."""
    found = {
        split: key
        for split in chosen
        if (key := next((k for k in _LABEL_KEYS[split] if k in members), None))
    }
    if _SINGLE_LABEL_KEY in members and not found:
        if len(chosen) > 1:
            return "has y but its images are split; save y_train, y_valid, y_test instead"
        return {"train": _SINGLE_LABEL_KEY}
    if not found:
        return "no labels (arrays y_train, y_valid, y_test, or y)"
    missing = [chosen[s] for s in chosen if s not in found]
    if missing:
        return f"no labels for {', '.join(missing)} (has {', '.join(found.values())})"
    return found


def _labels(path: Path, zf, members, chosen, counts: dict[str, int]) -> Labels:
    keys = _label_keys(members, chosen)
    if isinstance(keys, str):
        return Labels.missing(path, keys)
    try:
        by_split = {
            split: _label_array(zf, members, path, key, counts[split])
            for split, key in keys.items()
        }
        classes = digit_names(list(by_split.values()), path)
        if _CLASSES_KEY in members:
            where = f"{path}[{_CLASSES_KEY}]"
            names = npy_from_bytes(
                _member(zf, members[_CLASSES_KEY], where), where, kinds="U", expected="strings"
            )
    except c.DataError as exc:  # unusable labels are an error only where labels are needed
        return Labels(problem=str(exc))
    if _CLASSES_KEY in members:
        listed = tuple(str(n) for n in names.reshape(-1))
        if len(set(listed)) != len(listed) or not all(listed) or len(listed) < len(classes):
            return Labels.missing(
                where, f"{len(listed)} names for {len(classes)} classes (unique, non-empty)"
            )
        if len(listed) > MAX_CLASSES:
            return Labels.missing(where, f"{len(listed)} names, over the {MAX_CLASSES}-class limit")
        classes = listed
    return Labels(by_split, classes)


def _label_array(zf, members, path: Path, key: str, count: int) -> np.ndarray:
    """int64 labels from one member: integers >= 0 (whole floats too), one per image."""
    where = f"{path}[{key}]"
    y = npy_from_bytes(
        _member(zf, members[key], where), where, kinds="iuf", expected="integer labels"
    )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != count:
        raise fail(where, f"shape {y.shape}, expected ({count},): one label per image")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise fail(where, "labels that are not whole numbers")
    if y.size and y.min() < 0:
        raise fail(where, f"negative label {y.min():g}")
    return y.astype(np.int64)
