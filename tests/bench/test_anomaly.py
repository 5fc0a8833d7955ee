"""AUROC, AUPRC and FPR at 95 % TPR against brute-force definitions; the anomaly bench."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgevae.bench.anomaly import TRANSFORMS, auprc, auroc, fpr_at_tpr, transform
from edgevae.cli import main


def _auroc_pairs(normal, anomalous):
    wins = (anomalous[:, None] > normal[None, :]).mean()
    ties = (anomalous[:, None] == normal[None, :]).mean()
    return wins + 0.5 * ties


@pytest.mark.parametrize("seed", range(5))
def test_auroc_equals_the_pairwise_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    normal = rng.integers(0, 20, 50).astype(float)
    anomalous = rng.integers(5, 25, 30).astype(float)
    assert auroc(normal, anomalous) == pytest.approx(_auroc_pairs(normal, anomalous))


def test_perfect_and_inverted_separation():
    normal, anomalous = np.arange(10.0), np.arange(10.0, 20.0)
    assert auroc(normal, anomalous) == 1.0 and auroc(anomalous, normal) == 0.0
    assert auprc(normal, anomalous) == 1.0
    assert fpr_at_tpr(normal, anomalous) == 0.0 and fpr_at_tpr(anomalous, normal) == 1.0


def test_auprc_of_an_uninformative_score_is_the_positive_rate():
    rng = np.random.default_rng(1)
    scores = rng.random(20000)
    assert auprc(scores[:15000], scores[15000:]) == pytest.approx(0.25, abs=0.02)


def test_transforms_stay_in_range():
    x = np.random.default_rng(0).random((4, 784)).astype(np.float32)
    for name in TRANSFORMS:
        y = transform(x, name, (28, 28))
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    twice = transform(transform(x, "invert", (28, 28)), "invert", (28, 28))
    np.testing.assert_allclose(twice, x, atol=1e-6)


def test_anomaly_bench_cli_writes_every_row(tiny_export, tmp_path, capsys):
    out = tmp_path / "a.json"
    code = main(
        ["anomaly-bench", "--export-dir", str(tiny_export), "--limit", "60", "--k", "4",
         "--json", str(out)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert len(report["rows"]) == 3 * 5 * 2  # transforms x scores x precisions
    inverted = [r for r in report["rows"] if r["anomalies"] == "invert" and r["score"] == "elbo"]
    assert all(r["auroc"] > 0.9 for r in inverted)
    assert set(report["latency_us"]) == {"fp32", "int8"}


def test_anomaly_bench_cli_scores_only_the_kinds_asked_for(tiny_export, tmp_path, capsys):
    out = tmp_path / "a.json"
    code = main(
        ["anomaly-bench", "--export-dir", str(tiny_export), "--limit", "40", "--scores",
         "excess-ink, elbo", "--anomalous", "invert", "--json", str(out)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    got = {(r["anomalies"], r["score"], r["precision"]) for r in report["rows"]}
    want = {("invert", s, p) for s in ("excess-ink", "elbo") for p in ("fp32", "int8")}
    assert got == want and len(report["rows"]) == 4
    assert report["latency_score"] == "excess-ink"  # the default (excess) was not asked for


def test_anomaly_bench_cli_refuses_an_unknown_score(tiny_export, tmp_path, capsys):
    code = main(
        ["anomaly-bench", "--export-dir", str(tiny_export), "--limit", "20", "--scores",
         "excess,bogus", "--json", str(tmp_path / "a.json")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "bogus" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "a.json").exists()


def test_anomaly_bench_compares_the_firmware_precisions(tiny_export, tmp_path, capsys):
    """--precisions picks the pairs side by side: the board's int8 and 4-bit pairs too."""
    out = tmp_path / "a.json"
    code = main(
        ["anomaly-bench", "--export-dir", str(tiny_export), "--limit", "40", "--scores",
         "excess", "--anomalous", "invert", "--precisions", "int8,firmware,int4",
         "--json", str(out)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert [r["precision"] for r in report["rows"]] == ["int8", "firmware", "int4"]
    assert all(r["auroc"] > 0.9 for r in report["rows"])
    assert set(report["latency_us"]) == {"int8", "firmware", "int4"}
    code = main(["anomaly-bench", "--export-dir", str(tiny_export), "--precisions", "int2"])
    err = capsys.readouterr().err
    assert code == 2 and "--precisions: unknown precision 'int2'" in err, err
