"""Anomaly scores, the calibrated threshold and detection, through the library and the CLI."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from edgevae import api
from edgevae.cli import main
from edgevae.errors import ModelFileError, UsageError
from edgevae.runtime import anomaly, manifest, metrics
from edgevae.runtime.score import (
    DEFAULT,
    bernoulli_nats,
    entropy_nats,
    floor_nats,
    png_nats,
    score_images,
)


@pytest.fixture(scope="module")
def model(tiny_export):
    return api.load(tiny_export, "int8")


@pytest.fixture(scope="module")
def x(model):
    return model.heldout().reshape(-1, 784)[:40]


@pytest.fixture
def export_copy(tiny_export, tmp_path):
    dst = tmp_path / "e"
    shutil.copytree(tiny_export, dst)
    return dst


def test_elbo_score_is_recon_at_mu_plus_kl(model, x):
    s = score_images(model, x, "elbo")
    assert s.scores.shape == (40,) and np.isfinite(s.scores).all()
    np.testing.assert_allclose(s.scores, s.parts["recon"] + s.parts["kl"])
    terms = metrics.per_image(x, model.encode, model.decode_logits, "bernoulli", k=1, rng=None)
    np.testing.assert_allclose(s.parts["recon"], terms["recon_mu"], rtol=0, atol=1e-3)
    # the batch size changes nothing, and uint8 input is read as /255
    pixels = np.rint(x * 255).astype(np.uint8)
    np.testing.assert_allclose(score_images(model, pixels, "elbo").scores, s.scores, rtol=1e-6)


def test_iwae_and_complexity_scores(model, x):
    iw = score_images(model, x, "iwae", k=16, seed=3)
    assert iw.k == 16 and np.isfinite(iw.scores).all()
    np.testing.assert_array_equal(iw.scores, score_images(model, x, "iwae", k=16, seed=3).scores)
    # on average the IWAE bound is tighter (lower) than the one-point -ELBO at z = mu
    assert iw.scores.mean() < iw.parts["elbo"].mean() + 5.0
    cx = score_images(model, x, "complexity")
    np.testing.assert_allclose(cx.scores, cx.parts["elbo"] - cx.parts["png_nats"])
    assert (cx.parts["png_nats"] > 0).all()


def test_excess_is_elbo_minus_the_pixel_entropy_and_the_default(model, x):
    assert DEFAULT == "excess"
    ex = score_images(model, x)
    np.testing.assert_array_equal(model.score(x).scores, ex.scores)  # Model.score's default
    np.testing.assert_allclose(ex.parts["elbo"], score_images(model, x, "elbo").scores)
    np.testing.assert_allclose(ex.scores, ex.parts["elbo"] - ex.parts["floor"])
    np.testing.assert_allclose(ex.parts["floor"], entropy_nats(x))
    # per pixel KL(Bernoulli(x) || Bernoulli(p)) >= 0: the score is at least the latent KL
    assert (ex.scores >= ex.parts["kl"] - 1e-3).all()
    # binary images have zero entropy: there excess equals elbo
    binary = (x > 0.5).astype(np.float32)
    b = score_images(model, binary)
    np.testing.assert_allclose(b.scores, b.parts["elbo"], atol=1e-9)


def test_excess_ink_scales_the_excess_by_the_images_ink(model, x):
    s = score_images(model, x, "excess-ink")
    np.testing.assert_allclose(s.parts["excess"], score_images(model, x).scores)
    np.testing.assert_allclose(s.parts["ink"], x.astype(np.float64).sum(1), rtol=1e-6)
    np.testing.assert_allclose(s.scores, s.parts["excess"] / np.sqrt(1 + s.parts["ink"]))


class _PerfectModel:
    """A stand-in for `edgevae.Model` whose decoder gives back each image exactly (logits
    logit(x)) and whose posterior is the prior (KL 0): the best any Bernoulli model can do."""

    likelihood, gauss_logvar, image_shape, input_dim = "bernoulli", None, (2, 2), 4

    def as_input(self, x):
        return np.asarray(x, np.float32).reshape(len(x), -1)

    def encode(self, x):
        self._x = np.clip(x, 1e-6, 1 - 1e-6)
        return np.zeros((len(x), 2), np.float32), np.zeros((len(x), 2), np.float32)

    def decode_logits(self, z):
        return np.log(self._x / (1 - self._x))


def test_excess_is_zero_for_a_perfect_reconstruction_and_elbo_is_not():
    """The reconstruction part of excess is sum_i KL(Bernoulli(x_i) || Bernoulli(p_i)): zero
    when p = x, while elbo still charges the image's own entropy (grey pixels)."""
    x = np.array([[0.5, 0.5, 0.5, 0.5], [0.0, 1.0, 0.2, 0.9], [0.0, 1.0, 1.0, 0.0]], np.float32)
    ex = score_images(_PerfectModel(), x, "excess")
    np.testing.assert_allclose(ex.scores, 0.0, atol=1e-3)
    elbo = score_images(_PerfectModel(), x, "elbo").scores
    np.testing.assert_allclose(elbo, entropy_nats(x), atol=1e-3)
    assert elbo[0] == pytest.approx(4 * np.log(2), abs=1e-3)  # four pixels at 0.5: ln 2 each
    assert elbo[2] == pytest.approx(0.0, abs=1e-3)  # binary: nothing to subtract


