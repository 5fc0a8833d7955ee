"""The results file both sides of the cross-CPU check share: one run's inputs, outputs, sample
PNG and metadata in an `.npz` (no pickle), and its JSON summary (no arrays).

Only numpy is imported: `arm/run_check.py` reads on the host what the emulated targets wrote.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import fsio
from ..errors import one_line
from .compare import CrosscheckError

FORMAT = "edgevae.crosscheck/1"

#: A results file holds a few hundred KB (a 784-wide batch per output, one PNG); the cap only
#: keeps a wrong path (a device, a huge file) from being read whole.
MAX_RESULTS_BYTES = 1 << 30


@dataclass
class Results:
    """One run: inputs, outputs, the sample PNG bytes (or None) and metadata."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    meta: dict
    png: bytes | None = None

    @property
    def label(self) -> str:
        return str(self.meta.get("label") or self.meta.get("platform", {}).get("machine", "?"))


def save_results(path: str | os.PathLike, results: Results) -> Path:
    """Write the results as .npz: arrays under in/ out/ png/, metadata as a JSON string."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(results.meta, sort_keys=True))}
    for name, value in results.inputs.items():
        arrays[f"in/{name}"] = np.asarray(value)
    for name, value in results.outputs.items():
        arrays[f"out/{name}"] = np.asarray(value)
    if results.png is not None:
        arrays["png/sample"] = np.frombuffer(results.png, np.uint8)
    if any(a.dtype.hasobject for a in arrays.values()):
        raise CrosscheckError("refusing to save object arrays (they would need pickle)")
    with fsio.atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def load_results(path: str | os.PathLike) -> Results:
    """Read a results .npz written by `save_results` (allow_pickle=False)."""
    path = Path(path)
    data = fsio.read_regular(path, MAX_RESULTS_BYTES, CrosscheckError)
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("one array, not an .npz archive")
        with loaded as npz:  # what the members unpack to is checked before any is read
            size = sum(info.file_size for info in npz.zip.infolist())
            if size > MAX_RESULTS_BYTES:
                raise ValueError(f"its arrays unpack to {size} bytes, over {MAX_RESULTS_BYTES}")
            arrays = {name: npz[name] for name in npz.files}
    except MemoryError:
        raise
    except Exception as exc:  # zipfile, zlib and numpy's parsers raise many types
        why = one_line(exc, 160)
        raise CrosscheckError(f"{path}: not a crosscheck results file ({why})") from None
    if "meta" not in arrays:
        raise CrosscheckError(f"{path}: not a crosscheck results file (no meta)")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except ValueError as exc:
        raise CrosscheckError(f"{path}: not a crosscheck results file ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CrosscheckError(f"{path}: format {found!r}, expected {FORMAT!r}")
    png = arrays.pop("png/sample", None)
    return Results(
        inputs={k[3:]: v for k, v in arrays.items() if k.startswith("in/")},
        outputs={k[4:]: v for k, v in arrays.items() if k.startswith("out/")},
        meta=meta,
        png=None if png is None else png.tobytes(),
    )


def _array_summary(a: np.ndarray) -> dict:
    summary = {
        "shape": list(a.shape),
        "dtype": str(a.dtype),
        "sha256": fsio.sha256_of(np.ascontiguousarray(a).tobytes()),
    }
    if a.size and np.issubdtype(a.dtype, np.number):
        summary.update(
            min=float(np.nanmin(a)),
            max=float(np.nanmax(a)),
            mean=float(np.nanmean(a.astype(np.float64))),
        )
    return summary


def results_summary(results: Results) -> dict:
    """JSON-ready description of a run (no arrays): meta plus shape/sha256/range per output."""
    return {
        **results.meta,
        "inputs": {k: _array_summary(v) for k, v in results.inputs.items()},
        "outputs": {k: _array_summary(v) for k, v in results.outputs.items()},
        "png_sha256": None if results.png is None else fsio.sha256_of(results.png),
    }
