"""A training's working set: configs, data, model and optimizer, made fresh or restored from a
run dir's resume state (`setup`); `loop` runs the epochs on it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .. import fsio
from ..config import ModelConfig, TrainConfig, dumps
from ..errors import UsageError
from ..runtime import manifest
from ..threads import set_torch_threads
from . import checkpoint, handgrad, qat, runconfig, state
from .model import VAE, build

if TYPE_CHECKING:
    from ..data.core import Dataset


@dataclass
class Totals:
    """Running totals of the epoch in progress (saved with a Ctrl-C as its "partial")."""

    loss_sum: float = 0.0
    seen: int = 0
    seconds: float = 0.0


@dataclass
class Run:
    """What one training works on, made by `setup`."""

    run_dir: Path
    cfg: TrainConfig
    model_cfg: ModelConfig
    data: Dataset
    model: VAE
    opt: torch.optim.Optimizer
    gradients: Callable[[torch.Tensor, torch.Tensor, float], float]
    lr_state: dict[str, float]
    rows: list[dict[str, Any]]
    start_epoch: int = 0
    samples_seen: int = 0
    # A resume that stopped mid-epoch: (first step, the epoch's totals so far, generator state).
    resume_at: tuple[int, Totals, torch.Tensor] | None = None
    qat_state: qat.QatState | None = None  # quantization-aware training of decoder weights
    x_train: torch.Tensor = field(init=False)
    x_valid: torch.Tensor = field(init=False)
    x_test: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.x_train = self.input_rows("train", self.data.train)
        self.x_valid = self.input_rows("valid", self.data.valid)
        self.x_test = self.input_rows("test", self.data.test)

    def input_rows(self, split: str, images: np.ndarray) -> torch.Tensor:
        """The model's input rows of a split (`VAE.split`): the images, and for a conditional
        model their one-hot labels beside them."""
        if not self.model_cfg.n_classes:
            return torch.from_numpy(np.ascontiguousarray(images))
        return torch.from_numpy(with_labels(images, self.data.labels(split), self.model_cfg))

    @property
    def n_batches(self) -> int:
        return math.ceil(len(self.x_train) / self.cfg.batch_size)


def with_labels(images: np.ndarray, labels: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """[x, one-hot y] rows, float32."""
    onehot = np.eye(cfg.n_classes, dtype=np.float32)[labels]
    return np.concatenate([images.astype(np.float32), onehot], axis=1)


def make_optimizer(model: VAE, cfg: TrainConfig) -> torch.optim.Optimizer:
    # Fused CPU kernels: one pass over all parameters instead of a loop of small ops.
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
    return torch.optim.Adagrad(model.parameters(), lr=cfg.lr, fused=True)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def setup(
    model_cfg: ModelConfig | None,
    cfg: TrainConfig,
    run_dir: Path,
    data: Dataset | None,
    *,
    resume: bool,
    overwrite: bool,
) -> Run:
    """Configs, data, model and optimizer (restored from the state on a resume); writes
    config.json and the metrics rows the run keeps."""
    from ..data.core import load_dataset

    tensors: dict[str, torch.Tensor] = {}
    saved: dict[str, Any] = {}
    if resume:
        model_cfg, cfg = _resumed_configs(run_dir, cfg)
        tensors, saved = state.read(run_dir, cfg.epochs)
    elif overwrite:
        state.clear(run_dir)
    threads = set_torch_threads(cfg.threads)
    if data is None:
        data = load_dataset(
            cfg.data, seed=cfg.seed, binarize=cfg.binarize, classes=cfg.classes,
            labels=cfg.conditional,
        )  # fmt: skip
    model_cfg = _model_config(model_cfg, data, resume, cfg.conditional)
    model = build(model_cfg, cfg.seed)
    opt = make_optimizer(model, cfg)
    fake_quant = qat.convert(model, opt, cfg.qat_bits) if cfg.qat_bits else None
    lr_state = {"lr": cfg.lr, "best": math.inf, "bad_epochs": 0}
    if resume:
        state.restore(model, opt, tensors)
        if fake_quant is not None:
            fake_quant.load(tensors, str(run_dir / runconfig.STATE))
        lr_state.update(saved.get("lr_schedule", {}))
        if lr_state["best"] is None:  # strict JSON keeps "no best bound yet" (inf) as null
            lr_state["best"] = math.inf
        set_lr(opt, lr_state["lr"])
    _write_config(run_dir, model_cfg, cfg, data, threads)
    rows = checkpoint.read_metrics(run_dir)[: saved.get("epoch", 0)] if resume else []
    checkpoint.write_metrics(run_dir, rows)
    gradients = (
        handgrad.gradient_fn(model) if fake_quant is None else qat.gradient_fn(model, fake_quant)
    )
    run = Run(
        run_dir, cfg, model_cfg, data, model, opt, gradients, lr_state, rows, qat_state=fake_quant
    )
    run.start_epoch = saved.get("epoch", 0)
    run.samples_seen = saved.get("samples_seen", 0)
    if saved.get("batch", 0):
        run.resume_at = (saved["batch"], Totals(**saved["partial"]), tensors["rng.torch"])
    return run


def _resumed_configs(run_dir: Path, cfg: TrainConfig) -> tuple[ModelConfig, TrainConfig]:
    """The run's stored configs, with this call's epochs (the new total), threads and
    max_minutes: like threads, max_minutes is a budget for this invocation, timed from its
    start, so the stored one is not re-applied. qat_bits given now starts quantization-aware
    fine-tuning from here on; a run that has it keeps it."""
    stored = runconfig.load_config(run_dir)
    resumed = TrainConfig.from_dict(stored["train"])
    resumed.epochs, resumed.threads, resumed.max_minutes = cfg.epochs, cfg.threads, cfg.max_minutes
    resumed.qat_bits = cfg.qat_bits or resumed.qat_bits
    return ModelConfig.from_dict(stored["model"]), resumed


def _model_config(
    model_cfg: ModelConfig | None, data: Dataset, resume: bool, conditional: bool
) -> ModelConfig:
    """A new run takes input size, image shape, likelihood and (conditional) the class names
    from its data (the caller's config is not changed); a resume keeps its stored config,
    which the data must fit."""
    if model_cfg is None:
        model_cfg = ModelConfig(input_dim=data.train.shape[1], image_shape=data.image_shape)
    if not resume:
        model_cfg = dataclasses.replace(
            model_cfg,
            likelihood=data.likelihood,
            input_dim=data.train.shape[1],
            image_shape=data.image_shape,
            classes=list(data.classes or []) if conditional else [],
        )
    model_cfg.validate()
    if data.train.shape[1] != model_cfg.input_dim:
        raise UsageError(
            f"images have {data.train.shape[1]} pixels, the run's model expects "
            f"{model_cfg.input_dim}",
            param="data",
        )
    return model_cfg


def _write_config(
    run_dir: Path, model_cfg: ModelConfig, cfg: TrainConfig, data: Dataset, threads: int
) -> None:
    config = {
        "model": model_cfg.to_dict(),
        "train": cfg.to_dict(),
        "data": data.spec(),
        "seed": cfg.seed,
        "threads": threads,
        "versions": manifest.versions(),
    }
    fsio.write_text(run_dir / runconfig.CONFIG, dumps(config))
