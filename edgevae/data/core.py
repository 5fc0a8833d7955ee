"""`load_dataset`: resolve a --data spec, read it, split it, binarize it.

See `edgevae.data` for the user-facing description of specs, kinds, splits and binarization.
"""

from __future__ import annotations

import hashlib
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import fsio
from ..errors import DataError, UsageError
from . import checks as c
from . import readers
from .checks import fail
from .png import png_files, read_png_folder

DATA_KINDS: tuple[str, ...] = ("default", "idx", "amat", "frey", "npz", "npy", "png")
FORCEABLE_KINDS: tuple[str, ...] = DATA_KINDS[1:]
BINARIZE_MODES: tuple[str, ...] = ("none", "static", "dynamic")
SPLITS: tuple[str, ...] = ("train", "valid", "test")

_ACCEPTED = (
    "IDX images (.idx3-ubyte[.gz]), binarized MNIST .amat[.gz], Frey Face .mat, .npz, "
    ".npy, or a folder of PNGs / IDX pair / binarized_mnist_*.amat / frey_rawface.mat"
)

# Independent random streams derived from the seed.
_SPLIT_STREAM, _BINARIZE_STREAM = 0, 1


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images as float32 [N, D] in [0, 1] (D = H*W, row-major), split three ways."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    image_shape: tuple[int, int]
    kind: str
    source: str
    binary: bool
    likelihood: str
    # Provenance for spec(); not part of the core interface.
    files: tuple[str, ...] = field(default=(), repr=False)
    seed: int = 0
    binarize: str = "none"
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    split_origin: tuple[tuple[str, str], ...] = field(default=(), repr=False)

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
            digest = hashlib.sha256()
            for p, h in zip(paths, hashes, strict=True):
                digest.update(f"{p.name}\0{h}\n".encode())
            files = [
                {
                    "path": self.source,
                    "count": len(paths),
                    "bytes": sum(sizes),
                    "sha256": digest.hexdigest(),
                    "sha256_of": "lines 'name\\0sha256(file)\\n' in sorted name order",
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
        }


@dataclass
class _Raw:
    """A source as read: its own splits (train always; valid/test when the source has them)."""

    parts: dict[str, np.ndarray]  # (N, H, W) as read, pixels checked; converted after splitting
    image_shape: tuple[int, int]
    kind: str
    source: str
    files: list[Path]


# ----------------------------------------------------------------------------- resolution


def _parse_spec(spec: str | None) -> tuple[str | None, Path | None]:
    """(forced kind or None, path) ; ('default', None) for the default set."""
    if spec is None:
        return "default", None
    text = str(spec)
    if not text:
        raise UsageError("--data: empty path")
    if text in ("default", readers.DEFAULT_SOURCE):  # the latter is what spec()["source"] says
        return "default", None
    prefix, sep, rest = text.partition(":")
    if sep and prefix.lower() in FORCEABLE_KINDS:
        if not rest:
            raise UsageError(f"--data {text}: missing path after '{prefix}:'")
        return prefix.lower(), Path(rest).expanduser()
    return None, Path(text).expanduser()


def _first(folder: Path, names: list[str]) -> Path | None:
    # Fix: is_file() followed any symlink, so an IDX/amat name in a data folder could read a
    # file anywhere (the PNG scan already refused that); one policy for all folder kinds now.
    root = folder.resolve()
    for name in names:
        path = folder / name
        if c.folder_entry_problem(root, path) is None:
            return path
    return None


def _variants(*stems: str) -> list[str]:
    return [stem + gz for stem in stems for gz in ("", ".gz")]


_IDX_TRAIN = _variants("train-images-idx3-ubyte", "train-images.idx3-ubyte")
_IDX_TEST = _variants("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte")
_AMAT = {s: _variants(f"binarized_mnist_{s}.amat") for s in SPLITS}


def _folder_layouts(folder: Path) -> dict[str, dict[str, Path] | list[Path] | str]:
    """Every kind the folder could be: files by split, the PNG list, or why it is incomplete."""
    found: dict[str, dict[str, Path] | list[Path] | str] = {}
    train, test = _first(folder, _IDX_TRAIN), _first(folder, _IDX_TEST)
    if train and test:
        found["idx"] = {"train": train, "test": test}
    elif train or test:
        have, missing = (train, _IDX_TEST[0]) if train else (test, _IDX_TRAIN[0])
        found["idx"] = (
            f"has {have.name} but no {missing}[.gz]; pass the file itself to split it by fractions"
        )
    amat = {s: p for s in SPLITS if (p := _first(folder, _AMAT[s]))}
    if "train" in amat and "test" in amat:
        found["amat"] = amat
    elif amat:
        found["amat"] = (
            "needs binarized_mnist_train.amat[.gz] and binarized_mnist_test.amat[.gz]"
            f" (found {', '.join(p.name for p in amat.values())})"
        )
    frey = folder / "frey_rawface.mat"
    root = folder.resolve()
    mats = sorted(
        p
        for p in folder.glob("*.mat")
        if not p.name.startswith(".") and c.folder_entry_problem(root, p) is None
    )
    if c.folder_entry_problem(root, frey) is None:
        found["frey"] = {"train": frey}
    elif len(mats) == 1:
        found["frey"] = {"train": mats[0]}
    pngs = png_files(folder)
    if pngs:
        found["png"] = pngs
    return found


def _read_folder(folder: Path, forced: str | None) -> _Raw:
    with c.guard(folder, "cannot list the folder"):
        layouts = _folder_layouts(folder)
    if forced in ("npz", "npy"):
        raise fail(folder, f"a folder, but kind '{forced}' needs a file")
    if forced is not None and forced not in layouts:
        raise fail(
            folder, f"no {forced} data in the folder{c.skipped_note(folder)}; accepted: {_ACCEPTED}"
        )
    if forced is None:
        complete = [
            k
            for k in ("idx", "amat", "frey", "png")
            if k in layouts and not isinstance(layouts[k], str)
        ]
        incomplete = [v for v in layouts.values() if isinstance(v, str)]
        if not complete and incomplete:
            raise fail(folder, incomplete[0] + c.skipped_note(folder))
        if not complete:
            raise fail(
                folder,
                f"no recognised data set in the folder{c.skipped_note(folder)}; "
                f"accepted: {_ACCEPTED}",
            )
        forced = complete[0]
    layout = layouts[forced]
    if isinstance(layout, str):
        raise fail(folder, layout)
    if isinstance(layout, list):
        return _raw({"train": read_png_folder(folder, layout)}, "png", folder, layout)
    reader = {"idx": readers.read_idx, "amat": readers.read_amat, "frey": readers.read_frey}[forced]
    parts = {split: reader(path) for split, path in layout.items()}
    return _raw(parts, forced, folder, list(layout.values()))


def _read_file(path: Path, forced: str | None) -> _Raw:
    with c.guard(path):
        # Fix: a FIFO, socket or device (/dev/zero) was reported as an "empty file" (st_size
        # 0); say what it is. Never opened, so a FIFO cannot block the reader.
        if not path.is_file():
            raise fail(
                path, "not a regular file (a FIFO, device or socket); pass a data file or folder"
            )
        if path.stat().st_size == 0:
            raise fail(path, "empty file")
    detected = c.detect_bytes(c.sniff(path))
    if forced == "png" or (forced is None and detected == "png-file"):
        raise fail(path, "a single file; kind 'png' reads a folder of PNG images - pass the folder")
    if forced is not None and detected is not None and detected != forced:
        raise fail(path, f"forced kind '{forced}' but the content looks like '{detected}'")
    kind = forced or detected
    if kind is None:
        raise fail(path, f"unrecognised content; accepted kinds: {_ACCEPTED}")
    if kind == "npz":
        members = readers.read_npz(path)
        parts = {split: arr for split, (arr, _) in members.items()}
        return _raw(parts, kind, path, [path], {s: where for s, (_, where) in members.items()})
    reader = {
        "idx": readers.read_idx,
        "amat": readers.read_amat,
        "frey": readers.read_frey,
        "npy": readers.read_npy,
    }[kind]
    return _raw({"train": reader(path)}, kind, path, [path])


def _raw(
    images: dict[str, np.ndarray],
    kind: str,
    source: Path,
    files: list[Path],
    labels: dict[str, str] | None = None,
) -> _Raw:
    """Check the parts agree on image size and convert them; `labels` name parts in errors."""
    labels = labels or {}
    shapes = {split: arr.shape[1:] for split, arr in images.items()}
    ref = shapes["train"]
    for split, shape in shapes.items():
        if shape != ref:
            raise fail(
                source,
                f"{split} images are {shape[0]}x{shape[1]} but train images are {ref[0]}x{ref[1]}",
            )
    for split, arr in images.items():
        c.check_pixels(arr, labels.get(split, source))
    return _Raw(
        images,
        (int(ref[0]), int(ref[1])),
        kind,
        str(source.resolve()),
        [Path(os.path.abspath(p)) for p in files],
    )


def _read_source(spec: str | None) -> _Raw:
    forced, path = _parse_spec(spec)
    if forced == "default":
        csv = readers.default_csv_path()
        images = readers.read_default_csv(csv)
        raw = _raw({"train": images}, "default", csv, [csv])
        raw.source = readers.DEFAULT_SOURCE
        return raw
    assert path is not None
    if not path.exists():
        raise fail(path, "no such file or directory")
    if path.is_dir():
        return _read_folder(path, forced)
    return _read_file(path, forced)


# ------------------------------------------------------------------------ splits, binarizing


def _check_options(seed: int, binarize: str, valid_fraction: float, test_fraction: float) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"--seed: expected a non-negative integer, got {seed!r}")
    if binarize not in BINARIZE_MODES:
        raise UsageError(
            f"--binarize: expected one of {', '.join(BINARIZE_MODES)}, got {binarize!r}"
        )
    for name, value in (("valid", valid_fraction), ("test", test_fraction)):
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not 0.0 < float(value) < 1.0
        ):
            raise UsageError(f"--{name}-fraction: expected a number in (0, 1), got {value!r}")
    if valid_fraction + test_fraction >= 1.0:
        raise UsageError("--valid-fraction + --test-fraction must be below 1")


