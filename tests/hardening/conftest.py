"""Fixtures of the hardening tables and fuzzers: two small real runs, and a calibrated export."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from support.hardening import images


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A real 2-epoch run (784-16-2) and the state of a run with another config (784-8-2)."""
    from edgevae.config import ModelConfig, TrainConfig
    from edgevae.training.loop import train

    base = tmp_path_factory.mktemp("runs")
    data = base / "blobs.npy"
    np.save(data, images(60, seed=3))
    tcfg = dict(batch_size=10, threads=1, data=str(data))
    train(ModelConfig(784, (28, 28), hidden=[16], latent_dim=2), TrainConfig(epochs=2, **tcfg),
          base / "run")  # fmt: skip
    train(ModelConfig(784, (28, 28), hidden=[8], latent_dim=2), TrainConfig(epochs=1, **tcfg),
          base / "other")  # fmt: skip
    return {"run": base / "run", "other": base / "other", "data": data}


@pytest.fixture(scope="session")
def thresholded_export(tiny_run, tiny_export, tmp_path_factory) -> Path:
    """A copy of the tiny export with an elbo threshold (int8, FPR 0.05) in its manifest."""
    import edgevae

    exp = tmp_path_factory.mktemp("thresholded") / "export"
    shutil.copytree(tiny_export, exp)
    edgevae.threshold(exp, fpr=0.05, run_dir=tiny_run)
    return exp
