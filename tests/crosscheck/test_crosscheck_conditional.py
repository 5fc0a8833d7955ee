"""The cross-CPU check on a conditional export: one-hot `y` inputs beside `x` and `z`, every
model fed (encoder [x, y], decoder [z, y]), and a run compared with itself bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from support.conditional import quantized_copy

from edgevae.crosscheck.compare import compare
from edgevae.crosscheck.inputs import make_inputs
from edgevae.crosscheck.models import model_dims
from edgevae.crosscheck.results import load_results
from edgevae.crosscheck.run import model_feeds, run, run_and_save
from edgevae.errors import UsageError


@pytest.fixture(scope="module")
def cond_int8(tiny_cond_export, tiny_cond_run, tmp_path_factory):
    return quantized_copy(tiny_cond_export, tiny_cond_run, tmp_path_factory.mktemp("q") / "e")


def test_labels_are_one_hot_rows_beside_x_and_z():
    plain, cond = make_inputs(0), make_inputs(0, n_classes=10)
    assert plain.keys() == {"x", "z"}
    assert cond.keys() == {"x", "z", "y_x", "y_z"}
    for k in plain:  # labels add inputs; they change none of the others
        assert cond[k].tobytes() == plain[k].tobytes()
    for name in ("x", "z"):
        y = cond[f"y_{name}"]
        assert y.dtype == np.float32 and y.shape == (len(cond[name]), 10)
        assert np.array_equal(y.argmax(1), np.arange(len(y)) % 10) and (y.sum(1) == 1).all()
    with pytest.raises(UsageError) as info:
        make_inputs(0, n_classes=-1)
    assert info.value.param == "n_classes"


def test_model_feeds_pick_each_models_inputs():
    inputs = make_inputs(0, latent_dim=3, n_classes=4)
    assert model_feeds(["x"], inputs).keys() == {"x"}
    enc = model_feeds(["x", "y"], inputs)
    assert enc.keys() == {"x", "y"} and np.array_equal(enc["y"], inputs["y_x"])
    assert np.array_equal(model_feeds(["z", "y"], inputs)["y"], inputs["y_z"])
    plain = make_inputs(0, latent_dim=3)
    assert model_feeds(["z", "y"], plain) is None  # no labels to feed
    assert model_feeds(["w"], plain) is None and model_feeds(["x", "z"], plain) is None


def test_a_conditional_export_runs_every_model_the_same_twice(cond_int8, tmp_path):
    dims = model_dims(cond_int8)
    assert dims["n_classes"] == 10 and dims["latent_dim"] == 2
    a = run_and_save(cond_int8, tmp_path / "a.npz", sample=False)
    b = run(cond_int8)
    stems = {k.split("/")[0] for k in a.outputs}
    assert stems == {
        f"{role}.{kind}"
        for role in ("encoder", "decoder")
        for kind in ("fp32", "int8", "int8.static")
    } | {"decoder.int4.static"}
    assert a.outputs["decoder.int8.static/x_mean"].shape == (len(a.inputs["z"]), 784)
    assert a.outputs["decoder.int4.static/x_mean"].shape == (len(a.inputs["z"]), 784)
    assert a.outputs["encoder.int8/mu@b1"].shape == (4, 2)
    report = compare(load_results(tmp_path / "a.npz"), b)
    assert report.passed, [c for c in report.checks if not c.passed]
    assert {c.name for c in report.checks} >= {"input y_x", "input y_z"}


def test_the_sample_png_draws_every_class(cond_int8, tmp_path):
    res = run(cond_int8, sample_png=tmp_path / "s.png")
    assert res.meta["sample"]["status"] == "ok", res.meta["sample"]
    assert res.png is not None and (tmp_path / "s.png").is_file()
