"""The table-driven refusal tests' machinery (test_hardening.py, test_limits.py,
test_new_inputs.py) and their fixtures (import them into the module that uses them): a Case
builds its files under tmp_path (the working directory), runs
`edgevae.cli.main(argv)` in-process with stderr captured at the fd level (so onnxruntime's
own C++ log lines would count), and `run_case` checks the exit code, the one `error:` line,
and the whole file tree before and after: nothing lost, nothing created.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

from support.hardening import edgevae, images, mini_export, one_error_line, snapshot

# Files a failing command may create: the lock of a run dir it tried to train in.
ALLOWED_NEW = re.compile(r"(^|/)\.lock$")


@dataclass
class Ctx:
    """What a Case's setup gets: the working dir (tmp_path), helpers to fill it, and the
    session's fixtures on demand (`fixture(name)`: built only for the cases that use them)."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    request: pytest.FixtureRequest
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def fixture(self, name: str):
        return self.request.getfixturevalue(name)

    @property
    def runs(self) -> dict[str, Path]:
        return self.fixture("runs")

    def write(self, rel: str, data: bytes | str) -> str:
        path = self.tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode()
        path.write_bytes(data)
        return rel

    def export(self, rel: str = "exp", **kwargs) -> str:
        mini_export(self.tmp / rel, **kwargs)
        return rel

    def copy(self, fixture: str, rel: str) -> str:
        """A copy of a session fixture's folder (an export or a run dir) under tmp_path."""
        src = self.fixture(fixture)
        shutil.copytree(src, self.tmp / rel, ignore=shutil.ignore_patterns(".lock"))
        return rel

    def model(self, rel: str, proto: onnx.ModelProto) -> None:
        self.write(rel, proto.SerializeToString())

    def run(self, rel: str = "run") -> str:
        shutil.copytree(self.runs["run"], self.tmp / rel, ignore=shutil.ignore_patterns(".lock"))
        return rel

    def env(self, name: str, value: str) -> None:
        self.monkeypatch.setenv(name, value)

    def forbid_sessions(self) -> None:
        """Any onnxruntime session fails the test: vetting must refuse the model first."""

        def no_session(*args, **kwargs):
            raise AssertionError("an onnxruntime session was created for a refused model")

        self.monkeypatch.setattr(onnxruntime, "InferenceSession", no_session)


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Ctx], list[str]]  # builds files under tmp_path, returns argv
    code: int  # expected exit code
    message: str  # regex the one stderr line must match
    keep: tuple[str, ...] = ()  # files that must exist before and be byte-identical after
    absent: tuple[str, ...] = ()  # paths that must not exist afterwards
    debug: bool = False  # run `python -m edgevae` in a child: a traceback is expected instead
    limit: str | None = None  # EDGEVAE_MEMORY_LIMIT for this case


def run_case(case: Case, tmp_path: Path, monkeypatch, capfd, request) -> None:
    monkeypatch.chdir(tmp_path)
    ctx = Ctx(tmp_path, monkeypatch, request)
    try:
        argv = case.setup(ctx)
        if case.limit is not None:  # for the command only (fixtures are built without it)
            monkeypatch.setenv("EDGEVAE_MEMORY_LIMIT", case.limit)
        for rel in case.keep:
            assert (tmp_path / rel).is_file(), f"setup did not create {rel}"
        before = snapshot(tmp_path)
        capfd.readouterr()
        if case.debug:
            proc = edgevae(argv, tmp_path)
            code, err = proc.returncode, proc.stderr
            assert "Traceback (most recent call last)" in err, err
            assert re.search(case.message, err), err
        else:
            from edgevae.cli import main

            code = main(argv)
            _, err = capfd.readouterr()
            line = one_error_line(err)
            assert re.search(case.message, line), line
        assert code == case.code, err
    finally:
        for cleanup in ctx.cleanups:
            cleanup()
    after = snapshot(tmp_path)
    changed = sorted(k for k in before if after.get(k) != before[k])
    created = sorted(k for k in after if k not in before and not ALLOWED_NEW.search(k))
    assert not changed, f"files lost or modified: {changed}"
    assert not created, f"files created by a failing command: {created}"
    for rel in case.absent:
        assert not (tmp_path / rel).exists(), rel


def distinct(cases: list[Case]) -> None:
    assert len({c.name for c in cases}) == len(cases), "case names must be distinct"


# ------------------------------------------------------------------------------ fixtures


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
