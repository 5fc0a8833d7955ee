"""export/manifest.json: what is in an export dir, how it was made, and what it measured.

Read by the torch-free runtime, so this module needs only the standard library.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

from . import __version__, fsio
from .errors import ModelFileError

NAME = "manifest.json"
SCHEMA = 1
MODEL_FILES = ("encoder.fp32.onnx", "decoder.fp32.onnx", "encoder.int8.onnx", "decoder.int8.onnx")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def versions() -> dict[str, str]:
    """Installed versions from package metadata: nothing is imported (torch takes seconds,
    and the device path has no torch)."""
    from importlib import metadata

    out = {"edgevae": __version__, "python": platform.python_version()}
    for dist in ("numpy", "onnxruntime", "onnx", "torch", "pillow", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def new_manifest(
    export_dir: Path, run_config: dict[str, Any], run_dir: str, gauss_logvar: list | None
) -> dict[str, Any]:
    model = run_config["model"]
    man: dict[str, Any] = {
        "schema": SCHEMA,
        "run_dir": run_dir,
        "model": model,
        "latent_dim": model["latent_dim"],
        "image_shape": model["image_shape"],
        "likelihood": model["likelihood"],
        "data": run_config.get("data"),
        "seed": run_config.get("seed"),
        "train": run_config.get("train"),
        "files": {},
        "versions": versions(),
    }
    if gauss_logvar is not None:
        man["gaussian_logvar"] = gauss_logvar
    refresh_files(export_dir, man)
    return man


def refresh_files(export_dir: Path, man: dict[str, Any]) -> None:
    """Record size and sha256 of every model file present in the export dir."""
    files = {}
    for path in sorted(export_dir.glob("*.onnx")):
        files[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    man["files"] = files


def write(export_dir: Path, man: dict[str, Any]) -> None:
    fsio.write_json(export_dir / NAME, man)


def read(export_dir: Path) -> dict[str, Any]:
    path = export_dir / NAME
    if not export_dir.is_dir():
        raise ModelFileError(
            f"{export_dir}: no such export directory (run `edgevae train` or `edgevae export`)"
        )
    try:
        man = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path}: missing; is {export_dir} an edgevae export?") from None
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: unreadable or not JSON ({exc})") from None
    if not isinstance(man, dict) or "latent_dim" not in man or "image_shape" not in man:
        raise ModelFileError(f"{path}: not an edgevae manifest (no latent_dim/image_shape)")
    return man
