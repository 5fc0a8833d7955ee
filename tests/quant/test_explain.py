"""The parts of the search: paired per-image NLLs, the per-node explanation, the staged timing,
and the firmware pair the export always carries. No timing assertions: where a test depends on
speed, the sessions are fakes whose cost is fixed in CPU time."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgevae.quant import explain, measure, paired
from edgevae.quant.apply import apply_recipe, calibration_sets
from edgevae.quant.recipes import RECIPES, cpu_info
from edgevae.runtime import manifest, metrics
from edgevae.runtime.session import open_session


@pytest.fixture(scope="module")
def ctx(tiny_export):
    from edgevae.data.runs import load_run_data

    man = manifest.read(tiny_export)
    ds = load_run_data(man["train"], man["image_shape"])
    c = measure.Context.open(tiny_export, man, ds.valid[:64], cpu_info())
    c.paired = paired.PairedNLL(
        ds.valid[:64], c.fp32["encoder"], c.fp32["decoder"], "bernoulli", None, k=8, chunk=16
    )
    return c


@pytest.fixture(scope="module")
def calib(tiny_export):
    from edgevae.data.runs import load_run_data

    man = manifest.read(tiny_export)
    x, z = calibration_sets(tiny_export, load_run_data(man["train"], man["image_shape"]).train,
                            64, 0)  # fmt: skip
    return {"encoder": x, "decoder": z}


# --------------------------------------------------------------------------- paired


def test_fp32_against_itself_costs_exactly_nothing(ctx):
    d, nll = ctx.paired.delta(*ctx.fp32.values(), 40)
    assert d.mean == 0.0 and d.se == 0.0 and d.n == 40 and nll.shape == (40,)


def test_chunks_are_the_same_whatever_was_scored_before(ctx, tiny_export):
    enc = open_session(tiny_export / "encoder.int8.onnx", "encoder")
    dec = open_session(tiny_export / "decoder.int8.onnx", "decoder")
    first = ctx.paired.per_image(enc, dec, 16)
    grown = ctx.paired.per_image(enc, dec, 48, first)
    whole = ctx.paired.per_image(enc, dec, 48)
    assert np.array_equal(grown, whole) and np.array_equal(grown[:16], first)


def test_sequential_stops_once_the_decision_is_clear(ctx, tiny_export):
    enc = open_session(tiny_export / "encoder.int8.onnx", "encoder")
    dec = open_session(tiny_export / "decoder.int8.onnx", "decoder")
    far, _ = ctx.paired.sequential(enc, dec, budget=1e6)
    assert far.n == 16  # one chunk: a million nats away is clear at once
    d, _ = ctx.paired.delta(enc, dec, 64)
    near, _ = ctx.paired.sequential(enc, dec, budget=d.mean)
    assert near.n == 64  # the budget at the mean itself: never clear, every image scored
    assert paired.is_clear(paired.Delta(1.0, 0.1, 10), 0.5)
    assert not paired.is_clear(paired.Delta(1.0, 0.3, 10), 0.5)


def test_bernoulli_log_px_matches_metrics():
    rng = np.random.default_rng(0)
    x = rng.random((5, 1, 784)).astype(np.float32)
    logits = (rng.standard_normal((5, 7, 784)) * 8).astype(np.float32)
    ref = metrics.log_px_given_z(x.astype(np.float64), logits, "bernoulli")
    assert np.abs(paired.bernoulli_log_px(x, logits) - ref).max() < 1e-3


# --------------------------------------------------------------------------- explain


def _run(model, feed):
    """The model as ONNX defines it: no fusion into onnxruntime's integer kernels."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


# x86 without VNNI sums u8 x s8 pairs in saturating 16 bits, so there a full-range s8-weight
# model computes something no exact quantize/dequantize edit can (auto never offers it there).
SATURATES = cpu_info().kind in ("x86-avx2", "x86")
FULL_RANGE = pytest.mark.skipif(SATURATES, reason="u8 x s8 saturates in 16 bits on this CPU")


