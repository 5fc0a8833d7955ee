"""The training loop: in-memory batches, per-epoch atomic checkpoints, exact resume.

Randomness is derived, not carried: epoch e draws its permutation, noise and dynamic
binarization from generators seeded by (seed, e). So a resumed run needs only the epoch, the
batch index and, mid-epoch, the torch generator state to reach the same final weights as an
uninterrupted one.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .. import fsio
from ..config import ModelConfig, TrainConfig, dumps
from ..errors import TrainingError, UsageError
from ..runtime import manifest
from ..threads import set_torch_threads
from . import checkpoint, handgrad
from .model import VAE, build

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


def _make_optimizer(model: VAE, cfg: TrainConfig) -> torch.optim.Optimizer:
    # Fused CPU kernels: one pass over all parameters instead of a loop of small ops.
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
    return torch.optim.Adagrad(model.parameters(), lr=cfg.lr, fused=True)


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


def _save_state(run_dir: Path, model: VAE, opt, meta: dict[str, Any], gen_state) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(_optimizer_tensors(opt))
    if gen_state is not None:
        tensors["rng.torch"] = gen_state
    checkpoint.save_weights(run_dir / checkpoint.STATE, tensors, {"state": dumps(meta)})
    fsio.write_text(run_dir / checkpoint.STATE_JSON, dumps(meta))


def _step_lr_schedule(state: dict, valid: float, patience: int, opt, floor: float = 0.0) -> None:
    """Halve the learning rate after `patience` epochs without a better validation bound,
    down to `floor` (below ~1e-3 of the start nothing moves any more; seen: 4e-12).

    Driven by the (deterministic) validation numbers, so a resumed run follows the same
    schedule; its state travels in the resume metadata.
    """
    if patience <= 0:
        return
    if valid < state["best"] - 1e-3:
        state["best"], state["bad_epochs"] = valid, 0
        return
    state["bad_epochs"] += 1
    if state["bad_epochs"] >= patience:
        state["lr"] = max(state["lr"] / 2, floor)
        state["bad_epochs"] = 0
        for group in opt.param_groups:
            group["lr"] = state["lr"]


def _remove_stale_temp_files(run_dir: Path) -> None:
    """Temp files a killed save left behind (fsio names them .NAME.*.tmp); safe under the lock,
    since no other training can be writing here."""
    for name in (
        checkpoint.CONFIG,
        checkpoint.MODEL,
        checkpoint.STATE,
        checkpoint.STATE_JSON,
        checkpoint.METRICS,
    ):
        for tmp in run_dir.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def _prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    # A file here made RunLock's mkdir raise FileExistsError with a traceback.
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--run-dir: {run_dir} is not a directory")
    has_state = (run_dir / checkpoint.STATE).exists() or (run_dir / checkpoint.MODEL).exists()
    if resume and overwrite:
        raise UsageError("--resume and --overwrite cannot be used together")
    if resume and not (run_dir / checkpoint.STATE).exists():
        raise UsageError(f"--resume: {run_dir} holds no training state to resume from")
    if not resume and has_state and not overwrite:
        raise UsageError(
            f"--run-dir: {run_dir} already holds a trained model; pass --resume to continue, "
            "--overwrite to start over, or choose another --run-dir"
        )


def train(
    model_cfg: ModelConfig | None,
    cfg: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    reporter: Reporter | None = None,
) -> TrainResult:
    """Train into run_dir. model_cfg None means: take sizes from the data and defaults."""
    from ..data.core import binarize_dynamic, load_dataset

    reporter = reporter or SilentReporter()
    run_dir = Path(run_dir)
    cfg.validate()
    _prepare_run_dir(run_dir, resume, overwrite)
    # A new run reads its data before the lock creates the run dir: bad --data leaves nothing.
    data = None if resume else load_dataset(cfg.data, seed=cfg.seed, binarize=cfg.binarize)
    with checkpoint.RunLock(run_dir), _StopFlag() as stop:
        _remove_stale_temp_files(run_dir)
        saved: dict[str, Any] = {}
        if resume:
            stored = checkpoint.load_config(run_dir)
            model_cfg = ModelConfig.from_dict(stored["model"])
            # max_minutes is a budget for THIS invocation (timed from its start), like
            # threads; taking the stored one re-applied an old budget and ignored a new one.
            epochs, threads, max_minutes = cfg.epochs, cfg.threads, cfg.max_minutes
            cfg = TrainConfig.from_dict(stored["train"])
            cfg.epochs, cfg.threads, cfg.max_minutes = epochs, threads, max_minutes
            tensors, meta = checkpoint.read_safetensors(run_dir / checkpoint.STATE)
            try:
                import json

                saved = json.loads(meta["state"])
            except (KeyError, ValueError):
                raise TrainingError(f"{run_dir / checkpoint.STATE}: no resume metadata") from None
            if saved["epoch"] >= cfg.epochs:
                # Mid-epoch (batch > 0) too: the loop below would do nothing and exit 0.
                part = f" and part of epoch {saved['epoch'] + 1}" if saved.get("batch", 0) else ""
                raise UsageError(
                    f"--epochs: {run_dir} has already trained {saved['epoch']} epochs{part}; "
                    f"pass --epochs > {saved['epoch']} to continue"
                )
        elif overwrite:
            # MODEL too: a stale model.safetensors would otherwise sit next to the new
            # config.json until the first new epoch ends (and forever if training fails).
            stale = (checkpoint.STATE, checkpoint.STATE_JSON, checkpoint.METRICS, checkpoint.MODEL)
            for name in stale:
                (run_dir / name).unlink(missing_ok=True)

        threads = set_torch_threads(cfg.threads)
        if data is None:
            data = load_dataset(cfg.data, seed=cfg.seed, binarize=cfg.binarize)
        if model_cfg is None:
            model_cfg = ModelConfig(input_dim=data.train.shape[1], image_shape=data.image_shape)
        if not resume:
            model_cfg.likelihood = data.likelihood
            model_cfg.input_dim, model_cfg.image_shape = data.train.shape[1], data.image_shape
        model_cfg.validate()
        if data.train.shape[1] != model_cfg.input_dim:
            raise UsageError(
                f"--data: images have {data.train.shape[1]} pixels, the run's model expects "
                f"{model_cfg.input_dim}"
            )

        model = build(model_cfg, cfg.seed)
        opt = _make_optimizer(model, cfg)
        gradients = handgrad.gradient_fn(model)
        lr_state = {"lr": cfg.lr, "best": math.inf, "bad_epochs": 0}
        if resume:
            model.load_state_dict(
                {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
            )
            _load_optimizer(opt, tensors)
            lr_state.update(saved.get("lr_schedule", {}))
            for group in opt.param_groups:
                group["lr"] = lr_state["lr"]

        config = {
            "model": model_cfg.to_dict(),
            "train": cfg.to_dict(),
            "data": data.spec(),
            "seed": cfg.seed,
            "threads": threads,
            "versions": manifest.versions(),
        }
        fsio.write_text(run_dir / checkpoint.CONFIG, dumps(config))
        rows = checkpoint.read_metrics(run_dir)[: saved.get("epoch", 0)] if resume else []
        checkpoint.write_metrics(run_dir, rows)

        x_train_np = data.train
        x_train = torch.from_numpy(np.ascontiguousarray(x_train_np))
        x_valid = torch.from_numpy(data.valid)
        x_test = torch.from_numpy(data.test)
        n = len(x_train)
        bs = cfg.batch_size
        n_batches = math.ceil(n / bs)
        start_epoch = saved.get("epoch", 0)
        start_batch = saved.get("batch", 0)
        partial = saved.get("partial", {"loss_sum": 0.0, "seen": 0, "seconds": 0.0})
        samples_seen = saved.get("samples_seen", 0)
        t_total = time.perf_counter()

        for epoch in range(start_epoch, cfg.epochs):
            g = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch, 0))
            perm = torch.randperm(n, generator=g)
            if cfg.binarize == "dynamic":
                rng = np.random.default_rng(_epoch_seed(cfg.seed, epoch, 1))
                x_epoch = torch.from_numpy(binarize_dynamic(x_train_np, rng))
            else:
                x_epoch = x_train
            first = 0
            loss_sum, seen, seconds = 0.0, 0, 0.0
            if epoch == start_epoch and start_batch:
                g.set_state(tensors["rng.torch"])
                first = start_batch
                loss_sum, seen, seconds = partial["loss_sum"], partial["seen"], partial["seconds"]
            reporter.start_epoch(epoch + 1, cfg.epochs, n_batches, first)
            model.train()
            t0 = time.perf_counter()
            for b in range(first, n_batches):
                if stop.requested:
                    meta = {
                        "epoch": epoch,
                        "batch": b,
                        "samples_seen": samples_seen,
                        "partial": {
                            "loss_sum": loss_sum,
                            "seen": seen,
                            "seconds": seconds + time.perf_counter() - t0,
                        },
                        "optimizer": cfg.optimizer,
                        "lr_schedule": lr_state,
                    }
                    _save_state(run_dir, model, opt, meta, g.get_state())
                    raise Interrupted(
                        f"interrupted in epoch {epoch + 1} at step {b}; state saved to "
                        f"{run_dir} (continue with --resume)"
                    )
                idx = perm[b * bs : (b + 1) * bs]
                xb = x_epoch.index_select(0, idx)
                eps = torch.randn(len(idx), model_cfg.latent_dim, generator=g)
                beta = 1.0
                if epoch < cfg.kl_warmup:
                    # KL annealing (Sonderby et al. 2016): units get used before the KL
                    # term can switch them off; the metrics still report the full -ELBO.
                    beta = (epoch * n_batches + b + 1) / (cfg.kl_warmup * n_batches)
                value = gradients(xb, eps, beta)
                if not math.isfinite(value):
                    raise TrainingError(
                        f"loss became {value} at epoch {epoch + 1}, step {b + 1}; "
                        "nothing was saved for this epoch (try a lower --lr)"
                    )
                opt.step()
                loss_sum += value * len(idx)
                seen += len(idx)
                samples_seen += len(idx)
                reporter.step(value)
            seconds += time.perf_counter() - t0
            model.eval()
            valid = neg_elbo(model, x_valid, cfg.seed + 1)
            test = neg_elbo(model, x_test, cfg.seed + 2)
            row = {
                "epoch": epoch + 1,
                "train_neg_elbo": loss_sum / max(seen, 1),
                "valid_neg_elbo": valid["neg_elbo"],
                "valid_recon": valid["recon"],
                "valid_kl": valid["kl"],
                "test_neg_elbo": test["neg_elbo"],
                "epoch_seconds": round(seconds, 3),
                "images_per_s": round(seen / seconds, 1) if seconds > 0 else None,
                "samples_seen": samples_seen,
                "lr": lr_state["lr"],
            }
            if not all(math.isfinite(v) for v in (valid["neg_elbo"], test["neg_elbo"])):
                raise TrainingError(f"validation -ELBO is not finite after epoch {epoch + 1}")
            rows.append(row)
            _step_lr_schedule(lr_state, valid["neg_elbo"], cfg.lr_patience, opt, cfg.lr * 1e-3)
            meta = {
                "epoch": epoch + 1,
                "batch": 0,
                "samples_seen": samples_seen,
                "optimizer": cfg.optimizer,
                "lr_schedule": lr_state,
            }
            # Metrics BEFORE the state: the state is the commit point of an epoch. A resume
            # keeps metrics rows [:state epoch], so a crash between the two now only makes the
            # resume redo this epoch; written after the state (as before), a crash in between
            # lost this epoch's row for good (metrics went 1, 2, 4, ... after --resume).
            checkpoint.write_metrics(run_dir, rows)
            _save_state(run_dir, model, opt, meta, None)
            checkpoint.save_weights(run_dir / checkpoint.MODEL, model.state_dict(), {})
            reporter.end_epoch(row)
            start_batch = 0
            if cfg.max_minutes is not None and time.perf_counter() - t_total > 60 * cfg.max_minutes:
                break
        return TrainResult(run_dir, len(rows), rows, time.perf_counter() - t_total)
