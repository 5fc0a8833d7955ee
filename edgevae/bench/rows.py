"""The contenders of `edgevae bench`: each report row with what it runs - encode/decode
callables for accuracy and call factories for timing - from ORT model files or the torch run.

Torch-free at import: torch is imported only for the torch fp32 row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..quant.recipes import FIRMWARE_INT4, RECIPES
from ..runtime.manifest import pair_files
from ..runtime.session import feeds, open_session
from .parity import torch_row_skip
from .report import FAILED, REFERENCE, Row

Progress = Callable[[str, int, int], None]


@dataclass
class Contender:
    """A row plus what it computes; a row that could not be loaded has no callables. A
    conditional model's callables take the one-hot labels `y` [N, C] as a second argument."""

    row: Row
    encode: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None  # (x, y=None)
    decode: Callable[..., np.ndarray] | None = None  # (z, y=None) -> logits
    timer: Callable[..., Callable[[], object]] | None = None  # (role, input, y=None)
    # Rows with the same key share one encoder timing (the same encoder file).
    encoder_key: str = ""
    paths: tuple[Path, Path] | None = None  # ORT rows: (encoder, decoder) files
    conditional: bool = False


def ort_contender(
    row: Row, enc_path: Path, dec_path: Path, threads: int, conditional: bool = False
) -> Contender:
    enc = open_session(enc_path, "encoder", threads, conditional)
    dec = open_session(dec_path, "decoder", threads, conditional)
    row.size_kb = (enc_path.stat().st_size + dec_path.stat().st_size) / 1024

    def encode(x, y=None):
        mu, lv = enc.run(["mu", "logvar"], feeds("encoder", x, y))
        return mu, lv

    def decode(z, y=None):
        return dec.run(["logits"], feeds("decoder", z, y))[0]

    def timer(role, data, y=None):
        sess, feed = (enc if role == "encoder" else dec), feeds(role, data, y)
        return lambda: sess.run(None, feed)

    return Contender(row, encode, decode, timer, str(enc_path), (enc_path, dec_path), conditional)


def _load_or_fail(row: Row, load: Callable[[], Contender]) -> Contender:
    """Any row but the reference may fail to load (a bad file, a recipe this CPU lacks): it is
    reported as failed, not fatal."""
    try:
        return load()
    except Exception as exc:
        row.fail(FAILED, exc)
        return Contender(row)


def export_contenders(export_dir: Path, man: dict[str, Any], threads: int) -> list[Contender]:
    """ORT fp32 (the reference), ORT int8 (the recipe the export chose), ORT int8 static (the
    firmware pair: encoder.int8.static.onnx and decoder.int8.static.onnx) and ORT int4 static
    (that encoder with decoder.int4.static.onnx, when the export has it)."""
    ref = Row(
        REFERENCE,
        "onnxruntime",
        "fp32",
        encoder_file="encoder.fp32.onnx",
        decoder_file="decoder.fp32.onnx",
        note="reference for deltas and speedups",
    )
    chosen = (man.get("quantization") or {}).get("chosen")
    int8 = Row(
        f"ORT int8 ({chosen or 'unknown recipe'})",
        "onnxruntime",
        "int8",
        recipe=chosen,
        encoder_file="encoder.int8.onnx",
        decoder_file="decoder.int8.onnx",
        note="the recipe the export chose",
    )
    # The firmware pair; exports from before the static encoder pair it with the int8 one.
    static_encoder = man.get("firmware_encoder")
    static = Row(
        "ORT int8 static",
        "onnxruntime",
        "int8",
        recipe=man.get("firmware_decoder") and "firmware",
        encoder_file=static_encoder or "encoder.int8.onnx",
        decoder_file=pair_files(man, "firmware")[1],
        note="firmware pair (integer-only encoder and decoder)"
        if static_encoder
        else "firmware decoder (integer-only) with the int8 encoder",
    )
    # The firmware's 4-bit decoder (int8 tensors holding -8..7, so onnxruntime runs it with the
    # static row's int8 kernels): what 4 bits cost in nats. Older exports have none.
    int4_name = pair_files(man, "int4")[1]
    four = Row(
        "ORT int4 static",
        "onnxruntime",
        "int4",
        recipe=FIRMWARE_INT4.name,
        encoder_file=static.encoder_file,
        decoder_file=int4_name,
        note="firmware pair with the 4-bit decoder (`firmware --weight-bits 4`); not held to "
        "the int8 budget",
    )
    # No _load_or_fail for the reference: without it there is nothing to compare against.
    cond = bool(man.get("classes"))
    out = [_ort_row(ref, export_dir, threads, cond)]
    rows = (int8, static, four) if (export_dir / int4_name).is_file() else (int8, static)
    out += [_load_or_fail(r, lambda r=r: _ort_row(r, export_dir, threads, cond)) for r in rows]
    return out


