"""Run directories: config, weights, resume state, metrics, and the lock that guards them.

Layout of runs/NAME/:
  config.json         model + training config, data spec, seed, library versions
  model.safetensors   weights after the last completed epoch (what export reads)
  state.safetensors   resume state in ONE file: weights, optimizer tensors, torch RNG state;
                      its safetensors metadata holds the JSON (epoch, batch, optimizer scalars),
                      so weights and optimizer can never come from different epochs
  state.json          the same JSON, for people and tools (informational)
  metrics.jsonl       one JSON object per completed epoch
  .lock               flock'ed while a training writes here
Every file is written atomically (fsio), so a SIGKILL at any moment leaves the previous
complete checkpoint in place.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .. import fsio
from ..config import ModelConfig
from ..errors import ModelFileError, TrainingError, one_line
from .runconfig import (
    CONFIG,
    LOCK,
    MAX_TEXT_BYTES,
    METRICS,
    MODEL,
    STATE,
    is_int,
    is_number,
    load_config,
)


class RunLock:
    """Exclusive, non-blocking lock on a run dir; released by the kernel if the process dies."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        try:  # e.g. a parent that is a file: one line, not a NotADirectoryError traceback
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = fsio.try_lock_file(self.path)
        except OSError as exc:
            raise TrainingError(
                f"{self.path.parent}: cannot create the run dir ({exc.strerror or exc})"
            ) from None
        if self.fd is None:
            raise TrainingError(f"{self.path.parent}: another training is writing to this run dir")
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the lock
            self.fd = None


def save_weights(path: Path, state_dict: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    tensors = {k: v.detach().contiguous().clone() for k, v in state_dict.items()}
    fsio.write_bytes(path, st_save(tensors, metadata=meta))


#: Largest checkpoint file read into memory (a 784-4096-4096 model with Adam state is ~0.5 GB).
MAX_CHECKPOINT_BYTES = 2 << 30


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata; a missing, truncated or foreign file is a ModelFileError.

    A resume state (state.safetensors next to a config.json) is also checked against that
    config, see `check_state`.
    """
    data = fsio.read_regular(path, MAX_CHECKPOINT_BYTES, ModelFileError)
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelFileError(
            f"{path}: truncated or not a safetensors file ({one_line(exc, 200)})"
        ) from None
    meta = header.get("__metadata__", {}) or {}
    # A state from another config (other sizes) would fail deep inside load_state_dict or the
    # optimizer with a RuntimeError traceback: it is named as mismatched before anything uses it.
    if path.name == STATE and (path.parent / CONFIG).exists():
        check_state(path, tensors, meta, load_config(path.parent))
    return tensors, meta


def check_state(
    path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str], cfg: dict[str, Any]
) -> dict[str, Any]:
    """The resume JSON of a state file, after checking the file against its run's config.json:
    the JSON fields a resume uses, the model tensors' names and shapes and the optimizer
    tensors' shapes. Anything off is a ModelFileError naming the file ("mismatched" or
    "corrupt")."""
    saved = _resume_json(path, meta)
    if saved.get("batch", 0):
        ref_rng = torch.Generator().get_state()
        rng = tensors.get("rng.torch")
        if rng is None or rng.dtype != ref_rng.dtype or rng.shape != ref_rng.shape:
            raise ModelFileError(f"{path}: corrupt resume state (random generator state)")
    train = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
    _check_state_tensors(
        path, tensors, ModelConfig.from_dict(cfg["model"]), bool(train.get("qat_bits"))
    )
    return saved


def _resume_json(path: Path, meta: dict[str, str]) -> dict[str, Any]:
    """The JSON in a state file's header, with the fields a resume reads type-checked."""
    try:
        saved = json.loads(meta["state"])
    except (KeyError, ValueError, RecursionError):
        raise ModelFileError(f"{path}: corrupt or missing resume metadata") from None
    if not isinstance(saved, dict):
        raise ModelFileError(f"{path}: corrupt resume metadata (not a JSON object)")
    for key in ("epoch", "batch", "samples_seen"):
        if key in saved and not (is_int(saved[key]) and saved[key] >= 0):
            raise ModelFileError(f"{path}: corrupt resume metadata ({key} {saved[key]!r:.40})")
    if "epoch" not in saved:
        raise ModelFileError(f"{path}: corrupt resume metadata (no epoch)")
    if saved.get("batch", 0):
        partial = saved.get("partial")
        if not isinstance(partial, dict) or not all(
            is_number(partial.get(k)) for k in ("loss_sum", "seen", "seconds")
        ):
            raise ModelFileError(f"{path}: corrupt resume metadata (partial epoch)")
    schedule = saved.get("lr_schedule")
    if schedule is not None and not (
        isinstance(schedule, dict)
        and is_number(schedule.get("lr", 1.0))
        and math.isfinite(schedule.get("lr", 1.0))
        and schedule.get("lr", 1.0) > 0
        and (schedule.get("best") is None or is_number(schedule.get("best")))
        and is_int(schedule.get("bad_epochs", 0))
    ):
        raise ModelFileError(f"{path}: corrupt resume metadata (lr_schedule)")
    return saved


