"""`edgevae train --data mnist` end to end: the first run downloads MNIST from a loopback
mirror of ../shared/data/mnist and trains in one command; later runs use the cache only."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_data
from support.loopback import dead_port_url, loopback

from edgevae.cli import main
from edgevae.data import registry
from edgevae.data.runs import load_run_data

NAMES = [f.name for f in registry.REGISTRY["mnist"].files.values()]


@pytest.mark.slow
@pytest.mark.shared
def test_train_data_mnist_downloads_once_then_runs_offline(tmp_path, monkeypatch, capsys):
    mnist = shared_data("mnist")
    monkeypatch.setenv("EDGEVAE_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "m"
    args = ["train", "--data", "mnist", "--epochs", "1", "--hidden", "32", "--latent-dim", "2"]
    args += ["--batch-size", "500", "--threads", "1", "--no-export", "--run-dir", str(run)]
    with loopback() as server:
        server.serve_folder("/mnist", mnist)
        monkeypatch.setenv("EDGEVAE_DATA_MIRROR", f"{server.url}/mnist/")
        assert main(args) == 0, capsys.readouterr().err
        assert sorted(server.requests) == sorted(f"/mnist/{name}" for name in NAMES)
    assert sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir()) == sorted(NAMES)
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["named"] == "mnist" and config["data"]["kind"] == "idx"
    assert config["data"]["sizes"] == {"train": 54000, "valid": 6000, "test": 10000}
    assert config["data"]["classes"] == [str(d) for d in range(10)]
    assert (run / "model.safetensors").is_file()

    # The server is gone and the mirror points at a dead port: only the cache can serve.
    monkeypatch.setenv("EDGEVAE_DATA_MIRROR", dead_port_url())
    assert main([*args, "--overwrite", "--classes", "3,8"]) == 0, capsys.readouterr().err
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["classes"] == ["3", "8"] and config["data"]["classes"] == ["3", "8"]
    again = load_run_data(config["train"], config["model"]["image_shape"])
    assert again.classes == ("3", "8")
    assert len(again.test) == 1010 + 974  # MNIST's test images of 3s and 8s
    assert np.bincount(again.test_labels).tolist() == [1010, 974]
