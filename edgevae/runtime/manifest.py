"""export/manifest.json: what is in an export dir, how it was made, and what it measured.

Read by the torch-free runtime, so this module needs only the standard library.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__, fsio
from ..errors import ModelFileError, one_line

NAME = "manifest.json"
SCHEMA = 1
#: The firmware's models, which every quantize writes beside the chosen recipe's: the int8
#: encoder and decoder with fixed scales, and the 4-bit decoder (manifest firmware_encoder,
#: firmware_decoder, firmware_decoder_int4).
FIRMWARE_ENCODER = "encoder.int8.static.onnx"
FIRMWARE_DECODER = "decoder.int8.static.onnx"
FIRMWARE_DECODER_INT4 = "decoder.int4.static.onnx"
MODEL_FILES = ("encoder.fp32.onnx", "decoder.fp32.onnx", "encoder.int8.onnx", "decoder.int8.onnx")
#: The encoder/decoder pairs a runtime command can run: the chosen int8 recipe's, the float
#: export's, the firmware's (what the C kernel computes, bit for bit) and the firmware's with
#: the 4-bit decoder.
PRECISIONS = ("int8", "fp32", "firmware", "int4")


def timestamp() -> str:
    """Now in UTC, ISO 8601 to the second: when a report (bench, figures) was made."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


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
    """A fresh manifest for the fp32 export of a run. It holds no absolute path of this
    machine: data files are named by file name and sha256, the run dir only when it is a
    relative path below the current directory."""
    model = run_config["model"]
    man: dict[str, Any] = {
        "schema": SCHEMA,
        "run_dir": _relative_or_none(run_dir),
        "model": model,
        "latent_dim": model["latent_dim"],
        "image_shape": model["image_shape"],
        "likelihood": model["likelihood"],
        "data": portable_data(run_config.get("data")),
        "seed": run_config.get("seed"),
        "train": {**(run_config.get("train") or {}), "data": _spec_name(run_config)},
        "files": {},
        "versions": versions(),
    }
    if gauss_logvar is not None:
        man["gaussian_logvar"] = gauss_logvar
    if model.get("classes"):
        man["classes"] = list(model["classes"])  # a conditional model: y's one-hot order
    refresh_files(export_dir, man)
    return man


def _relative_or_none(path: str) -> str | None:
    p = Path(path)
    return None if p.is_absolute() or ".." in p.parts else p.as_posix()


def _spec_name(run_config: dict[str, Any]) -> str | None:
    """The data spec trained on, reduced to its last path part ("idx:mnist", "mnist_5k")."""
    spec = (run_config.get("train") or {}).get("data")
    if spec is None:
        return None
    kind, sep, path = spec.rpartition(":") if ":" in spec[:8] else ("", "", spec)
    return f"{kind}{sep}{Path(path).name}"


