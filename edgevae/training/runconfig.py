"""A run dir's file names and its config.json, read and checked without torch (the runtime
and the anomaly commands read a run's data spec from it on machines without the train extra)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import fsio
from ..config import ModelConfig, TrainConfig
from ..errors import ModelFileError, UsageError, one_line

CONFIG, MODEL, STATE, STATE_JSON, METRICS, LOCK = (
    "config.json",
    "model.safetensors",
    "state.safetensors",
    "state.json",
    "metrics.jsonl",
    ".lock",
)

#: Largest config.json / metrics.jsonl read (they are a few kB).
MAX_TEXT_BYTES = 64 << 20
#: Largest model a config.json may declare, in parameters: checked before VAE(cfg) allocates
#: them (a corrupt or hostile "hidden": [1000000000] must not take the machine's memory).
MAX_PARAMETERS = 200_000_000


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_model_config(model: Any) -> ModelConfig:
    """ModelConfig from config.json's "model", in range and of a plausible size."""
    cfg = ModelConfig.from_dict(model).validate()
    sizes = [cfg.input_dim, *cfg.hidden, cfg.latent_dim]
    params = 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    if params > MAX_PARAMETERS:
        raise ValueError(f"a model of about {params} parameters is implausibly large")
    return cfg


_TRAIN_TYPES: dict[str, tuple[type, ...]] = {
    "epochs": (int,),
    "batch_size": (int,),
    "lr": (int, float),
    "optimizer": (str,),
    "seed": (int,),
    "threads": (int,),
    "binarize": (str,),
    "data": (str, type(None)),
    "max_minutes": (int, float, type(None)),
    "lr_patience": (int,),
    "kl_warmup": (int,),
    "qat_bits": (int,),
}


def _check_train_config(train: Any) -> None:
    """config.json's "train": what a resume takes from it, type-checked (then validated)."""
    if not isinstance(train, dict):
        raise TypeError("'train' is not an object")
    for key, types in _TRAIN_TYPES.items():
        if key in train and (isinstance(train[key], bool) or not isinstance(train[key], types)):
            raise TypeError(f"train.{key} is {train[key]!r:.40}")
    TrainConfig.from_dict(train).validate()


def load_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG
    if not run_dir.is_dir():
        raise ModelFileError(f"{run_dir}: no such run directory (train one with `edgevae train`)")
    if not path.exists():
        raise ModelFileError(f"{path}: missing; is {run_dir} a run directory?")
    data = fsio.read_regular(path, MAX_TEXT_BYTES, ModelFileError)
    # Both sections are checked here, before use: a zero or absurd model size would reach
    # VAE(cfg) and allocate it, a bad train section would fail a resume with a traceback, and
    # deeply nested JSON raises RecursionError.
    try:
        cfg = json.loads(data)
        if not isinstance(cfg, dict):
            raise TypeError("not a JSON object")
        _check_model_config(cfg["model"])
        if "train" in cfg:
            _check_train_config(cfg["train"])
    except (ValueError, KeyError, TypeError, IndexError, UsageError) as exc:
        raise ModelFileError(f"{path}: corrupt run config ({one_line(exc, 200)})") from None
    except RecursionError:
        raise ModelFileError(f"{path}: corrupt run config (nested too deeply)") from None
    return cfg