def test_excess_is_nonnegative_up_to_float_error_on_any_image(model):
    """KL terms are >= 0, so excess >= 0 for every image, also far from the training data."""
    rng = np.random.default_rng(2)
    for x in (rng.random((16, 784)), np.full((2, 784), 0.5), np.zeros((2, 784))):
        s = score_images(model, x.astype(np.float32), "excess")
        assert (s.scores >= -1e-3).all()
        assert (s.scores >= s.parts["kl"] - 1e-3).all()


def test_excess_ink_formula_by_hand(model):
    x = np.zeros((2, 784), np.float32)
    x[0, :100] = 1.0  # ink 100
    x[1, :50] = 0.5  # ink 25
    s = score_images(model, x, "excess-ink")
    excess = score_images(model, x, "excess").scores
    np.testing.assert_allclose(s.parts["ink"], [100.0, 25.0])
    np.testing.assert_allclose(s.scores, excess / np.sqrt([101.0, 26.0]), rtol=1e-9)


def test_bernoulli_nats_matches_the_float64_formula_at_extreme_logits():
    rng = np.random.default_rng(0)
    logits = np.concatenate([rng.normal(0, 8, (6, 784)), np.full((1, 784), 80.0)]).astype(
        np.float32
    )
    x = rng.random((7, 784)).astype(np.float32)
    x[0] = 0.0
    x[1] = 1.0
    want = -metrics.log_px_given_z(x.astype(np.float64), logits, "bernoulli")
    np.testing.assert_allclose(bernoulli_nats(x, logits), want, rtol=1e-6, atol=1e-3)


def test_entropy_nats_is_the_least_bernoulli_cost_of_the_image():
    x = np.array([[0.0, 1.0, 0.5, 0.25]], np.float32)
    h = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75)) + np.log(2)
    assert entropy_nats(x)[0] == pytest.approx(h, rel=1e-6)
    # no logits cost less than the image's own entropy, and logit(x) reaches it
    rng = np.random.default_rng(1)
    x = rng.uniform(0.05, 0.95, (3, 784)).astype(np.float32)
    best = np.log(x / (1 - x))
    np.testing.assert_allclose(bernoulli_nats(x, best), entropy_nats(x), atol=1e-3)
    assert (bernoulli_nats(x, best + rng.normal(0, 1, x.shape)) > entropy_nats(x)).all()


def test_gaussian_floor_is_a_constant():
    class Gauss:
        likelihood = "gaussian"
        gauss_logvar = np.full(4, -2.0)

    floor = floor_nats(Gauss(), np.zeros((3, 4), np.float32))
    np.testing.assert_allclose(floor, 0.5 * 4 * (np.log(2 * np.pi) - 2.0))


def test_png_length_orders_simple_below_noisy_images():
    blank = np.zeros((1, 28, 28), np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (1, 28, 28), dtype=np.uint8)
    assert png_nats(blank)[0] < png_nats(noise)[0]


@pytest.mark.parametrize(
    ("kind", "k", "needle"),
    [
        ("bogus", 4, "score: must be one of excess, excess-ink, elbo, iwae, complexity"),
        ("iwae", 0, "k: must be >= 1"),
    ],
)
def test_score_arguments_are_checked(model, x, kind, k, needle):
    with pytest.raises(UsageError, match=needle):
        score_images(model, x, kind, k=k)


