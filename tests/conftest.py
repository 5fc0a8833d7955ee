"""Shared fixtures: one tiny trained run and its export, built once per test session.

Everything is written under pytest's tmp dirs; the sizes are small so the whole session
fixture costs a few seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"

TINY = {"hidden": [64], "latent_dim": 4}


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"reference data {path} is not present (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A 2-epoch run on the bundled 5k MNIST: 784-64-4."""
    from edgevae.config import ModelConfig, TrainConfig
    from edgevae.train import train

    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    cfg = ModelConfig(784, (28, 28), **TINY)
    train(cfg, TrainConfig(epochs=2, batch_size=100, seed=0, threads=1), run_dir)
    return run_dir


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory) -> Path:
    """fp32 + int8 (recipe static-pc-rr) + firmware static decoder for the tiny run."""
    from edgevae.export import export_run
    from edgevae.pipeline import quantize_dir

    export_dir = tmp_path_factory.mktemp("export") / "export"
    export_run(tiny_run, export_dir)
    quantize_dir(export_dir, recipe="static-pc-rr", budget_nats=10.0, calib=500)
    return export_dir