def _split(raw: _Raw, seed: int, valid_fraction: float, test_fraction: float):
    parts = dict(raw.parts)
    origin = {split: "file" for split in parts}
    missing = [s for s in ("test", "valid") if s not in parts]
    if missing:
        pool = parts["train"]
        n = pool.shape[0]
        perm = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(n)
        fractions = {"test": test_fraction, "valid": valid_fraction}
        start = 0
        whole = "all images" if len(parts) == 1 else "the train file"
        for split in missing:
            count = max(1, int(round(n * fractions[split])))
            parts[split] = pool[perm[start : start + count]]
            origin[split] = f"{fractions[split]:g} of {whole}, seeded shuffle"
            start += count
        if start >= n:
            raise fail(
                raw.source,
                f"only {n} images: too few to split off "
                f"{' and '.join(missing)} and keep a train split",
            )
        parts["train"] = pool[perm[start:]]
        origin["train"] = f"rest of {whole}, seeded shuffle"
    for split in SPLITS:
        if parts[split].shape[0] == 0:
            raise fail(raw.source, f"the {split} split is empty")
    return parts, origin


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
) -> Dataset:
    _check_options(seed, binarize, valid_fraction, test_fraction)
    raw = _read_source(spec)
    parts, origin = _split(raw, int(seed), valid_fraction, test_fraction)
    for index, split in enumerate(SPLITS):
        parts[split] = c.to_unit_float(parts[split])  # after splitting: copies uint8, not float
        if binarize == "static" or (binarize == "dynamic" and split != "train"):
            parts[split] = _binarize_static(parts[split], int(seed), index)
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
        files=tuple(str(p) for p in raw.files),
        seed=int(seed),
        binarize=binarize,
        valid_fraction=float(valid_fraction),
        test_fraction=float(test_fraction),
        split_origin=tuple((s, origin[s]) for s in SPLITS),
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
            raise UsageError("--binarize: only 'none' with split 'all'")
        _check_options(seed, binarize, valid_fraction, test_fraction)
        raw = _read_source(spec)
        order = [c.to_unit_float(raw.parts[s]) for s in SPLITS if s in raw.parts]
        x = order[0] if len(order) == 1 else np.concatenate(order)
        return np.ascontiguousarray(x, dtype=np.float32), raw.image_shape
    if split not in SPLITS:
        raise UsageError(f"split: expected one of train, valid, test, all; got {split!r}")
    ds = load_dataset(
        spec,
        seed=seed,
        binarize=binarize,
        valid_fraction=valid_fraction,
        test_fraction=test_fraction,
    )
    return getattr(ds, split), ds.image_shape