def _ort_row(row: Row, folder: Path, threads: int, conditional: bool) -> Contender:
    """The ORT contender of a row whose encoder_file and decoder_file are in `folder`."""
    enc, dec = folder / row.encoder_file, folder / row.decoder_file
    return ort_contender(row, enc, dec, threads, conditional)


# --------------------------------------------------------------------------- torch fp32


def torch_contender(
    man: dict[str, Any], run_dir: Path | None, export_dir: Path
) -> tuple[Contender | None, Path | None, str | None]:
    """(contender, its run dir, None), or (None, None, why the row is skipped): the torch row
    needs torch installed and the run dir that was exported."""
    run = _resolve_run_dir(man, run_dir, export_dir)
    skip = torch_row_skip(run, " (give the run dir that was exported)")
    if skip:
        return None, None, f"torch fp32 row skipped: {skip}"
    row = Row("torch fp32", "torch", "fp32", note=f"run dir {run}")
    return _load_or_fail(row, lambda: _torch_model_contender(row, run)), run, None


def _resolve_run_dir(man: dict[str, Any], run_dir: Path | None, export_dir: Path) -> Path | None:
    if run_dir is not None:
        return run_dir
    stored = man.get("run_dir")
    if not stored:
        return None
    p = Path(stored)
    if p.is_dir() or p.is_absolute():
        return p
    # A relative path was relative to where `edgevae train` ran; try next to the export too.
    alt = export_dir.parent / p
    return alt if alt.is_dir() else p


def _torch_model_contender(row: Row, run_dir: Path) -> Contender:
    import torch

    from ..training.evaluate import decoder_mean, load_model, torch_callables

    model, _ = load_model(run_dir)
    encode, decode, _gauss = torch_callables(model)

    def timer(role, data, y=None):
        t = torch.from_numpy(np.ascontiguousarray(data))
        yt = None if y is None else torch.from_numpy(np.ascontiguousarray(y))

        if role == "encoder":
            rows = t if yt is None else torch.cat((t, yt), dim=1)

            def run():
                with torch.inference_mode():
                    return model.encoder(rows)
        else:

            def run():
                return decoder_mean(model, t, yt)

        return run

    cond = bool(model.cfg.n_classes)
    return Contender(row, encode, decode, timer, encoder_key="torch", conditional=cond)


# --------------------------------------------------------------------------- other recipes


def recipe_contenders(
    export_dir: Path,
    work: Path,
    man: dict[str, Any],
    train_images: np.ndarray,
    names: list[str],
    threads: int,
    progress: Progress,
    train_labels: np.ndarray | None = None,
) -> Iterator[Contender]:
    """Every recipe in `names` re-created from the fp32 models with the export's calibration
    (a conditional model's with the images' one-hot `train_labels`), its files written under
    `work` (which must outlive the timing)."""
    from ..quant import apply

    cal = (man.get("quantization") or {}).get("calibration") or {}
    n_cal = int(cal.get("encoder_images", 5000))
    seed = int(cal.get("seed", 0))
    calib = apply.calibration_sets(export_dir, train_images, n_cal, seed, train_labels)
    cond = train_labels is not None
    for i, name in enumerate(names):
        progress(f"quantizing {name}", i, len(names))
        recipe = RECIPES[name]
        precision = "int8" if recipe.method in ("static", "dynamic") else recipe.method
        row = Row(
            f"recipe {name}",
            "onnxruntime",
            precision,
            recipe=name,
            encoder_file=f"encoder.{name}.onnx",
            decoder_file=f"decoder.{name}.onnx",
            note=recipe.description,
        )

        def load(row=row, recipe=recipe, name=name) -> Contender:
            for role, data in zip(("encoder", "decoder"), calib, strict=True):
                src, dst = export_dir / f"{role}.fp32.onnx", work / f"{role}.{name}.onnx"
                apply.apply_recipe(recipe, src, dst, data)
            return _ort_row(row, work, threads, cond)

        yield _load_or_fail(row, load)
    progress("quantizing", len(names), len(names))
