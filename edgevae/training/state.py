"""The resume state of a run dir: the checks before a training starts, what an epoch's end or a
Ctrl-C saves, and what a resume reads back. The files and their layout are `checkpoint`'s."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .. import fsio
from ..config import dumps
from ..errors import TrainingError, UsageError
from . import checkpoint, runconfig
from .model import VAE


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """The run dir can take this training: a new run needs an empty (or absent) one unless
    overwriting, a resume needs saved state. Checked before the lock creates anything."""
    # RunLock's mkdir would otherwise fail on a file with a FileExistsError traceback.
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"{run_dir} is not a directory", param="run_dir")
    if resume and overwrite:
        raise UsageError(
            "cannot be combined with overwrite (resume continues a run, overwrite starts it over)",
            param="resume",
        )
    if resume and not (run_dir / runconfig.STATE).exists():
        raise UsageError(f"{run_dir} holds no training state to resume from", param="resume")
    has_state = (run_dir / runconfig.STATE).exists() or (run_dir / runconfig.MODEL).exists()
    if not resume and has_state and not overwrite:
        raise UsageError(
            f"{run_dir} already holds a trained model; resume it, overwrite it, or choose "
            "another run dir",
            param="run_dir",
        )


def remove_stale_temp_files(run_dir: Path) -> None:
    """Temp files a killed save left behind (fsio names them .NAME.*.tmp); safe under the lock,
    since no other training can be writing here."""
    for name in (
        runconfig.CONFIG,
        runconfig.MODEL,
        runconfig.STATE,
        runconfig.STATE_JSON,
        runconfig.METRICS,
    ):
        for tmp in run_dir.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def clear(run_dir: Path) -> None:
    """Before an overwrite: the old run's state, metrics and model. The model too, or a stale
    model.safetensors would sit next to the new config.json until the first new epoch ends
    (and for good if that training fails)."""
    for name in (runconfig.STATE, runconfig.STATE_JSON, runconfig.METRICS, runconfig.MODEL):
        (run_dir / name).unlink(missing_ok=True)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for idx, st in opt.state_dict()["state"].items():
        for key, val in st.items():
            out[f"optim.{idx}.{key}"] = torch.as_tensor(val).clone()
    return out


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, val in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = val
    sd["state"] = state
    opt.load_state_dict(sd)


def save(
    run_dir: Path,
    model: VAE,
    opt: torch.optim.Optimizer,
    meta: dict[str, Any],
    rng_state: torch.Tensor | None,
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    """Weights, optimizer tensors, `extra` (QAT's steps, named qat.*) and (mid-epoch) the
    torch generator state in one file, with the JSON `meta` in its header; state.json
    repeats the JSON for people and tools."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(_optimizer_tensors(opt))
    tensors.update(extra or {})
    if rng_state is not None:
        tensors["rng.torch"] = rng_state
    checkpoint.save_weights(run_dir / runconfig.STATE, tensors, {"state": dumps(meta)})
    fsio.write_text(run_dir / runconfig.STATE_JSON, dumps(meta))


def read(run_dir: Path, epochs: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The saved tensors and resume JSON, checked against the run's config.json; a UsageError
    when the run has already trained `epochs` epochs (a resume would do nothing)."""
    tensors, meta = checkpoint.read_safetensors(run_dir / runconfig.STATE)
    try:
        saved = json.loads(meta["state"])
    except (KeyError, ValueError):
        raise TrainingError(f"{run_dir / runconfig.STATE}: no resume metadata") from None
    if saved["epoch"] >= epochs:  # mid-epoch (batch > 0) too
        part = f" and part of epoch {saved['epoch'] + 1}" if saved.get("batch", 0) else ""
        raise UsageError(
            f"{run_dir} has already trained {saved['epoch']} epochs{part}; ask for more than "
            f"{saved['epoch']} in total to continue",
            param="epochs",
        )
    return tensors, saved


def restore(model: VAE, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Load the saved weights and optimizer state into a freshly built model and optimizer."""
    model.load_state_dict(
        {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    )
    _load_optimizer(opt, tensors)
