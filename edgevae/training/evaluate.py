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
    """(encode, decode, gaussian log-variance) as numpy callables; a conditional model's take
    the one-hot labels as a second argument."""

    def rows(a: np.ndarray, y: np.ndarray | None) -> torch.Tensor:
        t = torch.from_numpy(a)
        return t if y is None else torch.cat((t, torch.from_numpy(y)), dim=1)

    @torch.no_grad()
    def encode(x: np.ndarray, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        mu, logvar = model.encoder(rows(x, y))
        return mu.numpy(), logvar.numpy()

    @torch.no_grad()
    def decode(z: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        return model.decoder(
            torch.from_numpy(z), None if y is None else torch.from_numpy(y)
        ).numpy()

    gauss = None
    if model.cfg.likelihood == "gaussian":
        gauss = model.decoder.gaussian_logvar().detach().numpy()
    return encode, decode, gauss


def decoder_mean(model: VAE, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """The mean image sigmoid(decoder(z, y)): what the exported decoders output as x_mean."""
    with torch.inference_mode():
        return torch.sigmoid(model.decoder(z, y))


def decode_mean(model: VAE, z: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """`decoder_mean` for numpy z (and one-hot y): mean images [N, D] in [0, 1]."""
    return decoder_mean(
        model, torch.from_numpy(z), None if y is None else torch.from_numpy(y)
    ).numpy()


def one_hot_labels(model: VAE, classes, labels: np.ndarray | None) -> np.ndarray:
    """The one-hot labels [N, C] of a conditional model's evaluation images, their class
    names matched to the model's."""
    if labels is None:
        raise UsageError("a conditional model is evaluated on labelled data", param="data")
    names = list(classes or [])
    index = {name: i for i, name in enumerate(model.cfg.classes)}
    missing = [n for n in names if n not in index]
    if missing:
        raise UsageError(
            f"the data has classes {missing} that the model does not know ({model.cfg.classes})",
            param="data",
        )
    mapped = np.array([index[n] for n in names], dtype=np.int64)[labels]
    return np.eye(model.cfg.n_classes, dtype=np.float32)[mapped]


def split_images(cfg: dict, data: str | None, split: str):
    """(images, labels, class names) of one split, from `data` or else from the run's own
    data spec and seed; labels are None when the data has none."""
    from ..data.runs import load_run_data

    if split not in SPLITS:
        raise UsageError(f"must be one of {', '.join(SPLITS)}", param="split")
    ds = load_run_data(cfg["train"], cfg["model"]["image_shape"], data)
    return getattr(ds, split), ds.labels(split), ds.classes


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
    x, labels, classes = split_images(cfg, data, split)
    if x.shape[1] != model.cfg.input_dim:
        raise UsageError(
            f"images have {x.shape[1]} pixels, the model expects {model.cfg.input_dim}",
            param="data",
        )
    y = one_hot_labels(model, classes, labels) if model.cfg.n_classes else None
    if limit is not None:
        x, y = x[:limit], (None if y is None else y[:limit])
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
        y=y,
    )
