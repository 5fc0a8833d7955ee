"""Shared fixtures: one tiny trained run and its export, built once per test session.

Everything is written under pytest's tmp dirs; the sizes are small so the whole session
fixture costs a few seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
    from edgevae.training.loop import train

    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    cfg = ModelConfig(784, (28, 28), **TINY)
    train(cfg, TrainConfig(epochs=2, batch_size=100, seed=0, threads=1), run_dir)
    return run_dir


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory) -> Path:
    """fp32 + int8 (recipe static-pc-rr) + the firmware pair (encoder.int8.static.onnx,
    decoder.int8.static.onnx) for the tiny run."""
    import edgevae
    from edgevae.training.export import export_run

    export_dir = tmp_path_factory.mktemp("export") / "export"
    export_run(tiny_run, export_dir)
    edgevae.quantize(
        export_dir, run_dir=tiny_run, recipe="static-pc-rr", budget_nats=10.0, calib=500
    )
    return export_dir


@pytest.fixture(scope="session")
def tiny_cond_run(tmp_path_factory) -> Path:
    """A conditional 2-epoch run on the bundled 5k MNIST (labels 0-9): 794-32-2 / 12-32-784."""
    import edgevae

    run_dir = tmp_path_factory.mktemp("run") / "cond"
    edgevae.train(run_dir=run_dir, epochs=2, hidden=[32], latent_dim=2, conditional=True)
    return run_dir


@pytest.fixture(scope="session")
def tiny_cond_export(tiny_cond_run, tmp_path_factory) -> Path:
    """The fp32 export of the conditional run."""
    import edgevae

    export_dir = tmp_path_factory.mktemp("export") / "cond"
    edgevae.export(tiny_cond_run, export_dir)
    return export_dir


def run_script(tmp_path: Path, text: str, *args: object, timeout: int = 600):
    """Run a Python script in a subprocess (one thread) and return its last stdout line as JSON."""
    script = tmp_path / "script.py"
    script.write_text(text)
    proc = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Prepended to the SIGKILL scripts: torch is imported once in the parent, then each training
# runs in a forked child that is killed at a chosen moment.
KILL_TRAINING = r'''
import os, signal, time

import edgevae.cli
import edgevae.training.loop  # noqa: F401  (torch: imported before forking, never run here)
import torch

torch.use_deterministic_algorithms(True)  # imports torch._dynamo: seconds, paid once here


def kill_training(args, delay, wait_for=None, timeout=120.0):
    """Fork `edgevae ARGS` (output to /dev/null); once `wait_for` exists (when given), sleep
    `delay` s and SIGKILL it. Returns (whether SIGKILL ended it, its wait status)."""
    pid = os.fork()
    if pid == 0:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        code = 3
        try:
            code = edgevae.cli.main(args)
        finally:
            os._exit(code)
    if wait_for is not None:
        deadline = time.monotonic() + timeout
        while not wait_for.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
'''
