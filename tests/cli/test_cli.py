"""The CLI around training: option checks, run-dir rules, `eval`, help texts and entry points."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import edgevae
import edgevae.cli
from edgevae.cli import main
from edgevae.cli.common import app
from edgevae.errors import UsageError
from edgevae.training import checkpoint, runconfig

TINY = ["--hidden", "32", "--latent-dim", "2", "--threads", "1", "--no-export"]


@pytest.fixture(scope="module")
def npy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "images.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (100, 28, 28), dtype=np.uint8))
    return path


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


# -------------------------------------------------------------------- option ranges


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--epochs", "0"], "--epochs"),
        (["--latent-dim", "0"], "--latent-dim"),
        (["--lr", "0"], "--lr"),
        (["--lr=-1"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--batch-size", "0"], "--batch-size"),
        (["--hidden", "a,b"], "--hidden"),
        (["--hidden", "0"], "--hidden"),
        (["--hidden", ","], "--hidden"),
        (["--optimizer", "bogus"], "--optimizer"),
        (["--binarize", "bogus"], "--binarize"),
        (["--activation", "bogus"], "--activation"),
        (["--preset", "bogus"], "--preset"),
        (["--threads=-1"], "--threads"),
        (["--seed=-1"], "--seed"),
        (["--max-minutes", "0"], "--max-minutes"),
        (["--max-minutes", "nan"], "--max-minutes"),
        (["--resume", "--overwrite"], "--resume"),
    ],
)
def test_bad_train_option_is_one_line_exit_2_and_creates_nothing(
    tmp_path, monkeypatch, capsys, args, option
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", *args]) == 2
    out, err = capsys.readouterr()
    assert option in one_line_error(err)
    assert "Traceback" not in out
    assert list(tmp_path.iterdir()) == []  # no runs/default, no export/


def test_debug_shows_the_exception_instead(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="lr: must be a finite number > 0"):
        main(["--debug", "train", "--lr", "inf"])
    assert main(["train", "--lr", "inf"]) == 2  # debug is per invocation


# ----------------------------------------------------------------------- run dirs


def test_existing_run_dir_needs_resume_or_overwrite(tmp_path, monkeypatch, capsys, npy) -> None:
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "default"
    assert main(["train", "--data", str(npy), *TINY, "--epochs", "1"]) == 0  # default --run-dir
    first = (run_dir / runconfig.MODEL).read_bytes()
    capsys.readouterr()

    assert main(["train", "--data", str(npy), *TINY, "--epochs", "1"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert line.startswith("error: --run-dir: ") and "resume it, overwrite it" in line
    assert (run_dir / runconfig.MODEL).read_bytes() == first

    assert (
        main(["train", "--data", str(npy), *TINY, "--epochs", "1", "--overwrite", "--seed", "1"])
        == 0
    )
    assert (run_dir / runconfig.MODEL).read_bytes() != first
    assert json.loads((run_dir / runconfig.CONFIG).read_text())["seed"] == 1
    assert [r["epoch"] for r in checkpoint.read_metrics(run_dir)] == [1]


@pytest.mark.parametrize("make_dir", [True, False])
def test_resume_without_state_is_exit_2(tmp_path, capsys, make_dir) -> None:
    run_dir = tmp_path / "empty"
    if make_dir:
        run_dir.mkdir()
    assert main(["train", "--run-dir", str(run_dir), "--resume", *TINY]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "--resume" in line and "no training state" in line
    assert list(run_dir.iterdir()) == [] if make_dir else not run_dir.exists()


def test_run_dir_that_is_a_file_is_one_line(tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    assert main(["train", "--run-dir", str(blocker), *TINY]) == 2
    assert "--run-dir" in one_line_error(capsys.readouterr().err)
    assert main(["train", "--run-dir", str(blocker / "sub"), *TINY]) == 1
    assert "Not a directory" in one_line_error(capsys.readouterr().err)
    assert blocker.read_text() == "not a dir"


def test_export_dir_that_is_a_file_is_refused_before_training(tmp_path, capsys) -> None:
    blocker = tmp_path / "export"
    blocker.write_text("not a dir")
    run_dir = tmp_path / "run"
    assert main(["train", "--run-dir", str(run_dir), "--export-dir", str(blocker)]) == 2
    assert "--export-dir" in one_line_error(capsys.readouterr().err)
    assert not run_dir.exists()


# --------------------------------------------------------------------------- eval

EVAL_KEYS = {
    "neg_elbo",
    "neg_elbo_mean_z",
    "recon",
    "kl",
    "nll_iw",
    "active_units",
    "latent_dim",
    "n_images",
    "k",
    "split",
    "run_dir",
}


def test_eval_writes_consistent_json(tiny_run, tmp_path, capsys) -> None:
    out = tmp_path / "sub" / "out.json"
    args = ["eval", "--run-dir", str(tiny_run), "--k", "10", "--limit", "50", "--threads", "1"]
    assert main([*args, "--json", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "IWAE k=10" in stdout and "active units" in stdout
    got = json.loads(out.read_text())
    assert set(got) == EVAL_KEYS
    assert (got["n_images"], got["k"], got["split"], got["latent_dim"]) == (50, 10, "test", 4)
    assert got["run_dir"] == str(tiny_run)
    for key in ("neg_elbo", "neg_elbo_mean_z", "recon", "kl", "nll_iw"):
        assert math.isfinite(got[key]) and got[key] > 0, key
    assert got["recon"] + got["kl"] == pytest.approx(got["neg_elbo"], rel=1e-9)
    assert 0 <= got["active_units"] <= 4
    # same seed, same numbers
    again = tmp_path / "again.json"
    assert main([*args, "--json", str(again)]) == 0
    assert json.loads(again.read_text()) == got


def test_eval_on_valid_split_and_other_seed(tiny_run, tmp_path, capsys) -> None:
    base = ["eval", "--run-dir", str(tiny_run), "--k", "5", "--limit", "20", "--threads", "1"]
    assert main([*base, "--split", "valid", "--json", str(tmp_path / "v.json")]) == 0
    assert main([*base, "--seed", "7", "--json", str(tmp_path / "s.json")]) == 0
    assert main([*base, "--json", str(tmp_path / "t.json")]) == 0
    v, s, t = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "vst")
    assert v["split"] == "valid" and v["neg_elbo_mean_z"] != t["neg_elbo_mean_z"]
    assert s["neg_elbo_mean_z"] == t["neg_elbo_mean_z"]  # z = mu: no noise involved
    assert s["nll_iw"] != t["nll_iw"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--k", "0"], "--k"),
        (["--limit", "0"], "--limit"),
        (["--split", "bogus"], "--split"),
    ],
)
def test_eval_bad_options_exit_2(tiny_run, capsys, args, needle) -> None:
    assert main(["eval", "--run-dir", str(tiny_run), *args]) == 2
    assert needle in one_line_error(capsys.readouterr().err)


def test_eval_json_path_that_is_a_directory_is_refused(tiny_run, tmp_path, capsys) -> None:
    assert main(["eval", "--run-dir", str(tiny_run), "--json", str(tmp_path)]) == 2
    assert "--json" in one_line_error(capsys.readouterr().err)


def test_eval_of_a_missing_run_dir(tmp_path, capsys) -> None:
    assert main(["eval", "--run-dir", str(tmp_path / "nope")]) == 1
    assert "no such run directory" in one_line_error(capsys.readouterr().err)


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(tiny_run, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def test_eval_of_a_truncated_model_file(run_copy, capsys) -> None:
    path = run_copy / runconfig.MODEL
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert main(["eval", "--run-dir", str(run_copy), "--k", "2"]) == 1
    line = one_line_error(capsys.readouterr().err)
    assert "truncated" in line and "model.safetensors" in line


def _edit_config(run_dir: Path, **model) -> None:
    path = run_dir / runconfig.CONFIG
    cfg = json.loads(path.read_text())
    cfg["model"].update(model)
    path.write_text(json.dumps(cfg))


def test_eval_with_a_config_that_does_not_match_the_weights(run_copy, capsys) -> None:
    _edit_config(run_copy, hidden=[32])
    assert main(["eval", "--run-dir", str(run_copy), "--k", "2"]) == 1
    line = one_line_error(capsys.readouterr().err)
    assert "shape (64, 784)" in line and "(32, 784)" in line


def test_eval_with_missing_weights_for_the_config(run_copy, capsys) -> None:
    _edit_config(run_copy, likelihood="gaussian")  # expects decoder.logvar
    assert main(["eval", "--run-dir", str(run_copy), "--k", "2"]) == 1
    assert "missing decoder.logvar" in one_line_error(capsys.readouterr().err)


def test_eval_with_extra_weights_for_the_config(run_copy, capsys) -> None:
    """A Gaussian run whose config.json says bernoulli: one line, not a load_state_dict trace."""
    tensors, _ = checkpoint.read_safetensors(run_copy / runconfig.MODEL)
    tensors["decoder.logvar"] = torch.zeros(784)
    checkpoint.save_weights(run_copy / runconfig.MODEL, tensors, {})
    assert main(["eval", "--run-dir", str(run_copy), "--k", "2"]) == 1
    line = one_line_error(capsys.readouterr().err)
    assert "decoder.logvar" in line and "config.json" in line


def test_eval_with_a_corrupt_config(run_copy, capsys) -> None:
    (run_copy / runconfig.CONFIG).write_text("{not json")
    assert main(["eval", "--run-dir", str(run_copy)]) == 1
    assert "corrupt run config" in one_line_error(capsys.readouterr().err)


# --------------------------------------------------------------------------- smoke


def command_names() -> list[str]:
    return [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]


def test_the_training_commands_are_registered() -> None:
    assert {"train", "eval"} <= set(command_names())


def test_app_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in command_names():
        assert name in result.output


@pytest.mark.parametrize("name", command_names())
def test_every_command_has_help_with_an_example(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"`edgevae {name} --help` shows no example"
    assert "Usage: edgevae" in result.output or "Usage: " in result.output


def test_version(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"edgevae {edgevae.__version__}"


def test_python_dash_m_edgevae_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edgevae", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "eval" in proc.stdout
