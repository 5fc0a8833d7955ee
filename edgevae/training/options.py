"""Training options as the caller gave them: defaults for a new run, and on a resume a check
that nothing given differs from what the run was trained with (a resume keeps the run's own
configuration; only the epoch total, threads and the time budget belong to the invocation).

Torch-free: the CLI and the API check options before any training starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import PRESETS, ModelConfig, TrainConfig
from ..errors import UsageError

DEFAULTS: dict[str, Any] = {
    "preset": "default",
    "activation": "relu",
    "batch_size": 100,
    "lr": 1e-3,
    "optimizer": "adam",
    "binarize": "none",
    "lr_patience": 0,
    "kl_warmup": 0,
    "seed": 0,
    "conditional": False,
}
# Options a resume takes from the run's config.json, and where they are stored there.
_TRAIN_KEYS = ("batch_size", "lr", "optimizer", "binarize", "lr_patience", "kl_warmup", "seed")
_TRAIN_KEYS += ("data", "classes", "conditional")
_MODEL_KEYS = ("hidden", "latent_dim", "activation")
# The latent size of a conditional model with the default preset, chosen by measurement
# (bench/conditional.py, docs/conditional.md): with many latent dims z carries the class too,
# and a sample drawn for one label often shows another. The smallest NLL that keeps >= 95 % of
# int8 samples at temperature 1 showing the asked digit, after the default 10 epochs of MNIST
# (int8 share / fp32 NLL): 2 dims 99.0 % / 133.7 nats; 3 dims 98.2 % / 126.2; 4 dims 96.2 %
# / 119.3; 5 dims 93.9 % / 114.9; 10 dims 79.5 % / 101.9; 20 dims 74.2 % / 97.9.
CONDITIONAL_LATENT_DIM = 4


class ResumeConflict(UsageError):
    """Options given to a resume that differ from the run's own: (param, given, saved)."""

    def __init__(self, run_dir: Path, conflicts: list[tuple[str, Any, Any]]):
        self.conflicts = conflicts
        listed = "; ".join(f"{p} {g!r} (the run's: {s!r})" for p, g, s in conflicts)
        super().__init__(
            f"{run_dir} was trained with other options, which a resume keeps: {listed}; "
            "leave them out to continue, or start a new run"
        )


def resume_conflicts(run_dir: Path, given: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(param, given, saved) for every option given (not None) that differs from the run's."""
    from .runconfig import load_config

    stored = load_config(run_dir)
    saved = {k: stored.get("train", {}).get(k) for k in _TRAIN_KEYS}
    saved.update({k: stored["model"].get(k) for k in _MODEL_KEYS})
    saved["conditional"] = bool(saved["conditional"])
    if given.get("preset") is not None:
        sizes = PRESETS.get(given["preset"], {})
        given = {**given, **{k: given.get(k) or sizes.get(k) for k in ("hidden", "latent_dim")}}
    out = []
    for key, value in given.items():
        if key not in saved or value is None:
            continue
        want = list(value) if isinstance(value, (list, tuple)) else value
        have = saved[key]
        if key == "classes" and have is not None:
            want, have = [str(v) for v in want], [str(v) for v in have]
        if want != have:
            out.append((key, value, saved[key]))
    return out


def new_configs(
    given: dict[str, Any], epochs: int, threads: int, max_minutes: float | None
) -> tuple[ModelConfig, TrainConfig]:
    """The configs of a new run: what was given, the rest from DEFAULTS and the preset."""
    o = {k: (DEFAULTS.get(k) if v is None else v) for k, v in given.items()}
    if o["preset"] not in PRESETS:
        raise UsageError(f"must be one of {', '.join(PRESETS)}", param="preset")
    sizes = PRESETS[o["preset"]]
    latent = o.get("latent_dim")
    if latent is None:
        default_size = o["conditional"] and o["preset"] == "default"
        latent = CONDITIONAL_LATENT_DIM if default_size else sizes["latent_dim"]
    model_cfg = ModelConfig(
        input_dim=784,  # replaced by the data's size when training starts
        image_shape=(28, 28),
        hidden=list(o.get("hidden") or sizes["hidden"]),
        latent_dim=latent,
        activation=o["activation"],
    ).validate()
    train_cfg = TrainConfig(
        epochs=epochs,
        threads=threads,
        max_minutes=max_minutes,
        **{k: o[k] for k in _TRAIN_KEYS if k not in ("data", "classes", "conditional")},
        data=o.get("data"),
        classes=list(o["classes"]) if o.get("classes") is not None else None,
        conditional=bool(o["conditional"]),
    ).validate()
    return model_cfg, train_cfg