def _check_state_tensors(
    path: Path, tensors: dict[str, torch.Tensor], cfg: ModelConfig, qat_run: bool = False
) -> None:
    """Model tensors as the config implies them (finite floats), optimizer tensors shaped like
    their parameters (a QAT run's steps after the model's), nothing else but the generator
    state and QAT's steps (qat.*, checked when loaded)."""
    from . import qat
    from .model import VAE

    model = VAE(cfg)
    expected = {f"model.{k}": v for k, v in model.state_dict().items()}
    params = [tuple(p.shape) for p in model.parameters()]
    params += qat.step_shapes(cfg) if qat_run else []
    where = f"{path}: mismatched with {path.parent / CONFIG}"
    for name, ref in expected.items():  # in the model's order: the first layer is named first
        tensor = tensors.get(name)
        if tensor is None:
            raise ModelFileError(f"{where}: missing {name}")
        if tuple(tensor.shape) != tuple(ref.shape):
            raise ModelFileError(
                f"{where}: {name} has shape {tuple(tensor.shape)}, the config implies "
                f"{tuple(ref.shape)}"
            )
        if not tensor.dtype.is_floating_point or not torch.isfinite(tensor).all():
            raise ModelFileError(f"{path}: corrupt resume state ({name} is not finite floats)")
    for name, tensor in tensors.items():
        if name in expected or name == "rng.torch" or name.startswith(qat.PREFIX):
            continue
        parts = name.split(".", 2)
        if not name.startswith("optim.") or len(parts) != 3 or not parts[1].isdigit():
            raise ModelFileError(f"{where}: unexpected tensor {name}")
        if int(parts[1]) >= len(params):
            raise ModelFileError(
                f"{where}: optimizer state for parameter {parts[1]} of {len(params)}"
            )
        shape = () if parts[2] == "step" else params[int(parts[1])]
        if (tensor.numel() != 1) if parts[2] == "step" else (tuple(tensor.shape) != shape):
            raise ModelFileError(
                f"{where}: {name} has shape {tuple(tensor.shape)}, the config implies {shape}"
            )


def load_model_weights(run_dir: Path, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """model.safetensors checked against the config's shapes before anyone uses it."""
    from .model import VAE

    path = run_dir / MODEL
    tensors, _ = read_safetensors(path)
    expected = VAE(cfg).state_dict()
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ModelFileError(f"{path}: does not match config.json (missing {missing[0]})")
    # Extra tensors too (e.g. a Gaussian run's decoder.logvar under a bernoulli config.json):
    # unchecked, they made the caller's strict load_state_dict raise a RuntimeError traceback.
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ModelFileError(f"{path}: does not match config.json (unexpected {extra[0]})")
    for name, ref in expected.items():
        if tuple(tensors[name].shape) != tuple(ref.shape):
            raise ModelFileError(
                f"{path}: {name} has shape {tuple(tensors[name].shape)}, config.json implies "
                f"{tuple(ref.shape)}"
            )
        if not torch.isfinite(tensors[name]).all():
            raise ModelFileError(f"{path}: {name} holds NaN or Inf")
    return tensors


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS
    if not path.exists():
        return []
    text = fsio.read_regular(path, MAX_TEXT_BYTES, ModelFileError).decode("utf-8", "replace")
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                raise ModelFileError(f"{path}: line {i} is not JSON") from None
            if not isinstance(row, dict):  # rows are indexed by key later
                raise ModelFileError(f"{path}: line {i} is not a JSON object")
            rows.append(row)
    return rows


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    text = "".join(fsio.to_json(r, indent=None) + "\n" for r in rows)
    fsio.write_text(run_dir / METRICS, text)