def portable_data(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """A dataset description (`Dataset.spec()`) with every path reduced to its file name."""
    if not data:
        return data
    out = dict(data)
    if "source" in out and isinstance(out["source"], str) and "/" in out["source"]:
        out["source"] = Path(out["source"]).name
    out["files"] = [
        {("name" if k == "path" else k): (Path(v).name if k == "path" else v) for k, v in f.items()}
        for f in data.get("files", [])
    ]
    return out


def refresh_files(export_dir: Path, man: dict[str, Any]) -> None:
    """Record size and sha256 of every model file present in the export dir."""
    files = {}
    for path in sorted(export_dir.glob("*.onnx")):
        digest = fsio.sha256_file(path, ModelFileError)
        files[path.name] = {"bytes": path.stat().st_size, "sha256": digest}
    man["files"] = files


def write(export_dir: Path, man: dict[str, Any]) -> None:
    fsio.write_json(export_dir / NAME, man)


def digests(export_dir: Path, names: tuple[str, ...]) -> dict[str, str | None]:
    """sha256 of each named file of the export (None when absent)."""
    return {
        n: fsio.sha256_file(export_dir / n, ModelFileError) if (export_dir / n).exists() else None
        for n in names
    }


def commit(
    export_dir: Path,
    moves: list[tuple[Path, Path]],
    update: Callable[[dict[str, Any]], None],
    expect: dict[str, str | None] | None = None,
    *,
    fresh: dict[str, Any] | None = None,
    remove: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A writer's last step, under the export's exclusive lock: check that the files it worked
    from are still those it read (`expect`: name -> sha256, from `digests` at its start), move
    its finished files in (after deleting `remove`), apply `update` to the manifest (or to
    `fresh`, a new one), record every model file's sha256 and write the manifest. Readers
    take the shared lock (`Model`), so no reader sees files of two writers, or a manifest that
    does not match its files."""
    with fsio.dir_lock(export_dir):
        if expect is not None and digests(export_dir, tuple(expect)) != expect:
            raise ModelFileError(
                f"{export_dir}: its models changed while this command worked from them "
                "(another export or quantization?); run it again"
            )
        man = read(export_dir) if fresh is None else fresh
        for name in remove:
            (export_dir / name).unlink(missing_ok=True)
        for src, dst in moves:
            fsio.move_into(src, dst)
        update(man)
        refresh_files(export_dir, man)
        write(export_dir, man)
    return man


#: A manifest is a few kB; anything far larger is not one (and is not read into memory).
MAX_MANIFEST_BYTES = 16 << 20
# model files the manifest names (written by quantize; read by bench, parity, firmware)
MODEL_NAME_KEYS = ("firmware_encoder", "firmware_decoder", "firmware_decoder_int4")
#: Largest latent size and image side a manifest may declare (the runtime sizes arrays by them).
MAX_LATENT = 4096
MAX_SIDE = 4096
#: Most classes a conditional model may declare (its label is one-hot over them).
MAX_CLASSES = 10_000
LIKELIHOODS = ("bernoulli", "gaussian")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(path: Path, man: Any) -> dict[str, Any]:
    """The fields the runtime uses, checked for type and range here, so that a hand-edited
    or corrupt manifest is named as such instead of failing later inside numpy."""
    if not isinstance(man, dict) or "latent_dim" not in man or "image_shape" not in man:
        raise ModelFileError(f"{path}: not an edgevae manifest (no latent_dim/image_shape)")
    latent = man["latent_dim"]
    if not _is_int(latent) or not 1 <= latent <= MAX_LATENT:
        raise ModelFileError(
            f"{path}: latent_dim must be an integer in 1..{MAX_LATENT}, got {latent!r:.40}"
        )
    shape = man["image_shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(_is_int(v) and 1 <= v <= MAX_SIDE for v in shape)
    ):
        raise ModelFileError(
            f"{path}: image_shape must be [height, width] in 1..{MAX_SIDE}, got {shape!r:.40}"
        )
    likelihood = man.get("likelihood", "bernoulli")
    if likelihood not in LIKELIHOODS:
        raise ModelFileError(
            f"{path}: likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r:.40}"
        )
    logvar = man.get("gaussian_logvar")
    if logvar is not None:
        n = shape[0] * shape[1]
        if (
            not isinstance(logvar, list)
            or len(logvar) != n
            or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in logvar
            )
        ):
            raise ModelFileError(f"{path}: gaussian_logvar must be {n} finite numbers")
    classes = man.get("classes")
    if classes is not None and (
        not isinstance(classes, list)
        or not 2 <= len(classes) <= MAX_CLASSES
        or not all(isinstance(c, str) and 0 < len(c) <= 200 for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise ModelFileError(f"{path}: classes must be 2 to {MAX_CLASSES} distinct names")
    for key in MODEL_NAME_KEYS:
        name = man.get(key)
        if name is not None and (
            not isinstance(name, str) or not name or Path(name).name != name or name == ".."
        ):
            raise ModelFileError(f"{path}: {key} {name!r:.40} is not a file name")
    return man


def pair_files(man: dict[str, Any], precision: str) -> tuple[str, str]:
    """The (encoder, decoder) file names of `precision` (one of PRECISIONS) in an export whose
    checked manifest is `man`: the firmware's as the manifest names them, else the usual names."""
    if precision in ("int8", "fp32"):
        return f"encoder.{precision}.onnx", f"decoder.{precision}.onnx"
    encoder = man.get("firmware_encoder") or FIRMWARE_ENCODER
    if precision == "int4":
        return encoder, man.get("firmware_decoder_int4") or FIRMWARE_DECODER_INT4
    return encoder, man.get("firmware_decoder") or FIRMWARE_DECODER


def read(export_dir: Path) -> dict[str, Any]:
    path = export_dir / NAME
    if export_dir.exists() and not export_dir.is_dir():
        raise ModelFileError(f"{export_dir}: not a directory; expected an export directory")
    if not export_dir.is_dir():
        raise ModelFileError(
            f"{export_dir}: no such export directory (run `edgevae train` or `edgevae export`)"
        )
    if not path.exists() and not path.is_symlink():
        raise ModelFileError(f"{path}: missing; is {export_dir} an edgevae export?")
    return _check(path, parse(path))


def parse(path: Path) -> Any:
    """The JSON of the manifest file `path`, read within MAX_MANIFEST_BYTES, not yet checked
    (`read` checks the fields the runtime uses; the firmware reads only its model names)."""
    data = fsio.read_regular(path, MAX_MANIFEST_BYTES, ModelFileError)
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:  # "[[[[..."
        raise ModelFileError(f"{path}: unreadable or not JSON (nested too deeply)") from None
    except ValueError as exc:  # UnicodeDecodeError is a ValueError
        raise ModelFileError(f"{path}: unreadable or not JSON ({one_line(exc, 200)})") from None
