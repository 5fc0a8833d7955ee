"""Where a data spec points and how its images (and labels) are read: the default set, a named
data set from the download cache, a file of one of the supported kinds, or a folder laid out
as one of them (see `edgevae.data`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UsageError
from . import checks as c
from . import readers, registry
from .checks import fail
from .labels import Labels, digit_names, idx_labels
from .npz import read_npz
from .png import PngSet, png_set, read_png_folder

DATA_KINDS: tuple[str, ...] = ("default", "idx", "amat", "frey", "npz", "npy", "png")
FORCEABLE_KINDS: tuple[str, ...] = DATA_KINDS[1:]
SPLITS: tuple[str, ...] = ("train", "valid", "test")

_ACCEPTED = (
    "IDX images (.idx3-ubyte[.gz]), binarized MNIST .amat[.gz], Frey Face .mat, .npz, "
    ".npy, or a folder of PNGs / IDX pair / binarized_mnist_*.amat / frey_rawface.mat"
)


@dataclass
class Raw:
    """A source as read: its own splits (train always; valid/test when the source has them)."""

    parts: dict[str, np.ndarray]  # (N, H, W) as read, pixels checked; converted after splitting
    image_shape: tuple[int, int]
    kind: str
    source: str
    files: list[Path]
    labels: Labels = field(default_factory=Labels)  # by split, aligned with parts
    named: str | None = None  # the registry name of a downloaded data set


def _parse_spec(spec: str | None) -> tuple[str | None, Path | None]:
    """(forced kind or None, path); ('default', None) for the default set, ('named', None)
    for a registry name (a local folder of that name is written ./mnist or idx:mnist)."""
    if spec is None:
        return "default", None
    text = str(spec)
    if not text:
        raise UsageError("empty path", param="data")
    if text in ("default", readers.DEFAULT_SOURCE):  # the latter is what spec()["source"] says
        return "default", None
    if registry.lookup(text) is not None:
        return "named", None
    prefix, sep, rest = text.partition(":")
    if sep and prefix.lower() in FORCEABLE_KINDS:
        if not rest:
            raise UsageError(f"{text}: missing path after '{prefix}:'", param="data")
        return prefix.lower(), Path(rest).expanduser()
    return None, Path(text).expanduser()


def _first(folder: Path, names: list[str]) -> Path | None:
    # The folder policy of every kind: a name that is a symlink out of the folder is not
    # followed (is_file() would read a file anywhere).
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


def _folder_layouts(folder: Path) -> dict[str, dict[str, Path] | PngSet | str]:
    """Every kind the folder could be: files by split, the PNG set, or why it is incomplete."""
    found: dict[str, dict[str, Path] | PngSet | str] = {}
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
    pngs = png_set(folder)
    if pngs is not None:
        found["png"] = pngs
    return found


def _read_folder(folder: Path, forced: str | None) -> Raw:
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
    if isinstance(layout, PngSet):
        raw = _raw({"train": read_png_folder(folder, layout.files)}, "png", folder, layout.files)
        if layout.labels is not None:
            raw.labels = Labels({"train": layout.labels}, layout.classes)
        else:
            raw.labels = Labels.missing(folder, "PNG files directly in the folder have no labels")
        return raw
    return read_files(forced, layout, folder)


def read_files(kind: str, files: dict[str, Path], source: Path) -> Raw:
    """An idx, amat or frey set from its files by split (IDX labels looked for beside them)."""
    reader = {"idx": readers.read_idx, "amat": readers.read_amat, "frey": readers.read_frey}[kind]
    parts = {split: reader(path) for split, path in files.items()}
    raw = _raw(parts, kind, source, list(files.values()))
    if kind == "idx":
        counts = {split: arr.shape[0] for split, arr in parts.items()}
        raw.labels = idx_labels(files, counts, _beside)
    else:
        raw.labels = Labels.missing(source, f"{kind} data has no labels")
    return raw


def _beside(image_path: Path, names: list[str]) -> Path | None:
    """A label file next to an images file, under the folder policy of its folder."""
    return _first(image_path.parent, names)


def _read_file(path: Path, forced: str | None) -> Raw:
    with c.guard(path):
        # A FIFO, socket or device (/dev/zero) has st_size 0 but is not empty: say what it is.
        # Never opened, so a FIFO cannot block the reader.
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
        members, labels = read_npz(path)
        parts = {split: arr for split, (arr, _) in members.items()}
        raw = _raw(parts, kind, path, [path], {s: where for s, (_, where) in members.items()})
        raw.labels = labels
        return raw
    if kind == "npy":
        raw = _raw({"train": readers.read_npy(path)}, kind, path, [path])
        raw.labels = Labels.missing(path, "a single .npy array has no labels; use .npz with y")
        return raw
    return read_files(kind, {"train": path}, path)


def _raw(
    images: dict[str, np.ndarray],
    kind: str,
    source: Path,
    files: list[Path],
    labels: dict[str, str] | None = None,
) -> Raw:
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
    return Raw(
        images,
        (int(ref[0]), int(ref[1])),
        kind,
        str(source.resolve()),
        [Path(os.path.abspath(p)) for p in files],
    )


def read_source(spec: str | None) -> Raw:
    forced, path = _parse_spec(spec)
    if forced == "default":
        csv = readers.default_csv_path()
        images, labels = readers.read_default_csv(csv)
        raw = _raw({"train": images}, "default", csv, [csv])
        raw.source = readers.DEFAULT_SOURCE
        raw.labels = Labels({"train": labels}, digit_names([labels], csv))
        return raw
    if forced == "named":
        from .named import read_named

        return read_named(str(spec))
    assert path is not None
    if not path.exists():
        raise fail(path, "no such file or directory")
    if path.is_dir():
        return _read_folder(path, forced)
    return _read_file(path, forced)
