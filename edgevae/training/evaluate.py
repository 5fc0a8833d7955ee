"""`edgevae eval`: score a trained run dir in nats with the shared numpy bounds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..config import ModelConfig
from ..errors import UsageError
from ..runtime import metrics
from . import checkpoint, runconfig
from .model import VAE

SPLITS = ("train", "valid", "test")


def load_model(run_dir: Path) -> tuple[VAE, dict]:
    """The trained VAE of a run dir (safetensors only), in eval mode, and its config.json."""
    cfg = runconfig.load_config(run_dir)
    model_cfg = ModelConfig.from_dict(cfg["model"])
    model = VAE(model_cfg)
    model.load_state_dict(checkpoint.load_model_weights(run_dir, model_cfg))
    return model.eval(), cfg


def torch_callables(model: VAE):
    @torch.no_grad()
    def encode(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu, logvar = model.encoder(torch.from_numpy(x))
        return mu.numpy(), logvar.numpy()

    @torch.no_grad()
    def decode(z: np.ndarray) -> np.ndarray:
        return model.decoder(torch.from_numpy(z)).numpy()

    gauss = None
    if model.cfg.likelihood == "gaussian":
        gauss = model.decoder.gaussian_logvar().detach().numpy()
    return encode, decode, gauss


def decoder_mean(model: VAE, z: torch.Tensor) -> torch.Tensor:
    """The mean image sigmoid(decoder(z)): what the exported decoders output as x_mean."""
    with torch.inference_mode():
        return torch.sigmoid(model.decoder(z))


def decode_mean(model: VAE, z: np.ndarray) -> np.ndarray:
    """`decoder_mean` for numpy z: mean images [N, D] in [0, 1]."""
    return decoder_mean(model, torch.from_numpy(z)).numpy()


def split_images(cfg: dict, data: str | None, split: str) -> np.ndarray:
    """The images of one split, from `data` or else from the run's own data spec and seed."""
    from ..data.runs import load_run_data

    if split not in SPLITS:
        raise UsageError(f"must be one of {', '.join(SPLITS)}", param="split")
    return getattr(load_run_data(cfg["train"], cfg["model"]["image_shape"], data), split)


def evaluate_run(
    run_dir: Path,
    data: str | None = None,
    split: str = "test",
    k: int = 5000,
    seed: int = 0,
    limit: int | None = None,
    threads: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> metrics.Bounds:
    if k < 1:
        raise UsageError(f"must be >= 1, got {k}", param="k")
    if limit is not None and limit < 1:
        raise UsageError(f"must be >= 1, got {limit}", param="limit")
    from ..threads import set_torch_threads

    set_torch_threads(threads)
    model, cfg = load_model(run_dir)
    x = split_images(cfg, data, split)
    if x.shape[1] != model.cfg.input_dim:
        raise UsageError(
            f"images have {x.shape[1]} pixels, the model expects {model.cfg.input_dim}",
            param="data",
        )
    if limit is not None:
        x = x[:limit]
    encode, decode, gauss = torch_callables(model)
    total = len(x)
    return metrics.evaluate(
        x,
        encode,
        decode,
        model.cfg.likelihood,
        k=k,
        seed=seed,
        gauss_logvar=gauss,
        progress=(lambda done: progress(done, total)) if progress else None,
    )
