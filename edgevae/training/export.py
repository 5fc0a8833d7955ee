"""torch -> ONNX fp32 for the encoder and the decoder, with metadata and a parity check.

Uses torch's default (dynamo) exporter with a dynamic batch axis and no external data, then
stamps `metadata_props`, runs the full ONNX checker and compares onnxruntime with torch.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from .. import __version__, fsio
from ..errors import EdgeVAEError, ModelFileError, one_line
from ..runtime import heldout, manifest
from .evaluate import load_model
from .model import VAE

OPSET = 20
STALE_AFTER_EXPORT = (
    "encoder.int8.onnx",
    "decoder.int8.onnx",
    manifest.FIRMWARE_DECODER,
    manifest.FIRMWARE_ENCODER,
    manifest.FIRMWARE_DECODER_INT4,
)
PARITY_N = 1000
PARITY_TOL = 1e-4


class _DecoderGraph(nn.Module):
    """What the decoder ONNX computes: x_mean for users, logits for exact likelihoods."""

    def __init__(self, model: VAE):
        super().__init__()
        self.decoder = model.decoder

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.decoder(z)
        return torch.sigmoid(logits), logits


class _ConditionalDecoderGraph(_DecoderGraph):
    """The same for p(x | z, y): the one-hot label y is a second input."""

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.decoder(z, y)
        return torch.sigmoid(logits), logits


class _EncoderGraph(nn.Module):
    def __init__(self, model: VAE):
        super().__init__()
        self.encoder = model.encoder

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)


class _ConditionalEncoderGraph(_EncoderGraph):
    """q(z | x, y): x and the one-hot label y, concatenated inside the graph."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(torch.cat((x, y), dim=1))


@dataclass
class Parity:
    name: str
    n: int
    max_abs_diff: dict[str, float]

    @property
    def ok(self) -> bool:
        return all(v <= PARITY_TOL for v in self.max_abs_diff.values())


def metadata(model: VAE, precision: str, recipe: str, role: str) -> dict[str, str]:
    h, w = model.cfg.image_shape
    meta = {
        "edgevae.version": __version__,
        "edgevae.role": role,
        "edgevae.latent_dim": str(model.cfg.latent_dim),
        "edgevae.image_shape": f"{h},{w}",
        "edgevae.likelihood": model.cfg.likelihood,
        "edgevae.precision": precision,
        "edgevae.recipe": recipe,
    }
    if model.cfg.n_classes:
        meta["edgevae.classes"] = json.dumps(model.cfg.classes)
    return meta


def set_metadata(proto: onnx.ModelProto, meta: dict[str, str]) -> None:
    del proto.metadata_props[:]
    for key, value in sorted(meta.items()):
        proto.metadata_props.add(key=key, value=value)