@pytest.mark.parametrize(
    "recipe",
    ["static-pc-rr", "firmware", pytest.param("dynamic-pc", marks=FULL_RANGE), "dynamic-pt-u8"],
)
def test_every_edit_together_reproduces_the_quantized_decoder(tiny_export, calib, tmp_path, recipe):
    """The single quantizations explain measures are the recipe's own: all of them applied to
    the fp32 model compute what the quantized model computes."""
    src = tiny_export / "decoder.fp32.onnx"
    dst = tmp_path / "q.onnx"
    apply_recipe(RECIPES[recipe], src, dst, calib["decoder"], "z")
    fp32, q = onnx.load(str(src)), onnx.load(str(dst))
    make = explain._dynamic_edits if RECIPES[recipe].method == "dynamic" else explain._static_edits
    edits = make(q, fp32, "decoder")
    parts = sorted(e.item.part for e in edits)
    outputs = ["output"] * 2 if recipe == "firmware" else []  # Gemm outputs: linear, logits
    assert parts == sorted(["weights"] * 2 + ["activations"] * 2 + outputs)
    combined = fp32
    for e in edits:
        combined = explain._apply_edit(combined, e)
    onnx.checker.check_model(combined)
    feed = {"z": np.random.default_rng(1).standard_normal((32, 4)).astype(np.float32)}
    want = _run(q, feed)[1]
    got = _run(combined, feed)[1]
    base = _run(fp32, feed)[1]
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())
    assert np.abs(base - want).max() > 1e-3  # while fp32 differs
    # and each edit alone changes the fp32 outputs (it quantizes something)
    for e in edits:
        if e.item.part != "activations" or e.item.tensor != "z":
            assert not np.array_equal(_run(explain._apply_edit(fp32, e), feed)[1], base)


def test_explain_models_scores_each_quantization(ctx, tiny_export, tmp_path):
    quantized = {r: tiny_export / f"{r}.int8.onnx" for r in ("encoder", "decoder")}
    items = explain.explain_models(ctx, "static", quantized, tmp_path, n=32)
    assert {(i.role, i.part) for i in items} == {
        (r, p) for r in ("encoder", "decoder") for p in ("weights", "activations")
    }
    shared = next(i for i in items if i.role == "encoder" and i.tensor == "relu")
    assert len(shared.node.split(", ")) == 2  # one activation feeding both heads
    assert all(math.isfinite(i.nll_delta) and i.images == 32 for i in items)
    costs = explain.node_costs(items)
    assert [c for _, _, c in costs] == sorted((c for _, _, c in costs), reverse=True)
    assert {n for _, n, _ in costs} >= {"node_linear", "node_linear_1"}


# --------------------------------------------------------------------------- timing


class _Burn:
    """A fake session whose run() costs a fixed amount of CPU time."""

    def __init__(self, us: float):
        self.us = us

    def run(self, *_):
        end = time.thread_time_ns() + int(self.us * 1e3)
        while time.thread_time_ns() < end:
            pass


def test_clearly_slower_candidates_are_dropped_after_the_first_stage(monkeypatch):
    monkeypatch.setattr(measure, "STAGE_ROUNDS", (2, 2))
    monkeypatch.setattr(measure, "ROUND_MS", 0.3)
    ref = _Burn(100)
    ctx = measure.Context(Path("."), {"encoder": ref, "decoder": ref}, 4, None, cpu_info())
    fast, slow = measure.Candidate("fast"), measure.Candidate("slow")
    fast.ceiling, fast.score_ceiling, slow.score_ceiling = 4.0, 4.0, 4.0
    live = [(fast, dict.fromkeys(("encoder", "decoder"), _Burn(25))),
            (slow, dict.fromkeys(("encoder", "decoder"), _Burn(100)))]  # fmt: skip
    measure.time_candidates(ctx, live, 784)
    assert fast.dropped is None and slow.dropped.startswith("slower")
    assert set(fast.speedup) == {"encoder@1", "encoder@256", "decoder@1", "decoder@256"}
    assert all(2.0 < v < 8.0 for v in fast.speedup.values())
    assert fast.share == {k: v / 4.0 for k, v in fast.speedup.items()}
    assert fast.score == pytest.approx(math.exp(np.mean(np.log(list(fast.speedup.values())))) / 4)


# --------------------------------------------------------------------------- firmware pair


def test_the_export_carries_the_static_encoder(tiny_export):
    man = manifest.read(tiny_export)
    assert man["firmware_encoder"] == "encoder.int8.static.onnx"
    assert "encoder.int8.static.onnx" in man["files"]
    assert math.isfinite(man["quantization"]["firmware_pair_nll_delta"])
    model = onnx.load(str(tiny_export / "encoder.int8.static.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["edgevae.recipe"] == "firmware"
    # Fixed scales everywhere: both heads' outputs come out of a QuantizeLinear -> Dequantize.
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    assert producers["mu"] == producers["logvar"] == "DequantizeLinear"
    sess = open_session(tiny_export / "encoder.int8.static.onnx", "encoder")
    mu, logvar = sess.run(["mu", "logvar"], {"x": np.zeros((2, 784), np.float32)})
    assert mu.shape == logvar.shape == (2, 4)
