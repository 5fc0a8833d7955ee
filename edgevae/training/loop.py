"""The training loop: in-memory batches, per-epoch atomic checkpoints, exact resume.

Randomness is derived, not carried: epoch e draws its permutation, noise and dynamic
binarization from generators seeded by (seed, e). So a resumed run needs only the epoch, the
batch index and, mid-epoch, the torch generator state to reach the same final weights as an
uninterrupted one.

`train` reads as its parts: `setup.setup` (configs, data, model and optimizer, restored on a
resume), `_train_epoch` (the optimizer steps, `_step` each), `_end_epoch` (scores, learning
rate schedule, `_checkpoint`) and the `TrainResult`; `state` saves and reads back the resume
state.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

import numpy as np
import torch

from ..config import ModelConfig, TrainConfig
from ..errors import TrainingError
from . import checkpoint, runconfig, state
from .model import VAE
from .options import check_memory
from .setup import Run, Totals, set_lr, setup

EVAL_BATCH = 2000


class Reporter(Protocol):
    def start_epoch(self, epoch: int, epochs: int, n_batches: int, done: int) -> None: ...
    def step(self, loss: float) -> None: ...
    def end_epoch(self, row: dict[str, Any]) -> None: ...


class SilentReporter:
    def start_epoch(self, epoch: int, epochs: int, n_batches: int, done: int) -> None:
        pass

    def step(self, loss: float) -> None:
        pass

    def end_epoch(self, row: dict[str, Any]) -> None:
        pass


class _StopFlag:
    """SIGINT sets a flag that the loop checks between whole optimizer steps, so an
    interrupted run never saves a half-applied step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.requested:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class Interrupted(TrainingError):
    """Ctrl-C: the state was saved; the CLI exits 130."""

    exit_code = 130


@dataclass
class TrainResult:
    run_dir: Path
    epochs: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, np.uint64)[0] >> 1)


@torch.no_grad()
def neg_elbo(model: VAE, x: torch.Tensor, seed: int) -> dict[str, float]:
    """One-sample -ELBO with fixed noise, so epochs are compared on the same draw."""
    g = torch.Generator().manual_seed(seed)
    totals = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(x), EVAL_BATCH):
        xb = x[start : start + EVAL_BATCH]
        eps = torch.randn(len(xb), model.cfg.latent_dim, generator=g)
        loss, recon, kl = model.loss(xb, eps)
        totals += torch.tensor([loss.item(), recon.item(), kl.item()], dtype=torch.float64) * len(
            xb
        )
    t = (totals / len(x)).tolist()
    return {"neg_elbo": t[0], "recon": t[1], "kl": t[2]}


def _step_lr_schedule(schedule: dict, valid: float, patience: int, opt, floor: float = 0.0) -> None:
    """Halve the learning rate after `patience` epochs without a better validation bound,
    down to `floor` (below ~1e-3 of the start nothing moves any more; seen: 4e-12).

    Driven by the (deterministic) validation numbers, so a resumed run follows the same
    schedule; its state travels in the resume metadata.
    """
    if patience <= 0:
        return
    if valid < schedule["best"] - 1e-3:
        schedule["best"], schedule["bad_epochs"] = valid, 0
        return
    schedule["bad_epochs"] += 1
    if schedule["bad_epochs"] >= patience:
        schedule["lr"] = max(schedule["lr"] / 2, floor)
        schedule["bad_epochs"] = 0
        set_lr(opt, schedule["lr"])


# --------------------------------------------------------------------------- train


def train(
    model_cfg: ModelConfig | None,
    cfg: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    reporter: Reporter | None = None,
) -> TrainResult:
    """Train into run_dir. model_cfg None means: take sizes from the data and defaults.

    A new run needs a run_dir without a trained model (or `overwrite`). `resume` continues the
    run in run_dir up to `cfg.epochs` epochs in total with the run's stored settings; only
    `cfg.epochs`, `cfg.threads` and `cfg.max_minutes` are taken from this call. Ctrl-C saves the
    state between two steps and raises `Interrupted`.
    """
    from ..data.core import load_dataset

    reporter = reporter or SilentReporter()
    run_dir = Path(run_dir)
    cfg.validate()
    state.check_run_dir(run_dir, resume, overwrite)
    # A new run reads its data before the lock creates the run dir: bad data leaves nothing.
    data = (
        None
        if resume
        else load_dataset(
            cfg.data,
            seed=cfg.seed,
            binarize=cfg.binarize,
            classes=cfg.classes,
            labels=cfg.conditional,
        )  # fmt: skip
    )
    if data is not None:  # refused before the run dir is made when it would not fit in memory
        check_memory(model_cfg or ModelConfig(data.dim, data.image_shape), cfg, data)
    with checkpoint.RunLock(run_dir), _StopFlag() as stop:
        state.remove_stale_temp_files(run_dir)
        run = setup(model_cfg, cfg, run_dir, data, resume=resume, overwrite=overwrite)
        t_total = time.perf_counter()
        for epoch in range(run.start_epoch, run.cfg.epochs):
            totals = _train_epoch(run, epoch, stop, reporter)
            reporter.end_epoch(_end_epoch(run, epoch, totals))
            budget = run.cfg.max_minutes
            if budget is not None and time.perf_counter() - t_total > 60 * budget:
                break
        return TrainResult(run_dir, len(run.rows), run.rows, time.perf_counter() - t_total)


# --------------------------------------------------------------------------- epochs


def _epoch_images(run: Run, epoch: int) -> torch.Tensor:
    """The training images of this epoch: a fresh Bernoulli draw under dynamic binarization."""
    if run.cfg.binarize != "dynamic":
        return run.x_train
    from ..data.core import binarize_dynamic

    rng = np.random.default_rng(_epoch_seed(run.cfg.seed, epoch, 1))
    return run.input_rows("train", binarize_dynamic(run.data.train, rng))


