"""Faults injected into real processes: SIGKILL, SIGINT, a second training, a full disk.

test_train.py already kills fresh trainings at random moments and interrupts one with SIGINT
for an exact resume. These cover what it does not: kills that land in a *resumed* training,
again and again on the same run dir; a second process refused by the run-dir lock while the
first is training (and an --overwrite that must not delete its files); SIGINT of that lock
holder; and ENOSPC in a child process, from a real full tmpfs where mounting is permitted and
from an fsync hook otherwise, for `train` checkpoints and for `sample` output.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import KILL_TRAINING, run_script
from support.hardening import edgevae as edgevae_child
from support.hardening import (
    final_error_line,
    full_disk,
    images,
    mini_export,
    one_error_line,
    png_bytes,
    temp_files,
)

from edgevae.cli import main
from edgevae.config import ModelConfig
from edgevae.training import checkpoint, runconfig

TINY = ["--hidden", "16", "--latent-dim", "2", "--threads", "1", "--no-export"]
RUN_FILES = {".lock", "config.json", "model.safetensors", "state.safetensors", "state.json",
             "metrics.jsonl"}  # fmt: skip


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "blobs.npy"
    np.save(path, images(60, seed=9))  # 48 train images: 5 steps of 10 an epoch
    return path


def _train(run_dir: Path, data: Path, *extra: str) -> list[str]:
    return ["train", "--run-dir", str(run_dir), "--data", str(data), "--batch-size", "10", *TINY,
            *extra]  # fmt: skip


def _check_run(run_dir: Path) -> int:
    """Everything a training left in run_dir loads; returns the state's epoch."""
    names = set(os.listdir(run_dir))
    stray = {n for n in names - RUN_FILES if not n.endswith(".tmp")}
    assert not stray, f"unexpected files {stray}"
    cfg = runconfig.load_config(run_dir)
    _, meta = checkpoint.read_safetensors(run_dir / runconfig.STATE)  # + check vs config
    epoch = json.loads(meta["state"])["epoch"]
    checkpoint.load_model_weights(run_dir, ModelConfig.from_dict(cfg["model"]))
    rows = [r["epoch"] for r in checkpoint.read_metrics(run_dir)]
    # metrics are written just before the state (the commit point): at most one row ahead
    assert rows[:epoch] == list(range(1, epoch + 1)) and len(rows) in (epoch, epoch + 1), rows
    return epoch


# ------------------------------------------------------------------------------ SIGKILL

KILLER = r'''
"""Start a training, then resume it again and again, SIGKILLing each process at a seeded random
moment; snapshot the run dir after every kill."""
import json, random, shutil, sys
from pathlib import Path

import onnxruntime  # noqa: F401

data, base, trials = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
run_dir = base / "run"
rng = random.Random(20240607)
out = []
for i in range(trials):
    args = ["train", "--data", data, "--run-dir", str(run_dir), "--hidden", "16",
            "--latent-dim", "2", "--batch-size", "10", "--epochs", "100000", "--threads", "1",
            "--no-export"] + (["--resume"] if i else [])
    # the first kill only once there is a checkpoint to resume from
    delay = rng.uniform(0.0, 0.5)
    killed, _ = kill_training(args, delay, run_dir / "model.safetensors" if i == 0 else None)
    shutil.copytree(run_dir, base / f"snap{i}")
    out.append({"trial": i, "delay": round(delay, 3), "killed": killed})
print(json.dumps(out))
'''


def test_sigkill_during_resumed_trainings_always_leaves_a_resumable_run(tmp_path, blobs):
    trials = 6
    results = run_script(tmp_path, KILL_TRAINING + KILLER, blobs, tmp_path, trials)
    # every process was still training when killed (none refused by a stale lock, none died)
    assert [r["killed"] for r in results] == [True] * trials, results

    epochs = [_check_run(tmp_path / f"snap{i}") for i in range(trials)]
    assert epochs == sorted(epochs) and epochs[0] >= 1, epochs  # never lost an epoch
    run_dir = tmp_path / "run"
    total = epochs[-1] + 1
    assert main([*_train(run_dir, blobs), "--resume", "--epochs", str(total)]) == 0
    assert _check_run(run_dir) == total
    assert [r["epoch"] for r in checkpoint.read_metrics(run_dir)] == list(range(1, total + 1))
    assert temp_files(run_dir) == []  # the resume cleared what the kills left
    print(f"SIGKILL: {results}, state epochs {epochs}")


