"""int8 for conditional models (encoder q(z | x, y), decoder p(x | z, y)): calibration feeds
the labels beside the images and latents, the search scores -log p(x | y), and every file the
export gets takes `y`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from support.conditional import RECIPE, quantized_copy

import edgevae
from edgevae.data.runs import load_run_data
from edgevae.errors import UsageError
from edgevae.quant import explain, measure, paired
from edgevae.quant import search as q
from edgevae.quant.apply import calibration_sets
from edgevae.quant.recipes import cpu_info
from edgevae.runtime import manifest
from edgevae.runtime.labels import match_one_hot


@pytest.fixture(scope="module")
def cond_int8(tiny_cond_export, tiny_cond_run, tmp_path_factory):
    return quantized_copy(tiny_cond_export, tiny_cond_run, tmp_path_factory.mktemp("q") / "e")


@pytest.fixture(scope="module")
def data(tiny_cond_export):
    """(train, train one-hot, valid, valid one-hot) of the conditional run."""
    man = manifest.read(tiny_cond_export)
    ds = load_run_data(man["train"], man["image_shape"])
    hot = {s: match_one_hot(man["classes"], ds.classes, ds.labels(s)) for s in ("train", "valid")}
    return ds.train, hot["train"], ds.valid, hot["valid"]


def _inputs(path):
    return [i.name for i in onnx.load(str(path)).graph.input]


def test_every_quantized_file_takes_the_label(cond_int8):
    for role, first in (("encoder", "x"), ("decoder", "z")):
        for name in (f"{role}.int8.onnx", f"{role}.int8.static.onnx"):
            assert _inputs(cond_int8 / name) == [first, "y"], name
    man = manifest.read(cond_int8)
    assert man["quantization"]["chosen"] == RECIPE
    cal = man["quantization"]["calibration"]
    assert cal["conditional"] is True and "label" in cal["decoder_z_from"]
    assert cal["encoder_images"] == 300 and cal["decoder_z"] == 600
    for key in ("nll_delta_nats",):
        assert np.isfinite(man["int8_vs_fp32"][key])
    assert np.isfinite(man["quantization"]["firmware_pair_nll_delta"])


def test_the_int8_model_draws_the_asked_class(cond_int8):
    fp32, int8 = edgevae.load(cond_int8, "fp32"), edgevae.load(cond_int8, "int8")
    a, b = fp32.sample(6, seed=1, label=3), int8.sample(6, seed=1, label=3)
    assert b.shape == (6, 28, 28) and np.abs(a - b).max() < 0.5
    assert not np.allclose(b, int8.sample(6, seed=1, label=8))
    x, y = int8.heldout()[:20], int8.heldout_labels()[:20]
    d = int8.evaluate(x, k=8, labels=y).nll_iw - fp32.evaluate(x, k=8, labels=y).nll_iw
    assert abs(d) < 5.0


def test_calibration_feeds_each_image_with_its_label(tiny_cond_export, data):
    train, train_y, _, _ = data
    enc, dec = calibration_sets(tiny_cond_export, train, 40, seed=2, labels=train_y)
    assert enc.keys() == {"x", "y"} and dec.keys() == {"z", "y"}
    assert enc["x"].shape == (40, 784) and enc["y"].shape == (40, 10)
    idx = np.random.default_rng(2).permutation(len(train))[:40]
    assert np.array_equal(enc["y"], train_y[idx]) and np.array_equal(enc["x"], train[idx])
    # The decoder's z: posterior means, then prior draws, each with its image's label.
    assert dec["z"].shape == (80, 2)
    assert np.array_equal(dec["y"], np.concatenate([train_y[idx], train_y[idx]]))
    mu = edgevae.load(tiny_cond_export, "fp32").encode(enc["x"], enc["y"])[0]
    np.testing.assert_allclose(dec["z"][:40], mu, atol=1e-6)


def test_paired_nll_is_conditional(tiny_cond_export, data):
    _, _, valid, valid_y = data
    man = manifest.read(tiny_cond_export)
    ctx = measure.Context.open(tiny_cond_export, man, valid[:32], cpu_info(), valid_y[:32])
    assert ctx.conditional and ctx.n_classes == 10
    ctx.paired = paired.PairedNLL(
        valid[:32], *ctx.fp32.values(), "bernoulli", None, k=8, chunk=16, y=valid_y[:32]
    )
    d, _ = ctx.paired.delta(*ctx.fp32.values(), 32)
    assert d.mean == 0.0 and d.n == 32
    # Wrong labels cost nats: the NLL is -log p(x | y) with the images' own labels.
    wrong = paired.PairedNLL(
        valid[:32], *ctx.fp32.values(), "bernoulli", None, k=8, chunk=16,
        y=np.roll(valid_y[:32], 1, axis=1),
    )  # fmt: skip
    assert wrong.base(32).mean() > ctx.paired.base(32).mean() + 1.0
    with pytest.raises(ValueError, match="labels for"):
        paired.PairedNLL(valid[:4], *ctx.fp32.values(), "bernoulli", None, y=valid_y[:3])
    # Timing feeds carry one-hot labels, cycling through the classes.
    feeds = measure._feeds(ctx, 784)
    y = feeds[("decoder", 256)]["y"]
    assert y.shape == (256, 10) and np.array_equal(y.argmax(1), np.arange(256) % 10)
    assert feeds[("encoder", 1)].keys() == {"x", "y"}


def test_labels_must_match_the_model(tiny_cond_export, tiny_export, data, tmp_path):
    train, train_y, valid, valid_y = data
    exp = tmp_path / "c"
    shutil.copytree(tiny_cond_export, exp)
    with pytest.raises(UsageError, match="train_labels: the model is conditional"):
        q.quantize_export(exp, train, valid, recipe="dynamic-pt")
    with pytest.raises(UsageError, match=r"heldout_labels: must be one-hot rows \[5, 10\]"):
        q.quantize_export(
            exp, train, valid[:5], train_labels=train_y, heldout_labels=valid_y[:4],
            recipe="dynamic-pt",
        )  # fmt: skip
    plain = tmp_path / "u"
    shutil.copytree(tiny_export, plain)
    with pytest.raises(UsageError, match="train_labels: the model is not conditional"):
        q.quantize_export(plain, train, valid, train_labels=train_y, recipe="dynamic-pt")
    assert sorted(p.name for p in exp.iterdir()) == sorted(
        p.name for p in tiny_cond_export.iterdir()
    )


def test_explain_and_mixed_precision_on_a_conditional_model(
    tiny_cond_export, data, tmp_path, monkeypatch
):
    """The search's last resort on a conditional pair: each node's cost alone, then the
    costliest kept in float (deltas moved >= 0.01 nats so a 1e-9 budget is out of reach)."""
    monkeypatch.setattr(q, "EVAL_IMAGES", 64)
    monkeypatch.setattr(q, "REPORT_IMAGES", 64)
    monkeypatch.setattr(explain, "EXPLAIN_IMAGES", 32)
    monkeypatch.setattr(paired, "EVAL_K", 8)
    monkeypatch.setattr(paired, "CHUNK", 32)
    monkeypatch.setattr(measure, "STAGE_ROUNDS", (1, 1))
    real = measure.score_accuracy

    def shifted(ctx, cand, sessions, budget, done=None):
        out = real(ctx, cand, sessions, budget, done)
        cand.nll_delta = abs(cand.nll_delta) + 0.01
        cand.within_budget = cand.nll_delta <= budget
        return out

    monkeypatch.setattr(measure, "score_accuracy", shifted)
    train, train_y, valid, valid_y = data
    exp = tmp_path / "c"
    shutil.copytree(tiny_cond_export, exp)
    report = q.quantize_export(
        exp, train, valid, train_labels=train_y, heldout_labels=valid_y, recipe="dynamic-pt",
        budget_nats=1e-9, calib=64, force=True, explain=True,
    )  # fmt: skip
    assert report.forced and report.mixed and report.mixed["tried"]
    assert all(np.isfinite(t["nll_delta"]) for t in report.mixed["tried"])
    assert {i.role for i in report.explain} == {"encoder", "decoder"}
    assert all(np.isfinite(i.nll_delta) and i.images == 32 for i in report.explain)
    man = json.loads((exp / "manifest.json").read_text())
    assert man["quantization"]["explain"] and man["classes"] == [str(d) for d in range(10)]
    assert _inputs(exp / "decoder.int8.onnx") == ["z", "y"]
