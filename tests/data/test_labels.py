"""Labels in every labelled format, how they follow splits, and keeping some classes."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from edgevae.data.core import load_dataset
from edgevae.data.readers import default_csv_path
from edgevae.errors import DataError, UsageError
from edgevae.runtime.manifest import portable_data

# Every image carries its own id in its first two pixels; its label is a function of the id,
# so a test can check, row by row, that the labels followed the images through any shuffle.


def tagged(n: int, first: int = 0, side: int = 4) -> tuple[np.ndarray, np.ndarray]:
    ids = np.arange(first, first + n)
    x = np.random.default_rng(first).integers(0, 256, (n, side, side), dtype=np.uint8)
    x[:, 0, 0], x[:, 0, 1] = ids // 256, ids % 256
    return x, label_of(ids)


def label_of(ids: np.ndarray) -> np.ndarray:
    return (ids * 7 + 3) % 5


def ids_of(x: np.ndarray) -> np.ndarray:
    px = np.rint(x * 255).astype(np.int64)
    return px[:, 0] * 256 + px[:, 1]


def assert_labels_follow(ds) -> None:
    names = ds.classes
    for split in ("train", "valid", "test"):
        y = ds.labels(split)
        assert y.dtype == np.int64 and y.shape == (len(getattr(ds, split)),)
        want = label_of(ids_of(getattr(ds, split)))
        assert [names[i] for i in y] == [str(v) for v in want]


def idx_images(arr: np.ndarray) -> bytes:
    return struct.pack(">IIII", 0x803, *arr.shape) + arr.tobytes()


def idx_labels(y: np.ndarray, magic: int = 0x801, count: int | None = None) -> bytes:
    return (
        struct.pack(">II", magic, len(y) if count is None else count) + y.astype(np.uint8).tobytes()
    )


def put(path: Path, data: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def idx_folder(root: Path, gz: bool = True, labels: bool = True) -> Path:
    sfx = ".gz" if gz else ""
    train, ytrain = tagged(60)
    test, ytest = tagged(20, first=1000)
    put(root / f"train-images-idx3-ubyte{sfx}", idx_images(train), gz)
    put(root / f"t10k-images-idx3-ubyte{sfx}", idx_images(test), gz)
    if labels:
        put(root / f"train-labels-idx1-ubyte{sfx}", idx_labels(ytrain), gz)
        put(root / f"t10k-labels-idx1-ubyte{sfx}", idx_labels(ytest), gz)
    return root


# --------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_labels_follow_the_split(tmp_path, gz):
    ds = load_dataset(str(idx_folder(tmp_path / "d", gz)), seed=3)
    assert ds.classes == ("0", "1", "2", "3", "4")
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (54, 6, 20)
    assert_labels_follow(ds)
    again = load_dataset(str(tmp_path / "d"), seed=3)
    np.testing.assert_array_equal(again.train_labels, ds.train_labels)


def test_idx_single_file_finds_its_labels(tmp_path):
    idx_folder(tmp_path, gz=True)
    ds = load_dataset(str(tmp_path / "train-images-idx3-ubyte.gz"), seed=1)
    assert ds.train.shape[0] + ds.valid.shape[0] + ds.test.shape[0] == 60
    assert_labels_follow(ds)


def test_idx_label_problems_matter_only_when_labels_are_needed(tmp_path):
    folder = idx_folder(tmp_path / "d", labels=False)
    assert load_dataset(str(folder)).train_labels is None
    assert load_dataset(str(folder)).classes is None
    for kwargs in ({"labels": True}, {"classes": [1]}):
        with pytest.raises(DataError, match="train-labels-idx1-ubyte: no label file beside"):
            load_dataset(str(folder), **kwargs)
    train_y = label_of(np.arange(60))
    cases = {
        idx_labels(train_y[:59]): "holds 59 labels but the images file has 60",
        idx_labels(train_y, magic=0x803): "not an IDX label file",
        idx_labels(train_y)[:-3]: "truncated",
        idx_labels(train_y) + b"x": "trailing data",
    }
    put(folder / "t10k-labels-idx1-ubyte", idx_labels(label_of(np.arange(1000, 1020))))
    for data, why in cases.items():
        label_file = put(folder / "train-labels-idx1-ubyte", data)
        assert load_dataset(str(folder)).train_labels is None
        with pytest.raises(DataError) as info:
            load_dataset(str(folder), labels=True)
        assert str(label_file) in str(info.value) and why in str(info.value)


def test_label_file_symlinked_from_outside_is_not_read(tmp_path):
    folder = idx_folder(tmp_path / "d", labels=False)
    outside = put(tmp_path / "elsewhere" / "labels", idx_labels(label_of(np.arange(60))))
    os.symlink(outside, folder / "train-labels-idx1-ubyte")
    with pytest.raises(DataError, match="no label file beside"):
        load_dataset(str(folder), labels=True)


def test_unlabelled_kinds(tmp_path):
    bits = (np.random.default_rng(0).random((10, 16)) > 0.5).astype(np.uint8)
    amat = put(tmp_path / "b.amat", b"".join(b" ".join(b"%d" % v for v in r) + b"\n" for r in bits))
    npy = tmp_path / "x.npy"
    np.save(npy, tagged(10)[0])
    for path in (amat, npy):
        assert load_dataset(str(path)).classes is None
        with pytest.raises(DataError, match="labels are needed"):
            load_dataset(str(path), classes=[0])


# ------------------------------------------------------------------------------ default set


def test_default_set_labels_follow_the_shuffle():
    table = np.loadtxt(
        io.BytesIO(gzip.decompress(default_csv_path().read_bytes())), delimiter=",", dtype=np.int64
    )
    by_image = {row[:784].astype(np.uint8).tobytes(): int(row[784]) for row in table}
    ds = load_dataset(None, seed=5)
    assert ds.classes == tuple(str(d) for d in range(10))
    for split in ("train", "valid", "test"):
        x = np.rint(getattr(ds, split) * 255).astype(np.uint8)
        want = [by_image[row.tobytes()] for row in x]
        np.testing.assert_array_equal(ds.labels(split), want)


# --------------------------------------------------------------------------------------- npz


def test_npz_labels(tmp_path):
    train, ytrain = tagged(40)
    test, ytest = tagged(10, first=500)
    np.savez(tmp_path / "split.npz", x_train=train, y_train=ytrain, x_test=test, y_test=ytest)
    assert_labels_follow(load_dataset(str(tmp_path / "split.npz")))
    np.savez(tmp_path / "one.npz", x=train, y=ytrain.astype(np.float64))  # whole floats are fine
    ds = load_dataset(str(tmp_path / "one.npz"), seed=2)
    assert ds.classes == ("0", "1", "2", "3", "4")
    assert_labels_follow(ds)
    names = np.array(["zero", "one", "two", "three", "four", "five"])
    np.savez(tmp_path / "named.npz", x=train, y=ytrain, classes=names)
    ds = load_dataset(str(tmp_path / "named.npz"), classes=["two", "zero"])
    assert ds.classes == ("two", "zero")
    assert set(ds.train_labels.tolist()) == {0, 1}
    assert all(label_of(ids_of(ds.train))[ds.train_labels == 0] == 2)


@pytest.mark.parametrize(
    ("arrays", "why"),
    [
        ({"x_train": 0, "x_test": 1, "y": 0}, "has y but its images are split"),
        ({"x_train": 0, "x_test": 1, "y_train": 0}, "no labels for x_test"),
        ({"x": 0}, "no labels (arrays y_train"),
        ({"x": 0, "y": "short"}, "one label per image"),
        ({"x": 0, "y": "neg"}, "negative label"),
        ({"x": 0, "y": "frac"}, "not whole numbers"),
        ({"x": 0, "y": "obj"}, "pickle"),
        ({"x": 0, "y": 0, "classes": "dup"}, "unique"),
    ],
)
def test_npz_label_problems(tmp_path, arrays, why):
    x, y = tagged(20)
    make = {
        0: lambda k: x if k.startswith("x") else y,
        1: lambda k: x[:5],
        "short": lambda k: y[:-1],
        "neg": lambda k: y - 1,
        "frac": lambda k: y + 0.5,
        "obj": lambda k: np.array([None] * 20, dtype=object),
        "dup": lambda k: np.array(["a", "a", "b", "c", "d"]),
    }
    np.savez(tmp_path / "d.npz", **{k: make[v](k) for k, v in arrays.items()})
    assert load_dataset(str(tmp_path / "d.npz")).train_labels is None
    with pytest.raises(DataError, match="d.npz") as info:
        load_dataset(str(tmp_path / "d.npz"), labels=True)
    assert why in str(info.value)


# --------------------------------------------------------------------------------------- PNG


def save_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode="L").save(path, format="PNG")


def test_png_class_folders(tmp_path):
    root = tmp_path / "pets"
    x, _ = tagged(30)
    for i, img in enumerate(x):
        cls = ["dog", "cat", "emu"][i % 3]
        save_png(root / cls / f"{i:03d}.png", img)
    save_png(root / ".hidden" / "h.png", x[0])  # hidden class folder: skipped
    save_png(root / "cat" / "deeper" / "d.png", x[0])  # two levels down: skipped
    (root / "empty").mkdir()  # no PNGs: not a class
    save_png(tmp_path / "outside" / "o.png", x[0])
    os.symlink(tmp_path / "outside", root / "linked")  # leads outside: skipped
    os.symlink(root / "dog", root / "zdog")  # inside the folder: followed
    ds = load_dataset(str(root), seed=0)
    assert ds.kind == "png" and ds.classes == ("cat", "dog", "emu", "zdog")
    assert sum(len(getattr(ds, s)) for s in ("train", "valid", "test")) == 40
    for split in ("train", "valid", "test"):
        ids = ids_of(getattr(ds, split))
        want = np.array([["dog", "cat", "emu"][i % 3] for i in ids])
        got = np.array([ds.classes[k] for k in ds.labels(split)])
        assert np.all((got == want) | ((got == "zdog") & (want == "dog")))
    spec = ds.spec()
    assert "class/name" in spec["files"][0]["sha256_of"]
    assert spec["labels"]["files"] == []
    # PNGs directly in the folder: one unlabelled set, subfolders ignored
    for i in range(10):
        save_png(root / f"top{i}.png", x[i])
    flat = load_dataset(str(root))
    assert flat.classes is None and len(flat.train) + len(flat.valid) + len(flat.test) == 10
    with pytest.raises(DataError, match="directly in the folder have no labels"):
        load_dataset(str(root), labels=True)


# ---------------------------------------------------------------------------- keeping classes


def test_classes_keep_subsets_of_the_same_splits(tmp_path):
    folder = idx_folder(tmp_path / "d")
    full = load_dataset(str(folder), seed=4, binarize="static")
    some = load_dataset(str(folder), seed=4, binarize="static", classes=[3, "1"])
    assert some.classes == ("3", "1")
    assert some.source_classes == ("0", "1", "2", "3", "4")
    for split in ("train", "valid", "test"):
        part, whole = getattr(some, split), getattr(full, split)
        keep = np.isin(full.labels(split), [3, 1])
        np.testing.assert_array_equal(part, whole[keep])  # same images, same binary pixels
        names = [full.classes[k] for k in full.labels(split)[keep]]
        assert [some.classes[k] for k in some.labels(split)] == names
    spec = some.spec()
    assert spec["classes"] == ["3", "1"]
    assert spec["sizes"]["train"] == len(some.train)
    assert [f["name"] for f in spec["labels"]["files"]] == [
        "train-labels-idx1-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    assert all(len(f["sha256"]) == 64 for f in spec["labels"]["files"])
    portable = json.dumps(portable_data(spec))
    assert str(tmp_path) not in portable


@pytest.mark.parametrize(
    ("classes", "why"),
    [
        ([], "non-empty list"),
        ("3", "non-empty list"),
        ([7], "out of range"),
        (["cat"], "no class 'cat'"),
        ([1, "1"], "listed twice"),
        ([True], "no class True"),
    ],
)
def test_bad_classes_are_usage_errors(tmp_path, classes, why):
    folder = idx_folder(tmp_path / "d")
    with pytest.raises(UsageError, match=why) as info:
        load_dataset(str(folder), classes=classes)
    assert info.value.param == "classes"


def test_class_missing_from_a_split(tmp_path):
    x, y = tagged(40)
    y[:] = 0
    y[:2] = 1  # two images of class 1: the seeded split leaves some split without one
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with pytest.raises(DataError, match="split has no images of classes 1"):
        load_dataset(str(tmp_path / "d.npz"), classes=[1])