def test_quantile_threshold_keeps_the_measured_fpr_at_or_below_the_target():
    scores = np.arange(1000, dtype=np.float64)
    for fpr in (0.001, 0.01, 0.05, 0.5):
        value, measured = anomaly.quantile_threshold(scores, fpr)
        assert measured <= fpr and measured == (scores > value).mean()
    with pytest.raises(UsageError, match="fpr: must be in"):
        anomaly.quantile_threshold(scores, 0.0)


def test_threshold_is_stored_and_detect_uses_it(export_copy, tiny_run):
    found = api.threshold(export_copy, fpr=0.05, run_dir=tiny_run)
    man = manifest.read(export_copy)
    assert man["threshold"]["value"] == found.value and man["threshold"]["score"] == DEFAULT
    assert man["threshold"]["firmware"] == found.firmware is not None  # the board's own
    assert found.fpr_measured <= 0.05 and len(found.data["sha256"]) == 64
    model = api.load(export_copy)
    normal = model.heldout()
    flagged = model.detect(normal).flagged
    assert 0 <= flagged.mean() < 0.3
    assert model.detect(1.0 - normal).flagged.mean() > 0.9  # inverted digits are anomalies
    with pytest.raises(UsageError, match="calibrated for the int8 models, not fp32"):
        api.load(export_copy, "fp32").detect(normal)


def test_detect_without_a_threshold_and_a_malformed_one(export_copy):
    model = api.load(export_copy)
    with pytest.raises(ModelFileError, match="no anomaly threshold"):
        model.detect(model.heldout())
    man = manifest.read(export_copy)
    man["threshold"] = {"score": "elbo", "value": "x"}
    manifest.write(export_copy, man)
    with pytest.raises(ModelFileError, match="malformed threshold"):
        api.load(export_copy).detect(model.heldout())


def test_score_threshold_detect_cli(export_copy, tiny_run, tmp_path, capsys):
    scores_csv = tmp_path / "s.csv"
    args = ["--export-dir", str(export_copy)]
    assert main(["score", *args, "--out", str(scores_csv), "--json", str(tmp_path / "s.json")]) == 0
    rows = list(csv.DictReader(scores_csv.open()))
    assert len(rows) == 500 and list(rows[0])[:2] == ["index", "score_nats"]
    assert json.loads((tmp_path / "s.json").read_text())["n_images"] == 500
    assert main(["detect", *args, "--out", str(tmp_path / "f.png")]) == 1
    assert "no anomaly threshold" in capsys.readouterr().err
    assert main(["threshold", *args, "--run-dir", str(tiny_run), "--fpr", "0.02"]) == 0
    out = tmp_path / "f.png"
    assert main(["detect", *args, "--out", str(out), "--json", str(tmp_path / "f.json")]) == 0
    report = json.loads((tmp_path / "f.json").read_text())
    assert report["n_images"] == 500 and report["n_flagged"] == len(report["flagged"])
    assert out.exists() == (report["n_flagged"] > 0)


