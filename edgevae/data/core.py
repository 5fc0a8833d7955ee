"""`load_dataset`: read a data spec (`sources`), split it, binarize it.

See `edgevae.data` for the user-facing description of specs, kinds, splits and binarization.
"""

from __future__ import annotations

import hashlib
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import fsio
from ..errors import DataError, UsageError
from . import checks as c
from .checks import fail
from .sources import SPLITS, Raw, read_source

BINARIZE_MODES: tuple[str, ...] = ("none", "static", "dynamic")


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
    raw = read_source(spec)
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
            raise UsageError("only 'none' with split 'all'", param="binarize")
        _check_options(seed, binarize, valid_fraction, test_fraction)
        raw = read_source(spec)
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