@contextlib.contextmanager
def _quiet_torch_logs():
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _to_onnx(
    module: nn.Module, examples: tuple[torch.Tensor, ...], names: tuple[list[str], list[str]]
):
    batch = torch.export.Dim("batch", min=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.onnx")
        # The exporter reports its passes on stdout; keep the CLI's output ours.
        quiet = contextlib.redirect_stdout(io.StringIO())
        with quiet, contextlib.redirect_stderr(io.StringIO()), _quiet_torch_logs():
            torch.onnx.export(
                module,
                examples,
                path,
                input_names=names[0],
                output_names=names[1],
                dynamic_shapes=tuple({0: batch} for _ in examples),
                external_data=False,
                opset_version=OPSET,
            )
        proto = onnx.load(path)
    return proto


def parity(path: Path, module: nn.Module, feeds: dict[str, np.ndarray]) -> Parity:
    from ..runtime.session import create_session

    sess = create_session(path, threads=1)
    got = sess.run(None, feeds)
    with torch.no_grad():
        ref = [t.numpy() for t in module(*(torch.from_numpy(v) for v in feeds.values()))]
    names = [o.name for o in sess.get_outputs()]
    diffs = {n: float(np.abs(g - r).max()) for n, g, r in zip(names, got, ref, strict=True)}
    return Parity(path.name, len(next(iter(feeds.values()))), diffs)


def _specs(model: VAE, seed: int) -> list[tuple[str, nn.Module, dict[str, np.ndarray], list[str]]]:
    """(role, graph module, parity feeds in input order, output names) of both models; the
    feeds are seeded random inputs, one-hot labels for a conditional model."""
    rng = np.random.default_rng(seed)
    x = rng.random((PARITY_N, model.cfg.input_dim), dtype=np.float32)
    z = rng.standard_normal((PARITY_N, model.cfg.latent_dim)).astype(np.float32)
    enc, dec = {"x": x}, {"z": z}
    if model.cfg.n_classes:
        y = np.eye(model.cfg.n_classes, dtype=np.float32)[
            rng.integers(0, model.cfg.n_classes, PARITY_N)
        ]
        enc["y"], dec["y"] = y, y
    conditional = bool(model.cfg.n_classes)
    encoder = (_ConditionalEncoderGraph if conditional else _EncoderGraph)(model)
    decoder = (_ConditionalDecoderGraph if conditional else _DecoderGraph)(model)
    return [
        ("encoder", encoder, enc, ["mu", "logvar"]),
        ("decoder", decoder, dec, ["x_mean", "logits"]),
    ]


def _stage(
    model: VAE, role: str, module: nn.Module, feeds: dict, outputs: list[str], tmp: Path
) -> Parity:
    """Export one graph into `tmp`, check it with the ONNX checker and against torch."""
    module.eval()
    examples = tuple(torch.from_numpy(v[:4]) for v in feeds.values())
    proto = _to_onnx(module, examples, (list(feeds), outputs))
    set_metadata(proto, metadata(model, "fp32", "fp32", role))
    proto.producer_name, proto.producer_version = "edgevae", __version__
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ModelFileError(f"{role}: exported graph fails the ONNX checker: {exc}") from None
    staged = tmp / f"{role}.fp32.onnx"
    fsio.write_bytes(staged, proto.SerializeToString())
    return parity(staged, module, feeds)


def export_run(run_dir: Path, export_dir: Path, seed: int = 0) -> tuple[list[Parity], dict]:
    """Write encoder.fp32.onnx and decoder.fp32.onnx, the held-out images and a fresh
    manifest; returns parity. Everything is made and checked in a staging dir first and moved
    in at the end, under the export's lock (`manifest.commit`): a failure (checker, parity,
    full disk) leaves the previous export as it was, and no reader sees a mixed export."""
    model, cfg = load_model(run_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(dir=export_dir, prefix=".export-") as tmp:
        for role, module, feeds, outputs in _specs(model, seed):
            result = _stage(model, role, module, feeds, outputs, Path(tmp))
            results.append(result)
            if not result.ok:
                raise ModelFileError(
                    f"{export_dir / result.name}: onnxruntime differs from torch by "
                    f"{max(result.max_abs_diff.values()):.2e} (> {PARITY_TOL:g})"
                )
        held = _heldout_entry(Path(tmp), cfg)
        gauss = None
        if model.cfg.likelihood == "gaussian":
            gauss = model.decoder.gaussian_logvar().detach().numpy().astype(float).tolist()
        man = manifest.new_manifest(Path(tmp), cfg, str(run_dir), gauss)
        man.update(held)
        man["parity"] = [
            {"file": p.name, "n": p.n, "max_abs_diff": p.max_abs_diff, "tolerance": PARITY_TOL}
            for p in results
        ]
        staged = [f"{role}.fp32.onnx" for role in ("encoder", "decoder")]
        staged += [heldout.NAME] if held["heldout"] else []
        # int8 models quantized from an earlier export (possibly of another run) derive from
        # the fp32 files replaced here: they go, or the fresh manifest would list them and
        # `sample` and the firmware codegen would serve them.
        stale = STALE_AFTER_EXPORT + (() if held["heldout"] else (heldout.NAME,))
        moves = [(Path(tmp) / name, export_dir / name) for name in staged]
        man = manifest.commit(export_dir, moves, lambda m: None, fresh=man, remove=stale)
    return results, man


def _heldout_entry(staging: Path, cfg: dict) -> dict:
    """Ship the first test images of the run's data in the export (`runtime.heldout`, written
    into `staging`), so the torch-free runtime can reconstruct and bench without the dataset;
    a run whose data is gone is still exported, and the manifest says why it has no images."""
    from ..data.runs import load_run_data

    try:
        ds = load_run_data(cfg["train"], cfg["model"]["image_shape"])
    except EdgeVAEError as exc:
        return {"heldout": None, "heldout_error": one_line(exc)}
    labels = ds.labels("test")
    entry = heldout.write(staging, ds.test, "test")
    if labels is not None:
        entry["labels"] = labels[: entry["count"]].tolist()
        entry["classes"] = list(ds.classes or [])
    return {"heldout": entry}
