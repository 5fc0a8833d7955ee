"""`--classes` / `classes=` through training: checked up front, kept in config.json, and
reloaded for evaluation, export and quantization (`load_run_data`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgevae
from edgevae.cli import main
from edgevae.config import TrainConfig
from edgevae.data.runs import load_run_data
from edgevae.errors import UsageError

TINY = ["--hidden", "16", "--latent-dim", "2", "--threads", "1", "--no-export", "--epochs", "1"]


@pytest.mark.parametrize("classes", [[], "0", [-1], ["a", "a"], [1.5], [""], [True]])
def test_train_config_checks_classes(classes):
    with pytest.raises(UsageError) as info:
        TrainConfig(classes=classes).validate()
    assert info.value.param == "classes"


def test_train_config_round_trip_keeps_classes():
    cfg = TrainConfig(classes=[3, "Bag"]).validate()
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))).classes == [3, "Bag"]
    assert TrainConfig.from_dict({}).classes is None  # runs from before classes existed


@pytest.mark.parametrize(
    ("value", "exit_code", "words"),
    [
        ("0,,1", 2, "--classes: expected comma-separated"),
        ("0,cat", 2, "--classes: no class 'cat'; the classes are: 0, 1, 2"),
        ("12", 2, "--classes: class position 12 is out of range"),
        ("1,1", 2, "--classes: class '1' is listed twice"),
    ],
)
def test_bad_classes_option_is_one_line_and_creates_nothing(
    tmp_path, monkeypatch, capsys, value, exit_code, words
):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "--classes", value]) == exit_code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert list(tmp_path.iterdir()) == []


def test_classes_on_unlabelled_data_say_which_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "x.npy", np.zeros((20, 4, 4), dtype=np.uint8))
    assert main(["train", *TINY, "--data", "x.npy", "--classes", "0"]) == 1
    err = capsys.readouterr().err
    assert "x.npy: a single .npy array has no labels" in err and "labels are needed" in err


@pytest.mark.slow
def test_api_train_on_some_classes_then_resume_and_reload(tmp_path):
    run = tmp_path / "run"
    result = edgevae.train(
        run_dir=run, epochs=1, hidden=[16], latent_dim=2, classes=[7, "1"], threads=1
    )
    assert result.epochs == 1
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["classes"] == [7, "1"]
    assert config["data"]["classes"] == ["7", "1"]
    counts = config["data"]["labels"]["counts"]
    assert sum(counts["train"]) == config["data"]["sizes"]["train"]
    ds = load_run_data(config["train"], config["model"]["image_shape"])
    assert ds.classes == ("7", "1") and set(np.unique(ds.test_labels)) == {0, 1}
    assert len(ds.test) == sum(counts["test"])
    edgevae.train(run_dir=run, epochs=2, resume=True, threads=1)
    resumed = json.loads((run / "config.json").read_text())
    assert resumed["train"]["classes"] == [7, "1"] and resumed["data"] == config["data"]


def test_an_export_trained_on_a_named_set_needs_no_run_dir(tmp_path):
    from edgevae.api import _run_train_config

    train = {"data": "fashion-mnist", "seed": 2, "classes": ["Bag"]}
    assert _run_train_config(tmp_path, {"train": train}, None, None) == train
    with pytest.raises(UsageError, match="cannot be found from the export alone"):
        _run_train_config(tmp_path, {"train": {"data": "idx:mnist"}}, None, None)
