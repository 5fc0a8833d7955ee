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

import errno
import fcntl
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import fsio
from .config import ModelConfig
from .errors import ModelFileError, TrainingError

CONFIG, MODEL, STATE, STATE_JSON, METRICS, LOCK = (
    "config.json",
    "model.safetensors",
    "state.safetensors",
    "state.json",
    "metrics.jsonl",
    ".lock",
)


class RunLock:
    """Exclusive, non-blocking lock on a run dir; released by the kernel if the process dies."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        try:  # e.g. a parent that is a file: one line, not a NotADirectoryError traceback
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise TrainingError(
                f"{self.path.parent}: cannot create the run dir ({exc.strerror or exc})"
            ) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self.fd)
            self.fd = None
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise TrainingError(
                    f"{self.path.parent}: another training is writing to this run dir"
                ) from None
            raise
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def save_weights(path: Path, state_dict: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    tensors = {k: v.detach().contiguous().clone() for k, v in state_dict.items()}
    fsio.write_bytes(path, st_save(tensors, metadata=meta))


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata; a missing, truncated or foreign file is a ModelFileError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: truncated or not a safetensors file ({exc})") from None
    return tensors, header.get("__metadata__", {}) or {}


def load_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG
    if not run_dir.is_dir():
        raise ModelFileError(f"{run_dir}: no such run directory (train one with `edgevae train`)")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
        ModelConfig.from_dict(cfg["model"])
    except FileNotFoundError:
        raise ModelFileError(f"{path}: missing; is {run_dir} a run directory?") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{path}: corrupt run config ({exc})") from None
    return cfg


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
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise ModelFileError(f"{path}: line {i} is not JSON") from None
    return rows


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    fsio.write_text(run_dir / METRICS, text)