def _train_epoch(run: Run, epoch: int, stop: _StopFlag, reporter: Reporter) -> Totals:
    """The optimizer steps of one epoch (from the saved step when a resume starts mid-epoch);
    a Ctrl-C between two steps saves the state and raises Interrupted."""
    g = torch.Generator().manual_seed(_epoch_seed(run.cfg.seed, epoch, 0))
    perm = torch.randperm(len(run.x_train), generator=g)
    x_epoch = _epoch_images(run, epoch)
    first, totals = 0, Totals()
    if run.resume_at is not None:
        first, totals, rng_state = run.resume_at
        g.set_state(rng_state)
        run.resume_at = None
    reporter.start_epoch(epoch + 1, run.cfg.epochs, run.n_batches, first)
    run.model.train()
    bs = run.cfg.batch_size
    t0 = time.perf_counter()
    for b in range(first, run.n_batches):
        if stop.requested:
            totals.seconds += time.perf_counter() - t0
            _save_interrupted(run, epoch, b, totals, g.get_state())
        idx = perm[b * bs : (b + 1) * bs]
        value = _step(run, x_epoch.index_select(0, idx), g, epoch, b)
        totals.loss_sum += value * len(idx)
        totals.seen += len(idx)
        run.samples_seen += len(idx)
        reporter.step(value)
    totals.seconds += time.perf_counter() - t0
    return totals


def _step(run: Run, xb: torch.Tensor, g: torch.Generator, epoch: int, b: int) -> float:
    """One optimizer step on step b's batch; returns its loss (before the step)."""
    eps = torch.randn(len(xb), run.model_cfg.latent_dim, generator=g)
    beta = 1.0
    if epoch < run.cfg.kl_warmup:
        # KL annealing (Sonderby et al. 2016): units get used before the KL term can switch
        # them off; the metrics still report the full -ELBO.
        beta = (epoch * run.n_batches + b + 1) / (run.cfg.kl_warmup * run.n_batches)
    value = run.gradients(xb, eps, beta)
    if not math.isfinite(value):
        raise TrainingError(
            f"loss became {value} at epoch {epoch + 1}, step {b + 1}; "
            "nothing was saved for this epoch (try a lower learning rate)"
        )
    run.opt.step()
    return value


def _save_interrupted(
    run: Run, epoch: int, batch: int, totals: Totals, rng_state: torch.Tensor
) -> NoReturn:
    meta = {
        "epoch": epoch,
        "batch": batch,
        "samples_seen": run.samples_seen,
        "partial": dataclasses.asdict(totals),
        "optimizer": run.cfg.optimizer,
        "lr_schedule": run.lr_state,
    }
    state.save(run.run_dir, run.model, run.opt, meta, rng_state, _extra(run))
    raise Interrupted(
        f"interrupted in epoch {epoch + 1} at step {batch}; state saved to {run.run_dir}, "
        "from which the run resumes"
    )


def _end_epoch(run: Run, epoch: int, totals: Totals) -> dict[str, Any]:
    """Score the epoch on the validation and test sets, step the learning rate schedule and
    checkpoint; returns the epoch's metrics row."""
    run.model.eval()
    valid = neg_elbo(run.model, run.x_valid, run.cfg.seed + 1)
    test = neg_elbo(run.model, run.x_test, run.cfg.seed + 2)
    seconds = totals.seconds
    row = {
        "epoch": epoch + 1,
        "train_neg_elbo": totals.loss_sum / max(totals.seen, 1),
        "valid_neg_elbo": valid["neg_elbo"],
        "valid_recon": valid["recon"],
        "valid_kl": valid["kl"],
        "test_neg_elbo": test["neg_elbo"],
        "epoch_seconds": round(seconds, 3),
        "images_per_s": round(totals.seen / seconds, 1) if seconds > 0 else None,
        "samples_seen": run.samples_seen,
        "lr": run.lr_state["lr"],
    }
    if run.qat_state is not None:
        row["qat_bits"] = run.qat_state.bits  # the bounds are the fake-quantized decoder's
    if not all(math.isfinite(v) for v in (valid["neg_elbo"], test["neg_elbo"])):
        raise TrainingError(f"validation -ELBO is not finite after epoch {epoch + 1}")
    run.rows.append(row)
    patience, floor = run.cfg.lr_patience, run.cfg.lr * 1e-3
    _step_lr_schedule(run.lr_state, valid["neg_elbo"], patience, run.opt, floor)
    _checkpoint(run, epoch + 1)
    return row


def _checkpoint(run: Run, epochs_done: int) -> None:
    """Metrics, then the resume state, then the model. The state is the commit point of an
    epoch and a resume keeps metrics rows [:state epoch], so a crash between two of these
    writes makes the resume redo this epoch and never loses its metrics row."""
    meta = {
        "epoch": epochs_done,
        "batch": 0,
        "samples_seen": run.samples_seen,
        "optimizer": run.cfg.optimizer,
        "lr_schedule": run.lr_state,
    }
    checkpoint.write_metrics(run.run_dir, run.rows)
    state.save(run.run_dir, run.model, run.opt, meta, None, _extra(run))
    weights = (
        run.model.state_dict()
        if run.qat_state is None
        else run.qat_state.quantized_state_dict(run.model)
    )
    checkpoint.save_weights(run.run_dir / runconfig.MODEL, weights, {})


def _extra(run: Run) -> dict[str, torch.Tensor]:
    """Resume-state tensors beyond the model and optimizer: QAT's steps."""
    return {} if run.qat_state is None else run.qat_state.tensors()
