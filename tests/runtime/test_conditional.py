"""Conditional models (q(z | x, y), p(x | z, y)): training, export, and the torch-free runtime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import edgevae
from edgevae.cli import main
from edgevae.errors import DataError, UsageError
from edgevae.runtime import manifest


@pytest.fixture(scope="module")
def model(tiny_cond_export):
    return edgevae.load(tiny_cond_export, "fp32")


def test_the_run_and_the_export_carry_the_classes(tiny_cond_run, tiny_cond_export):
    cfg = json.loads((tiny_cond_run / "config.json").read_text())
    assert cfg["model"]["classes"] == [str(d) for d in range(10)]
    assert cfg["train"]["conditional"] is True
    man = manifest.read(tiny_cond_export)
    assert man["classes"] == [str(d) for d in range(10)]
    assert len(man["heldout"]["labels"]) == man["heldout"]["count"]
    for role, inputs in (("encoder", ["x", "y"]), ("decoder", ["z", "y"])):
        proto = onnx.load(str(tiny_cond_export / f"{role}.fp32.onnx"))
        assert [i.name for i in proto.graph.input] == inputs
        meta = {p.key: p.value for p in proto.metadata_props}
        assert json.loads(meta["edgevae.classes"]) == man["classes"]
    assert all(d <= 1e-4 for p in man["parity"] for d in p["max_abs_diff"].values())


def test_labels_select_the_class(model):
    z = np.random.default_rng(0).standard_normal((5, 2)).astype(np.float32)
    threes, sevens = model.decode(z, 3), model.decode(z, "7")
    assert threes.shape == (5, 784) and not np.allclose(threes, sevens)
    np.testing.assert_array_equal(model.decode(z, [3] * 5), threes)
    assert model.sample(4, label=7).shape == (4, 28, 28)
    every = model.sample(3, label="all")
    assert every.shape == (30, 28, 28)
    np.testing.assert_allclose(every[21:24], model.sample(3, label=7), atol=1e-6)


def test_reconstruct_interpolate_analogies_and_bounds_use_labels(model):
    x, y = model.heldout()[:6], model.heldout_labels()[:6]
    assert model.reconstruct(x, y).shape == (6, 28, 28)
    line = model.interpolate(x[0], x[1], 4, labels=(y[0], y[1]))
    assert line.shape == (4, 28, 28)
    np.testing.assert_allclose(line[0], model.reconstruct(x[:1], y[:1])[0], atol=1e-6)
    assert model.analogies(x, y).shape == (6, 10, 28, 28)
    bounds = model.evaluate(x, k=4, labels=y)
    assert np.isfinite(bounds.nll_iw) and bounds.n_images == 6


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda m: m.sample(2), "labels: this model is conditional: give a label"),
        (lambda m: m.sample(2, label=10), "label: 10 is not one of the model's classes"),
        (lambda m: m.sample(2, label="seven"), "label: 'seven' is not one of"),
        (lambda m: m.decode(np.zeros((3, 2), np.float32), [1, 2]), "labels: expected 3 labels"),
    ],
)
def test_label_errors_say_what_is_wrong(model, call, needle):
    with pytest.raises(UsageError, match=needle):
        call(model)


def test_an_unconditional_model_refuses_labels(tiny_export):
    with pytest.raises(UsageError, match="label: this model is not conditional"):
        edgevae.load(tiny_export).sample(2, label=3)


def test_conditional_training_needs_labels(tmp_path):
    images = (np.random.default_rng(0).random((60, 784)) * 255).astype(np.uint8)
    np.save(tmp_path / "x.npy", images)
    with pytest.raises(DataError, match="label"):
        edgevae.train(str(tmp_path / "x.npy"), run_dir=tmp_path / "r", epochs=1, conditional=True)
    assert not (tmp_path / "r" / "model.safetensors").exists()


def test_sample_and_analogies_cli(tiny_cond_export, tmp_path, capsys):
    args = ["--export-dir", str(tiny_cond_export), "--precision", "fp32"]
    assert (
        main(["sample", *args, "--label", "7", "--n", "4", "--out", str(tmp_path / "7.png")]) == 0
    )
    assert main(["sample", *args, "--n", "3", "--out", str(tmp_path / "all.png")]) == 0
    assert "3 samples of each of 10 classes" in capsys.readouterr().out
    assert main(["analogies", *args, "--n", "2", "--out", str(tmp_path / "a.png")]) == 0
    assert main(["sample", *args, "--label", "x", "--out", str(tmp_path / "x.png")]) == 2
    assert "--label: 'x' is not one of the model's classes" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
