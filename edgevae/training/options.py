"""Training options as the caller gave them: defaults for a new run, and on a resume a check
that nothing given differs from what the run was trained with (a resume keeps the run's own
configuration; only the epoch total, threads and the time budget belong to the invocation).

Torch-free: the CLI and the API check options before any training starts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .. import limits
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
    given: dict[str, Any],
    epochs: int,
    threads: int,
    max_minutes: float | None,
    qat_bits: int = 0,
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
        qat_bits=qat_bits,
    ).validate()
    check_memory(model_cfg, train_cfg)  # the model alone, before any data is read
    return model_cfg, train_cfg


def parameters(model_cfg: ModelConfig) -> int:
    """Weights and biases of the encoder and decoder (`training.model.VAE`)."""
    c = model_cfg.n_classes
    enc = [model_cfg.input_dim + c, *model_cfg.hidden]
    dec = [model_cfg.latent_dim + c, *reversed(model_cfg.hidden), model_cfg.input_dim]
    n = sum((a + 1) * b for a, b in zip(enc[:-1], enc[1:], strict=True))
    n += 2 * (model_cfg.hidden[-1] + 1) * model_cfg.latent_dim
    n += sum((a + 1) * b for a, b in zip(dec[:-1], dec[1:], strict=True))
    return n + (model_cfg.input_dim if model_cfg.likelihood == "gaussian" else 0)


# Copies of the fake-quantized layers' weights 4-bit QAT adds: autograd keeps w / s, its
# rounding, the clamp and the product (and their gradients) per step, and a checkpoint
# writes w_q (`training/qat.py`).
QAT_COPIES = 8


def qat_weights(model_cfg: ModelConfig, qat_bits: int) -> int:
    """The weights quantization-aware training fake-quantizes: every decoder layer but the
    first (0 without QAT)."""
    if not qat_bits:
        return 0
    widths = [*reversed(model_cfg.hidden), model_cfg.input_dim]
    return sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))


def check_memory(model_cfg: ModelConfig, cfg: TrainConfig, data: Any = None) -> None:
    """Refuse a training that would not fit in the memory limit (`edgevae.limits`), before it
    allocates anything: its parameters times the copies training keeps (weights, gradients,
    the optimizer's state, and a checkpoint's serialized copy of weights and state; with
    4-bit QAT also `QAT_COPIES` of the fake-quantized layers), the activations of a batch
    forward and back, and the copies of the data a conditional model (images and one-hot
    labels side by side) or dynamic binarization makes. Without `data`
    (a `data.Dataset`, not read yet) only the part of the model that does not depend on the
    images' size is counted."""
    if data is None:
        sized = dataclasses.replace(model_cfg, input_dim=1, classes=[])
        n_train = n_rows = 0
    else:
        classes = list(data.classes or []) if cfg.conditional else []
        sized = dataclasses.replace(model_cfg, input_dim=data.dim, classes=classes)
        n_train, n_rows = len(data.train), len(data.train) + len(data.valid) + len(data.test)
    copies = 7 if cfg.optimizer == "adam" else 5
    params = parameters(sized)
    weights = copies * 4 * params + 4 * QAT_COPIES * qat_weights(sized, cfg.qat_bits)
    widths = 2 * sum(sized.hidden) + 4 * sized.latent_dim + 2 * sized.input_dim
    batch = min(cfg.batch_size, n_train)
    acts = 3 * 4 * batch * (widths + sized.n_classes)
    c = sized.n_classes  # [x, one-hot y] rows, and the C x C identity they are taken from
    rows = n_rows * (sized.input_dim + c) + c * c if c else 0
    rows += 2 * n_train * sized.input_dim if cfg.binarize == "dynamic" else 0
    parts = {"weights": weights, "batch": acts, "data": 4 * rows}
    hidden = ",".join(map(str, sized.hidden))
    if max(parts, key=parts.__getitem__) == "batch":
        param, what = "batch_size", f"training on batches of {batch} images"
    elif parts["data"] > weights:
        param, what = "data", f"training on {n_rows} images with their copies"
    else:
        param = "latent_dim" if sized.latent_dim > max(sized.hidden) else "hidden"
        shape = (
            f"{data.dim}-{hidden}-{sized.latent_dim} model"
            if data is not None
            else (f"model with hidden layers {hidden} and {sized.latent_dim} latent dims")
        )
        qat = " and 4-bit QAT's" if cfg.qat_bits else ""
        what = f"training a {shape} ({params:,} parameters, {copies} copies{qat})"
    limits.check(sum(parts.values()), what, param)