@pytest.mark.parametrize("kind", ["excess", "excess-ink"])
def test_score_cli_writes_the_excess_kinds_and_their_parts(tiny_export, tmp_path, kind):
    out, summary = tmp_path / "s.csv", tmp_path / "s.json"
    args = ["score", "--export-dir", str(tiny_export), "--score", kind, "--out", str(out)]
    assert main([*args, "--json", str(summary)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 500 and {"recon", "kl", "floor"} <= set(rows[0])
    score = np.array([float(r["score_nats"]) for r in rows])
    excess = np.array([float(r["recon"]) + float(r["kl"]) - float(r["floor"]) for r in rows])
    if kind == "excess":
        np.testing.assert_allclose(score, excess, atol=1e-5)
    else:
        ink = np.array([float(r["ink"]) for r in rows])
        np.testing.assert_allclose(score, excess / np.sqrt(1 + ink), atol=1e-5)
    # the same numbers as the library
    model = api.load(tiny_export, "int8")
    want = score_images(model, model.heldout(), kind).scores
    np.testing.assert_allclose(score, want, atol=1e-5)
    assert json.loads(summary.read_text())["score"] == kind


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["score", "--score", "bogus"], "'--score': 'bogus' is not one of"),
        (["score", "--out", "x.txt"], "--out: x.txt should end in .csv"),
        (["threshold", "--fpr", "1.5"], "--fpr: must be in (0, 1), got 1.5"),
        (["anomaly-bench", "--anomalous", "bogus-spec"], "bogus-spec"),
    ],
)
def test_cli_errors_are_one_line(export_copy, tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    before = (export_copy / "manifest.json").read_bytes()
    code = main([*args, "--export-dir", str(export_copy)])
    err = capsys.readouterr().err
    assert code != 0 and needle in err and err.strip().count("\n") == 0
    assert (export_copy / "manifest.json").read_bytes() == before


@pytest.mark.parametrize("kind", ["excess", "elbo"])
def test_threshold_stores_the_firmware_score_threshold_too(export_copy, tiny_run, kind):
    """The static int8 pair's own score of the kind (what `edgevae_score` computes in C) gets
    a threshold of its own, at the same false-positive rate on the same images."""
    from edgevae.firmware.score import score_images as firmware_scores

    normal = api.load(export_copy).heldout()  # uint8-exact images
    pixels = np.rint(normal * 255).astype(np.uint8)
    found = api.threshold(export_copy, fpr=0.05, score=kind, images=normal)
    board = firmware_scores(export_copy, pixels, kind).astype(np.float64)
    assert found.firmware == anomaly.quantile_threshold(board, 0.05)[0]
    assert manifest.read(export_copy)["threshold"]["firmware"] == found.firmware
    host = score_images(api.load(export_copy), normal, kind).scores
    assert abs(found.firmware - found.value) < 0.25 * np.std(host)  # the int8 pairs agree
    iwae = api.threshold(export_copy, fpr=0.05, run_dir=tiny_run, score="iwae", k=4)
    assert iwae.firmware is None  # a board computes excess or elbo only
    grey = api.threshold(export_copy, fpr=0.05, score=kind, images=normal * 0.999)
    assert grey.firmware is None  # not whole 8-bit levels: the board reads uint8


def test_threshold_then_firmware_gives_the_board_the_default_score(
    export_copy, tiny_run, tmp_path, capsys
):
    """The defaults end to end: `edgevae threshold` stores an excess threshold for the board
    too, and `edgevae firmware --score` generates the excess kernel with that threshold."""
    args = ["threshold", "--export-dir", str(export_copy), "--run-dir", str(tiny_run)]
    assert main([*args, "--fpr", "0.05"]) == 0
    out = capsys.readouterr().out
    stored = manifest.read(export_copy)["threshold"]
    assert stored["score"] == DEFAULT == "excess" and stored["firmware"] is not None
    assert f"firmware threshold {stored['firmware']:.3f} nats (excess, " in out
    assert "no firmware threshold" not in out
    fw = tmp_path / "fw"
    report = tmp_path / "r.json"
    firmware = ["firmware", "--export-dir", str(export_copy), "--out", str(fw), "--score"]
    assert main([*firmware, "--weights-only", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert (
        "score: excess (EDGEVAE_SCORE_KIND_EXCESS 1; the kind of the manifest's threshold)" in out
    )
    assert f"EDGEVAE_THRESHOLD_NATS = {stored['firmware']!r} (the manifest's, score excess)" in out
    header = (fw / "edgevae_weights.h").read_text()
    assert "#define EDGEVAE_SCORE_KIND_EXCESS 1 " in header
    assert "#define EDGEVAE_THRESHOLD_NATS " in header
    assert json.loads(report.read_text())["score"]["threshold_nats"] == stored["firmware"]

    assert main([*args, "--fpr", "0.05", "--score", "iwae", "--k", "2"]) == 0
    out = capsys.readouterr().out
    assert "no firmware threshold: a board computes excess or elbo, not iwae" in out
    assert manifest.read(export_copy)["threshold"]["firmware"] is None
    assert main([*firmware, "--weights-only"]) == 0
    assert "score: excess (EDGEVAE_SCORE_KIND_EXCESS 1; the default: " in capsys.readouterr().out
    assert "EDGEVAE_THRESHOLD_NATS " not in (fw / "edgevae_weights.h").read_text()
