"""Recipe search under the accuracy budget, its all-or-nothing writes, and the CLI checks.

quantize_export is the expensive part, so it runs three times in all, with two cheap dynamic
recipes, 64 calibration images, 64 held-out images scored with k=16 importance samples, and
one timing round. Speed is measured
but never asserted: where the choice depends on speed, the measured speedups are replaced by
fixed ones so the test is deterministic.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgevae import fsio
from edgevae.cli import main
from edgevae.errors import EdgeVAEError, UsageError
from edgevae.quant import search as q
from edgevae.quant.recipes import RECIPES, CpuInfo, auto_candidates, cpu_info
from edgevae.runtime import manifest

CHEAP = ["dynamic-pt", "dynamic-pc"]


def _snapshot(d: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file and '<dir>' for every folder, hidden ones too."""
    out = {}
    for p in sorted(d.rglob("*")):
        rel = str(p.relative_to(d))
        out[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def images(tiny_export):
    from edgevae.data.runs import load_run_data

    man = manifest.read(tiny_export)
    ds = load_run_data(man["train"], man["image_shape"])
    return ds.train, ds.valid


@pytest.fixture
def fast(monkeypatch):
    """Cheap candidates, few images, one timing round; collects every measured Candidate."""
    measured: list[q.Candidate] = []
    real_measure = q.measure
    real_nll = q.nll

    def nll(*args, **kwargs):
        kwargs["k"] = 16  # the default k=64 is bound at definition time
        return real_nll(*args, **kwargs)

    def measure(*args, **kwargs):
        kwargs["rounds"] = 1
        cand = real_measure(*args, **kwargs)
        measured.append(cand)
        return cand

    monkeypatch.setattr(q, "EVAL_IMAGES", 64)
    monkeypatch.setattr(q, "nll", nll)
    monkeypatch.setattr(q, "measure", measure)
    monkeypatch.setattr(q, "auto_candidates", lambda cpu: list(CHEAP))
    return measured


@pytest.fixture
def positive_deltas(fast, monkeypatch):
    """Measured NLL deltas moved to >= 0.01 nats, so a 1e-9 budget is out of reach on every
    CPU (a dynamic recipe can measure +0.000 or below: int8 noise on a tiny model)."""
    measure = q.measure

    def shifted(*args, **kwargs):
        cand = measure(*args, **kwargs)
        cand.nll_delta = abs(cand.nll_delta) + 0.01
        cand.within_budget = cand.nll_delta <= args[7]  # measure's `budget` argument
        return cand

    monkeypatch.setattr(q, "measure", shifted)
    return fast


@pytest.fixture
def export_copy(tiny_export, tmp_path):
    dst = tmp_path / "e"
    shutil.copytree(tiny_export, dst)
    return dst


def test_tiny_budget_refuses_and_leaves_export_untouched(export_copy, images, positive_deltas):
    fast = positive_deltas
    before = _snapshot(export_copy)
    with pytest.raises(EdgeVAEError) as info:
        q.quantize_export(export_copy, *images, recipe="auto", budget_nats=1e-9, calib=64)
    assert not isinstance(info.value, UsageError)
    assert [c.recipe for c in fast] == CHEAP
    assert all(c.nll_delta > 1e-9 for c in fast)
    closest = min(fast, key=lambda c: c.nll_delta)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"closest is {closest.recipe} at +{closest.nll_delta:.3f} nats" in msg
    assert isinstance(info.value, q.BudgetError) and "1e-09" in msg
    assert "--" not in msg  # the library names no CLI flag; the CLI adds the hint
    # Nothing written, nothing left behind (the .quantize-* work dir is gone too).
    assert _snapshot(export_copy) == before


def test_force_keeps_the_closest_recipe(export_copy, images, positive_deltas):
    report = q.quantize_export(
        export_copy, *images, recipe="auto", budget_nats=1e-9, calib=64, force=True
    )
    assert report.forced is True
    assert [c.recipe for c in report.candidates] == CHEAP
    assert not any(c.within_budget for c in report.candidates)
    closest = min(report.candidates, key=lambda c: c.nll_delta)
    assert report.chosen == closest.recipe
    assert report.calibration["encoder_images"] == 64
    assert report.calibration["decoder_z"] == 128
    assert report.calibration["heldout_images"] == 64

    man = json.loads((export_copy / "manifest.json").read_text())
    assert man["quantization"]["forced"] is True
    assert man["quantization"]["chosen"] == closest.recipe
    assert man["recipe"]["name"] == closest.recipe
    assert man["int8_vs_fp32"]["nll_delta_nats"] == closest.nll_delta
    # dynamic recipes are not bit-exact across CPUs, and the manifest says so.
    assert not RECIPES[closest.recipe].exact_across_cpus
    assert isinstance(man["cpu_specific"], str)
    assert "decoder.int8.static.onnx" in man["cpu_specific"]
    assert man["parity"], "the export's parity record survives quantization"
    for name, rec in man["files"].items():
        assert rec["sha256"] == fsio.sha256_file(export_copy / name), name
    for name in ("encoder.int8.onnx", "decoder.int8.onnx"):
        meta = {p.key: p.value for p in onnx.load(str(export_copy / name)).metadata_props}
        assert meta["edgevae.recipe"] == closest.recipe
        assert meta["edgevae.precision"] == "int8"
    assert not [p for p in export_copy.iterdir() if p.name.startswith(".")]


def test_huge_budget_picks_the_best_score_via_cli(export_copy, fast, monkeypatch, capsys):
    """Both recipes fit; the one with the higher (here: pinned) speedup score wins."""
    pinned = {"dynamic-pt": 1.5, "dynamic-pc": 3.0}  # the second-listed one is faster
    measure = q.measure

    def pinned_measure(recipe, *args, **kwargs):
        cand = measure(recipe, *args, **kwargs)
        cand.speedup = {k: pinned[recipe] for k in cand.speedup}
        return cand

    monkeypatch.setattr(q, "measure", pinned_measure)
    before = json.loads((export_copy / "manifest.json").read_text())
    code = main(
        [
            "quantize",
            "--export-dir",
            str(export_copy),
            "--budget-nats",
            "1e9",
            "--calib",
            "64",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "chosen: dynamic-pc" in out.out
    man = json.loads((export_copy / "manifest.json").read_text())
    qr = man["quantization"]
    assert qr["chosen"] == "dynamic-pc" and qr["forced"] is False
    assert qr["budget_nats"] == 1e9
    scores = {c["recipe"]: c["score"] for c in qr["candidates"]}
    assert scores == pytest.approx(pinned)
    assert all(c["within_budget"] for c in qr["candidates"])
    # The firmware decoder is rebuilt and recorded; the old manifest's parity is kept.
    assert man["firmware_decoder"] == "decoder.int8.static.onnx"
    assert math.isfinite(qr["firmware_nll_delta"])
    assert man["parity"] == before["parity"]
    assert (
        man["files"]["decoder.int8.onnx"]["sha256"]
        != before["files"]["decoder.int8.onnx"]["sha256"]
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--budget-nats", "0"], "--budget-nats: must be > 0"),
        (["--budget-nats", "-1"], "--budget-nats: must be > 0"),
        (["--recipe", "bogus"], "'--recipe': 'bogus' is not one of 'auto', "),
        (["--also", "bogus"], "--also: unknown recipe 'bogus'"),
        (["--also", "int4,bogus"], "--also: unknown recipe 'bogus'"),
        (["--calib", "0"], "'--calib': 0 is not in the range 1<=x<=1000000"),
    ],
)
def test_quantize_cli_usage_errors(tiny_export, tmp_path, capsys, args, needle):
    exp = tmp_path / "e"
    shutil.copytree(tiny_export, exp)
    before = _snapshot(exp)
    code = main(["quantize", "--export-dir", str(exp), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert _snapshot(exp) == before


def test_quantize_export_validates_before_work(tmp_path, images):
    with pytest.raises(UsageError, match="budget_nats: must be > 0"):
        q.quantize_export(tmp_path, *images, budget_nats=float("nan"))
    with pytest.raises(UsageError, match="recipe: must be auto or one of"):
        q.quantize_export(tmp_path, *images, recipe="int2")
    (tmp_path / "manifest.json").write_text('{"latent_dim": 4, "image_shape": [28, 28]}')
    with pytest.raises(EdgeVAEError, match=r"encoder\.fp32\.onnx missing"):
        q.quantize_export(tmp_path, *images, recipe="dynamic-pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_calibration_sets_shapes(tiny_export, images):
    x, z = q.calibration_sets(tiny_export, images[0], 50, seed=3)
    assert x.shape == (50, 784) and x.dtype == np.float32
    assert z.shape == (100, 4) and np.isfinite(z).all()
    x2, z2 = q.calibration_sets(tiny_export, images[0], 50, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(z, z2)
    with pytest.raises(UsageError, match="calib: must be >= 1"):
        q.calibration_sets(tiny_export, images[0], 0, seed=3)


# --------------------------------------------------------------------------- recipes / CPU


def test_candidate_score_is_geometric_mean_of_speedups():
    c = q.Candidate("x", speedup={"a": 2.0, "b": 8.0, "c": 0.0})
    assert c.score == pytest.approx(4.0)
    assert q.Candidate("y").score == 0.0


def test_recipe_properties():
    assert RECIPES["firmware"].is_static_integer
    assert not RECIPES["static-pc-rr"].is_static_integer
    assert RECIPES["static-pc-rr"].exact_across_cpus
    assert not RECIPES["static-pc"].exact_across_cpus
    assert RECIPES["static-u8u8-pt"].exact_across_cpus
    assert not RECIPES["static-s8-pc"].exact_across_cpus  # s8 is shifted to u8 on x86
    assert not RECIPES["fp16"].exact_across_cpus
    assert RECIPES["dynamic-pt"].to_dict()["exact_across_cpus"] is False


@pytest.mark.parametrize(
    ("arch", "flags", "kind"),
    [
        ("x86_64", "fpu sse avx avx2 fma", "x86-avx2"),
        ("x86_64", "avx2 avx512f avx512_vnni", "x86-vnni"),
        ("x86_64", "sse sse2", "x86"),
        ("aarch64", "fp asimd asimddp", "arm-dotprod"),
        ("aarch64", "fp asimd", "arm"),
    ],
)
def test_cpu_kind_and_candidates(tmp_path, monkeypatch, arch, flags, kind):
    import platform

    key = "flags" if arch == "x86_64" else "Features"
    (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nmodel name\t: Test CPU\n{key}\t: {flags}\n")
    monkeypatch.setattr(platform, "machine", lambda: arch)
    monkeypatch.setattr(platform, "processor", lambda: "")
    cpu = cpu_info(tmp_path / "cpuinfo")
    assert cpu.kind == kind
    assert cpu.model == "Test CPU"
    names = auto_candidates(cpu)
    assert names and all(n in RECIPES for n in names)
    assert "firmware" not in names
    assert cpu.to_dict()["kind"] == kind


def test_cpu_info_without_proc(tmp_path):
    cpu = cpu_info(tmp_path / "missing")
    assert isinstance(cpu, CpuInfo) and cpu.flags == frozenset()
    assert auto_candidates(cpu)


def test_quant_table_shows_failed_candidates_verbatim(capsys):
    """A failure message naming a path like 'x/[/y]' used to crash Rich's markup parser."""
    from edgevae.cli.export import print_quant

    ok = q.Candidate("static-pc-rr", nll_delta=0.01, within_budget=True, bytes={"decoder": 2048})
    ok.speedup = {"decoder@1": 2.0, "decoder@256": 2.0, "encoder@1": 2.0, "encoder@256": 2.0}
    bad = q.Candidate("int4", error="/tmp/[/y]/decoder.int4.onnx: onnxruntime cannot load it")
    report = q.QuantReport(
        chosen="static-pc-rr",
        budget_nats=0.1,
        candidates=[ok, bad],
        calibration={},
        cpu={"model": "Test CPU", "kind": "x86-avx2"},
        firmware_decoder="decoder.int8.static.onnx",
        firmware_nll_delta=0.02,
    )
    print_quant(report)
    out = capsys.readouterr().out.replace("\n", "")
    assert "[/y]" in out and "chosen: static-pc-rr" in out