# ------------------------------------------------------------------- lock + SIGINT


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"training exited early ({proc.returncode})"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_a_running_training_locks_out_others_and_sigint_leaves_it_resumable(tmp_path, blobs, capfd):
    run_dir = tmp_path / "run"
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgevae", *_train(run_dir, blobs, "--epochs", "100000")],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        try:
            _wait_for(run_dir / runconfig.MODEL, proc)
            capfd.readouterr()
            # another training into the same dir, resuming or starting over: refused, and
            # --overwrite deleted nothing (the lock is taken before any file is touched)
            for extra in (["--resume"], ["--overwrite"]):
                assert main([*_train(run_dir, blobs, "--epochs", "3"), *extra]) == 1
                line = one_error_line(capfd.readouterr().err)
                assert f"{run_dir}: another training is writing to this run dir" in line
                assert (run_dir / runconfig.STATE).exists()
                assert (run_dir / runconfig.MODEL).exists()
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = log.read_text()
    assert rc == 130, stderr
    line = final_error_line(stderr)
    want = (
        r"interrupted in epoch \d+ at step \d+; state saved to .*resumes \(edgevae train --resume"
    )
    assert re.search(want, line)
    epoch = _check_run(run_dir)
    saved = json.loads((run_dir / runconfig.STATE_JSON).read_text())
    total = epoch + 1  # finishes the interrupted epoch (if mid-epoch) and one more at most
    assert main([*_train(run_dir, blobs), "--resume", "--epochs", str(total)]) == 0
    assert _check_run(run_dir) == total
    print(f"SIGINT at {saved}")


# ---------------------------------------------------------------------------- full disk

DISKS = ["tmpfs", "fsync-hook"]


@pytest.mark.parametrize("disk", DISKS)
def test_full_disk_during_sample_keeps_the_old_picture(tmp_path, disk):
    exp = mini_export(tmp_path / "exp")
    full = tmp_path / "full"
    kind = "tmpfs" if disk == "tmpfs" else "hook"
    with full_disk(full, kind, free_bytes=0, hook_dir=tmp_path / "hook") as fs:
        old = png_bytes(images(1)[0])
        (full / "grid.png").write_bytes(old)
        fs["fill"]()
        proc = edgevae_child(
            ["sample", "--export-dir", str(exp), "--out", str(full / "grid.png"), "--n", "16"],
            tmp_path,
            env=fs["env"],
        )
        line = one_error_line(proc.stderr)
        assert proc.returncode == 1, proc.stderr
        assert f"cannot write {full / 'grid.png'}: No space left on device" in line
        assert (full / "grid.png").read_bytes() == old
        assert temp_files(full) == []
        print(f"{disk}: {fs['kind']}")


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory, blobs) -> Path:
    run_dir = tmp_path_factory.mktemp("one") / "run"
    assert main(_train(run_dir, blobs, "--epochs", "1")) == 0
    return run_dir


@pytest.mark.parametrize("disk", DISKS)
def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, disk, blobs, one_epoch):
    """`train --resume` whose epoch-2 checkpoint hits ENOSPC: exit 1 with one line, epoch 1's
    weights and state intact and loadable, no temp files; with space again, resume finishes."""
    full = tmp_path / "full"
    kind = "tmpfs" if disk == "tmpfs" else "hook"
    # room for config.json and metrics.jsonl (a few kB), not for the ~300 kB state
    with full_disk(full, kind, free_bytes=96 * 1024, hook_dir=tmp_path / "hook") as fs:
        run_dir = full / "run"
        run_dir.mkdir()
        for name in (runconfig.CONFIG, runconfig.MODEL, runconfig.STATE, runconfig.STATE_JSON,
                     runconfig.METRICS):  # fmt: skip
            (run_dir / name).write_bytes((one_epoch / name).read_bytes())
        kept = {n: (run_dir / n).read_bytes() for n in (runconfig.MODEL, runconfig.STATE)}
        fs["fill"]()
        proc = edgevae_child(
            [*_train(run_dir, blobs), "--resume", "--epochs", "2"], tmp_path, env=fs["env"]
        )
        line = final_error_line(proc.stderr)
        assert proc.returncode == 1, proc.stderr
        assert re.search(rf"cannot write {re.escape(str(run_dir))}/\S+: No space left", line)
        for name, data in kept.items():
            assert (run_dir / name).read_bytes() == data, name
        assert _check_run(run_dir) == 1
        assert temp_files(run_dir) == []
        (full / ".filler").unlink(missing_ok=True)  # space again (tmpfs)
        # in this process: no hook, and on the tmpfs the filler is gone
        assert main([*_train(run_dir, blobs), "--resume", "--epochs", "2"]) == 0
        assert _check_run(run_dir) == 2
        print(f"{disk}: {fs['kind']}: {line}")
