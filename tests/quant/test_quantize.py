"""Recipe search under the accuracy budget, its all-or-nothing writes, and the CLI checks.

quantize_export is the expensive part: here it runs with two cheap dynamic recipes, 64
calibration images, 64 held-out images in chunks of 32 scored with k=16 importance samples, and
one timing round per stage. Speed is measured but never asserted: where the choice depends on
speed, the measured speedups are replaced by fixed ones so the test is deterministic.
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
from edgevae.quant import explain, measure, paired
from edgevae.quant import search as q
from edgevae.quant.recipes import RECIPES, CpuInfo, auto_candidates, cpu_info, gemm_format
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
    """Cheap candidates, few images, one timing round per stage; collects every Candidate
    whose accuracy was scored."""
    measured: list[measure.Candidate] = []
    real_score = measure.score_accuracy

    def score(ctx, cand, *args, **kwargs):
        out = real_score(ctx, cand, *args, **kwargs)
        measured.append(cand)
        return out

    monkeypatch.setattr(q, "EVAL_IMAGES", 64)
    monkeypatch.setattr(q, "REPORT_IMAGES", 64)
    monkeypatch.setattr(explain, "EXPLAIN_IMAGES", 32)
    monkeypatch.setattr(paired, "EVAL_K", 16)
    monkeypatch.setattr(paired, "CHUNK", 32)
    monkeypatch.setattr(measure, "STAGE_ROUNDS", (1, 1))
    monkeypatch.setattr(measure, "score_accuracy", score)
    monkeypatch.setattr(q, "auto_candidates", lambda cpu: list(CHEAP))
    return measured


def _shift_deltas(monkeypatch, shift):
    """Measured NLL deltas replaced by shift(cand, delta), the budget decision with them."""
    real = measure.score_accuracy

    def shifted(ctx, cand, sessions, budget, done=None):
        out = real(ctx, cand, sessions, budget, done)
        cand.nll_delta = shift(cand, cand.nll_delta)
        cand.within_budget = cand.nll_delta <= budget
        return out

    monkeypatch.setattr(measure, "score_accuracy", shifted)


@pytest.fixture
def positive_deltas(fast, monkeypatch):
    """Measured NLL deltas moved to >= 0.01 nats, so a 1e-9 budget is out of reach on every
    CPU (a dynamic recipe can measure +0.000 or below: int8 noise on a tiny model), mixed
    precision included."""
    _shift_deltas(monkeypatch, lambda cand, d: abs(d) + 0.01)
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
    # The two recipes, then mixed-precision variants of the closest (all over budget too).
    assert [c.recipe for c in fast[:2]] == CHEAP
    closest = min(fast[:2], key=lambda c: c.nll_delta)
    mixed = fast[2:]
    assert mixed and all(c.recipe == closest.recipe and c.kept_float for c in mixed)
    assert [sum(map(len, c.kept_float.values())) for c in mixed] == list(range(1, len(mixed) + 1))
    assert all(c.nll_delta > 1e-9 for c in fast)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"closest is {closest.recipe} at +{closest.nll_delta:.3f} nats" in msg
    assert f"mixed precision of {closest.recipe} kept up to {len(mixed)} of" in msg
    assert isinstance(info.value, q.BudgetError) and "1e-09" in msg
    assert "--" not in msg  # the library names no CLI flag; the CLI adds the hint
    # Nothing written, nothing left behind (the .quantize-* work dir is gone too).
    assert _snapshot(export_copy) == before


def test_force_keeps_the_closest_recipe(export_copy, images, positive_deltas):
    report = q.quantize_export(
        export_copy, *images, recipe="auto", budget_nats=1e-9, calib=64, force=True
    )
    assert report.forced is True
    assert [c.recipe for c in report.candidates[:2]] == CHEAP
    assert not any(c.within_budget for c in report.candidates)
    closest = min(report.candidates[:2], key=lambda c: c.nll_delta)
    assert report.chosen == closest.recipe and report.chosen_candidate is closest
    assert closest.speedup, "a forced choice is timed even though it was over budget"
    assert report.mixed is not None and "still over" in report.mixed["note"]
    assert report.calibration["encoder_images"] == 64
    assert report.calibration["decoder_z"] == 128
    assert report.calibration["heldout_images"] == 64

    man = json.loads((export_copy / "manifest.json").read_text())
    assert man["quantization"]["forced"] is True
    assert man["quantization"]["chosen"] == closest.recipe
    assert man["recipe"]["name"] == closest.recipe and man["int8_vs_fp32"]["kept_float"] == {}
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
        assert "edgevae.kept_float" not in meta
    assert not [p for p in export_copy.iterdir() if p.name.startswith(".")]


def _pin_speed(monkeypatch, pinned: dict[str, float]) -> None:
    """Every timed candidate's speedups replaced by pinned[recipe]; nothing dropped as slower
    by the real (unpinned) timing."""
    real = measure.time_candidates

    def pinned_time(ctx, live, width, drop=True):
        real(ctx, live, width, drop=False)
        for cand, _ in live:
            cand.speedup = {k: pinned[cand.recipe] for k in cand.speedup}

    monkeypatch.setattr(measure, "time_candidates", pinned_time)


def test_huge_budget_picks_the_best_score_via_cli(export_copy, fast, monkeypatch, capsys):
    """Both recipes fit; the one with the higher (here: pinned) speedup score wins."""
    pinned = {"dynamic-pt": 1.5, "dynamic-pc": 3.0}  # the second-listed one is faster
    _pin_speed(monkeypatch, pinned)
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
    assert "chosen: dynamic-pc" in out.out and "int8 ceiling on this CPU" in out.out
    man = json.loads((export_copy / "manifest.json").read_text())
    qr = man["quantization"]
    assert qr["chosen"] == "dynamic-pc" and qr["forced"] is False
    assert qr["budget_nats"] == 1e9
    # The score is the mean speedup over the best ceiling among the candidates' formats.
    best = max(qr["ceiling"]["ceiling"][c["format"]] for c in qr["candidates"])
    scores = {c["recipe"]: c["score"] for c in qr["candidates"]}
    assert scores == pytest.approx({r: v / best for r, v in pinned.items()})
    assert all(c["within_budget"] and c["dropped"] is None for c in qr["candidates"])
    assert all(c["format"] == "u8s8" for c in qr["candidates"])
    # Only a clear decision was needed: each was scored on one chunk, the choice on all 64.
    by = {c["recipe"]: c for c in qr["candidates"]}
    assert by["dynamic-pt"]["nll_images"] == 32 and by["dynamic-pc"]["nll_images"] == 64
    assert math.isfinite(by["dynamic-pc"]["encoder_nll_delta"])
    assert math.isnan(by["dynamic-pt"]["encoder_nll_delta"] or math.nan)
    # The firmware pair is rebuilt and recorded; the old manifest's parity is kept.
    assert man["firmware_decoder"] == "decoder.int8.static.onnx"
    assert man["firmware_encoder"] == "encoder.int8.static.onnx"
    assert math.isfinite(qr["firmware_nll_delta"]) and math.isfinite(qr["firmware_pair_nll_delta"])
    assert "encoder.int8.static.onnx" in man["files"]
    assert man["parity"] == before["parity"]
    assert qr["explain"] is None
    assert (
        man["files"]["decoder.int8.onnx"]["sha256"]
        != before["files"]["decoder.int8.onnx"]["sha256"]
    )


def test_clearly_over_budget_is_dropped_before_timing(export_copy, images, fast, monkeypatch):
    # dynamic-pc within the budget on every CPU (it saturates without VNNI: +5 nats or more)
    _shift_deltas(monkeypatch, lambda cand, d: 5.0 if cand.recipe == "dynamic-pt" else 0.0)
    timed: list[str] = []
    real = measure.time_candidates

    def spy(ctx, live, width, drop=True):
        timed.extend(c.recipe for c, _ in live)
        real(ctx, live, width, drop)

    monkeypatch.setattr(measure, "time_candidates", spy)
    report = q.quantize_export(export_copy, *images, recipe="auto", budget_nats=1.0, calib=64)
    over = next(c for c in report.candidates if c.recipe == "dynamic-pt")
    assert over.dropped.startswith("over budget") and not over.speedup
    assert timed == ["dynamic-pc"] and report.chosen == "dynamic-pc"


def test_mixed_precision_keeps_the_costliest_node_in_float(export_copy, images, fast, monkeypatch):
    """All-int8 over the budget, one node kept in float within it: that variant is chosen,
    and the report and manifest say what it kept and what that costs."""
    _shift_deltas(monkeypatch, lambda cand, d: 0.0 if cand.kept_float else 5.0)
    report = q.quantize_export(export_copy, *images, recipe="dynamic-pc", budget_nats=1.0, calib=64)
    mixed = report.mixed
    chosen = report.chosen_candidate
    assert report.forced is False and report.chosen == "dynamic-pc"
    assert sum(map(len, chosen.kept_float.values())) == 1
    costs = mixed["node_costs"]
    top = costs[0]
    assert chosen.kept_float == {top["role"]: [top["node"]]}
    assert [c["nll_delta"] for c in costs] == sorted((c["nll_delta"] for c in costs), reverse=True)
    assert mixed["label"] == chosen.label and top["node"] in chosen.label
    assert (
        set(mixed["speedup"])
        == set(mixed["speedup_all_int8"])
        == {f"{r}@{b}" for r in ("encoder", "decoder") for b in (1, 256)}
    )
    assert set(mixed["bytes"]) == set(mixed["bytes_all_int8"]) == {"encoder", "decoder"}
    man = json.loads((export_copy / "manifest.json").read_text())
    assert man["quantization"]["mixed"]["kept_float"] == chosen.kept_float
    assert man["int8_vs_fp32"]["kept_float"] == chosen.kept_float
    role = top["role"]
    model = onnx.load(str(export_copy / f"{role}.int8.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["edgevae.kept_float"] == top["node"]
    # Left in float (dynamic recipes rewrite a Gemm as NAME_MatMul + NAME_Add first).
    ops = {n.name: n.op_type for n in model.graph.node}
    assert ops.get(top["node"]) == "Gemm" or ops.get(top["node"] + "_MatMul") == "MatMul"
    assert top["node"] + "_MatMul_quant" not in ops


def test_explain_via_cli_prints_and_records_the_table(export_copy, fast, capsys):
    code = main(
        ["quantize", "--export-dir", str(export_copy), "--recipe", "static-pc-rr",
         "--budget-nats", "10", "--calib", "64", "--explain"]
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "Cost of each quantized node alone (static-pc-rr" in out.out
    items = json.loads((export_copy / "manifest.json").read_text())["quantization"]["explain"]
    parts = {(i["role"], i["part"]) for i in items}
    assert parts == {(r, p) for r in ("encoder", "decoder") for p in ("weights", "activations")}
    # 784-64-4: encoder body, mu, logvar; decoder body and out: one weights item each.
    assert sum(i["part"] == "weights" for i in items) == 5
    assert all(math.isfinite(i["nll_delta"]) and i["images"] == 32 for i in items)


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
    enc, dec = q.calibration_sets(tiny_export, images[0], 50, seed=3)
    assert enc.keys() == {"x"} and dec.keys() == {"z"}  # an unconditional model: no y
    x, z = enc["x"], dec["z"]
    assert x.shape == (50, 784) and x.dtype == np.float32
    assert z.shape == (100, 4) and np.isfinite(z).all()
    enc2, dec2 = q.calibration_sets(tiny_export, images[0], 50, seed=3)
    assert np.array_equal(x, enc2["x"]) and np.array_equal(z, dec2["z"])
    with pytest.raises(UsageError, match="calib: must be >= 1"):
        q.calibration_sets(tiny_export, images[0], 0, seed=3)


@pytest.mark.parametrize("recipe", ["dynamic-pc", "static-pc-rr", "firmware", "int4"])
def test_a_recipe_writes_nothing_beside_its_source(
    tiny_export, images, tmp_path, monkeypatch, recipe
):
    """onnxruntime's quantizers write `<model>-inferred.onnx` next to the model they are given;
    apply_recipe gives them a private copy, so an export dir is never written to (two
    quantizations of one export shared that file: one read the other's half-written copy)."""
    import onnx.shape_inference

    from edgevae.quant.apply import apply_recipe

    src_dir = tmp_path / "export"
    src_dir.mkdir()
    src = Path(shutil.copy(tiny_export / "decoder.fp32.onnx", src_dir))
    before = sorted(p.name for p in src_dir.iterdir())
    written: list[Path] = []
    real = onnx.shape_inference.infer_shapes_path

    def spy(model_path, output_path="", *args, **kwargs):
        written.append(Path(output_path or model_path))
        return real(model_path, output_path, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes_path", spy)
    _, dec = q.calibration_sets(tiny_export, images[0], 20, seed=0)
    apply_recipe(RECIPES[recipe], src, tmp_path / "q.onnx", dec)
    assert (tmp_path / "q.onnx").stat().st_size > 0
    assert all(src_dir not in p.parents for p in written), written
    assert sorted(p.name for p in src_dir.iterdir()) == before


# --------------------------------------------------------------------------- recipes / CPU


def test_candidate_score_is_geometric_mean_of_speedups_over_the_ceiling():
    c = q.Candidate("x", speedup={"a": 2.0, "b": 8.0, "c": 0.0})
    assert c.score == pytest.approx(4.0)
    c.score_ceiling = 2.0
    assert c.score == pytest.approx(2.0)
    assert q.Candidate("y").score == 0.0


@pytest.mark.parametrize(
    ("recipe", "x86", "arm"),
    [
        ("static-pc", "u8s8", "u8s8"),
        ("static-pc-rr", "u8s8-7bit", "u8s8-7bit"),
        ("firmware", "u8s8-7bit", "u8s8-7bit"),
        ("static-u8u8-pt", "u8u8", "u8u8"),
        ("dynamic-pt-u8", "u8u8", "u8u8"),
        ("dynamic-pc", "u8s8", "u8s8"),
        ("static-s8-pc", "u8s8", "s8s8"),  # onnxruntime shifts s8 activations on x86
        ("static-default", "s8s8", "s8s8"),
        ("int4", None, None),
        ("fp16", None, None),
    ],
)
def test_gemm_format_per_recipe_and_cpu(recipe, x86, arm):
    intel = CpuInfo("x86_64", "x", frozenset({"avx2"}))
    neon = CpuInfo("aarch64", "a", frozenset({"asimd"}))
    assert gemm_format(RECIPES[recipe], intel) == x86
    assert gemm_format(RECIPES[recipe], neon) == arm


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
    """A failure message naming a path like 'x/[/y]' is shown verbatim, not read as Rich
    markup (which would fail on it)."""
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
