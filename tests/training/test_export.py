"""The fp32/int8 export: parity with torch, metadata, manifest, dynamic batch, firmware decoder.

Everything here reads the session `tiny_export` (784-64-4; fp32 + int8 static-pc-rr + the
static firmware pair) and never writes into it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import edgevae
from edgevae import fsio
from edgevae.quant.recipes import RECIPES
from edgevae.runtime import manifest
from edgevae.runtime.model import Model
from edgevae.training.export import PARITY_TOL

# (file, role, precision, recipe) of every model the session export holds.
MODELS = [
    ("encoder.fp32.onnx", "encoder", "fp32", "fp32"),
    ("decoder.fp32.onnx", "decoder", "fp32", "fp32"),
    ("encoder.int8.onnx", "encoder", "int8", "static-pc-rr"),
    ("decoder.int8.onnx", "decoder", "int8", "static-pc-rr"),
    ("decoder.int8.static.onnx", "decoder", "int8", "firmware"),
    ("encoder.int8.static.onnx", "encoder", "int8", "firmware"),
    ("decoder.int4.static.onnx", "decoder", "int8", "firmware-int4"),
]
IO = {"encoder": (["x"], ["mu", "logvar"]), "decoder": (["z"], ["x_mean", "logits"])}


def _man(export_dir: Path) -> dict:
    return json.loads((export_dir / "manifest.json").read_text())


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- parity


def test_recorded_parity_is_within_tolerance(tiny_export):
    parity = _man(tiny_export)["parity"]
    assert {p["file"] for p in parity} == {"encoder.fp32.onnx", "decoder.fp32.onnx"}
    outputs = set()
    for p in parity:
        assert p["n"] == 1000
        assert p["tolerance"] == PARITY_TOL == 1e-4
        for name, diff in p["max_abs_diff"].items():
            outputs.add(name)
            assert 0 <= diff <= 1e-4, (p["file"], name, diff)
    assert outputs == {"mu", "logvar", "x_mean", "logits"}


def test_onnx_fp32_matches_our_own_torch_forward(tiny_run, tiny_export):
    from edgevae.training.evaluate import load_model

    model, cfg = load_model(tiny_run)
    assert not model.training
    rng = np.random.default_rng(1234)  # not the export's own parity inputs
    x = rng.random((1000, 784), dtype=np.float32)
    z = rng.standard_normal((1000, cfg["model"]["latent_dim"])).astype(np.float32)
    with torch.no_grad():
        mu_t, lv_t = (t.numpy() for t in model.encoder(torch.from_numpy(x)))
        logits_t = model.decoder(torch.from_numpy(z)).numpy()
    fp32 = Model(tiny_export, "fp32")
    mu, lv = fp32.encode(x)
    logits = fp32.decode_logits(z)
    x_mean = fp32.decode(z)
    assert mu.shape == (1000, 4) and logits.shape == (1000, 784)
    assert np.abs(mu - mu_t).max() <= 1e-4
    assert np.abs(lv - lv_t).max() <= 1e-4
    assert np.abs(logits - logits_t).max() <= 1e-4
    assert np.abs(x_mean - 1 / (1 + np.exp(-logits_t))).max() <= 1e-4
    # The model is not trivial: outputs vary with the input.
    assert mu.std(0).min() > 0 and logits.std(0).max() > 0.1


def test_int8_pair_stays_close_to_fp32(tiny_export):
    """Not bit-exact, but the quantized models compute the same thing."""
    rng = np.random.default_rng(5)
    z = rng.standard_normal((200, 4)).astype(np.float32)
    ref = Model(tiny_export, "fp32").decode(z)
    got = Model(tiny_export, "int8").decode(z)
    assert got.shape == ref.shape
    assert np.abs(got - ref).mean() < 0.05
    assert not np.array_equal(got, ref)


# --------------------------------------------------------------------------- metadata


@pytest.mark.parametrize(("name", "role", "precision", "recipe"), MODELS)
def test_every_model_carries_edgevae_metadata(tiny_export, name, role, precision, recipe):
    proto = onnx.load(str(tiny_export / name))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["edgevae.version"] == edgevae.__version__
    assert meta["edgevae.latent_dim"] == "4"
    assert meta["edgevae.image_shape"] == "28,28"
    assert meta["edgevae.likelihood"] == "bernoulli"
    assert meta["edgevae.precision"] == precision
    assert meta["edgevae.recipe"] == recipe
    assert meta["edgevae.role"] == role
    assert proto.producer_name == "edgevae"
    assert [i.name for i in proto.graph.input] == IO[role][0]
    assert [o.name for o in proto.graph.output] == IO[role][1]
    onnx.checker.check_model(proto)


@pytest.mark.parametrize(("name", "role"), [(m[0], m[1]) for m in MODELS])
def test_models_are_single_file(tiny_export, name, role):
    proto = onnx.load(str(tiny_export / name), load_external_data=False)
    tensors = list(proto.graph.initializer)
    tensors += [a.t for n in proto.graph.node for a in n.attribute if a.HasField("t")]
    assert tensors
    for t in tensors:
        assert t.data_location != onnx.TensorProto.EXTERNAL, t.name
        assert not t.external_data, t.name
    assert not list(proto.graph.sparse_initializer)
    assert sorted(p.name for p in tiny_export.iterdir()) == sorted(
        ["manifest.json", "heldout.npy"] + [m[0] for m in MODELS]
    )


@pytest.mark.parametrize(("name", "role"), [(m[0], m[1]) for m in MODELS])
def test_batch_axis_is_dynamic(tiny_export, name, role):
    proto = onnx.load(str(tiny_export / name))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert len(dims) == 2 and dims[0].dim_param and not dims[0].HasField("dim_value")
    width = 784 if role == "encoder" else 4
    assert dims[1].dim_value == width
    sess = _session(tiny_export / name)
    rng = np.random.default_rng(0)
    big = rng.random((37, width), dtype=np.float32)
    outs37 = sess.run(None, {IO[role][0][0]: big})
    outs1 = sess.run(None, {IO[role][0][0]: big[5:6]})
    for o37, o1, out_name in zip(outs37, outs1, IO[role][1], strict=True):
        want = 4 if role == "encoder" else 784
        assert o37.shape == (37, want) and o1.shape == (1, want), out_name
        assert np.isfinite(o37).all()
        # Row 5 alone gives (nearly) what it gives inside the batch of 37.
        np.testing.assert_allclose(o1[0], o37[5], atol=2e-2 if "int8" in name else 1e-5)


# --------------------------------------------------------------------------- manifest


def test_manifest_lists_files_with_true_hashes_and_sizes(tiny_export):
    man = _man(tiny_export)
    assert set(man["files"]) == {m[0] for m in MODELS}
    for name, rec in man["files"].items():
        path = tiny_export / name
        assert rec["bytes"] == path.stat().st_size > 0
        assert rec["sha256"] == fsio.sha256_file(path)
        assert len(rec["sha256"]) == 64


def test_manifest_records_model_quantization_and_versions(tiny_run, tiny_export):
    man = _man(tiny_export)
    run_cfg = json.loads((tiny_run / "config.json").read_text())
    assert man["schema"] == manifest.SCHEMA
    assert man["model"] == run_cfg["model"]
    assert man["model"]["hidden"] == [64] and man["latent_dim"] == 4
    assert man["image_shape"] == [28, 28]
    assert man["likelihood"] == "bernoulli"
    assert "gaussian_logvar" not in man

    q = man["quantization"]
    assert {"chosen", "candidates", "calibration", "cpu", "budget_nats"} <= set(q)
    assert q["chosen"] == "static-pc-rr"
    assert q["budget_nats"] == 10.0
    assert q["forced"] is False
    assert [c["recipe"] for c in q["candidates"]] == ["static-pc-rr"]
    cand = q["candidates"][0]
    assert cand["error"] is None and cand["within_budget"] is True
    assert set(cand["speedup"]) == {"encoder@1", "encoder@256", "decoder@1", "decoder@256"}
    assert cand["score"] > 0
    assert q["calibration"]["encoder_images"] == 500
    assert q["calibration"]["decoder_z"] == 1000  # posterior means + as many prior draws
    assert q["calibration"]["heldout_images"] == 500  # the 5k MNIST's valid split
    assert np.isfinite(q["calibration"]["fp32_nll"])
    assert q["cpu"]["kind"] and "arch" in q["cpu"]
    assert q["firmware_decoder"] == "decoder.int8.static.onnx"
    assert np.isfinite(q["firmware_nll_delta"])

    assert man["recipe"] == RECIPES["static-pc-rr"].to_dict()
    assert man["recipe"]["exact_across_cpus"] is True
    assert man["cpu_specific"] is None  # 7-bit weights: exact on AVX2, VNNI and ARM alike
    assert man["firmware_decoder"] == "decoder.int8.static.onnx"
    delta = man["int8_vs_fp32"]["nll_delta_nats"]
    assert delta == cand["nll_delta"]
    assert np.isfinite(delta) and abs(delta) < 10.0

    v = man["versions"]
    assert v["edgevae"] == edgevae.__version__
    assert v["onnxruntime"] == ort.__version__
    assert v["numpy"] == np.__version__
    assert v["onnx"] == onnx.__version__ and v["torch"] == torch.__version__


def test_manifest_read_rejects_non_manifests(tmp_path):
    from edgevae.errors import ModelFileError

    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ModelFileError, match="not an edgevae manifest"):
        manifest.read(tmp_path)
    (tmp_path / "manifest.json").write_text('{"latent_dim": 4}')
    with pytest.raises(ModelFileError, match="not an edgevae manifest"):
        manifest.read(tmp_path)
    (tmp_path / "manifest.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ModelFileError, match="unreadable or not JSON"):
        manifest.read(tmp_path)


# --------------------------------------------------------------------------- firmware decoder


def _producers_consumers(graph):
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return producer, consumers


def _fully_static(graph) -> bool:
    """Every Gemm reads only DequantizeLinear outputs and feeds only QuantizeLinear."""
    producer, consumers = _producers_consumers(graph)
    outputs = {o.name for o in graph.output}
    gemms = [n for n in graph.node if n.op_type in ("Gemm", "MatMul")]
    assert gemms
    for g in gemms:
        for i in g.input:
            if not i or producer.get(i) is None or producer[i].op_type != "DequantizeLinear":
                return False
        for o in g.output:
            if o in outputs or not consumers.get(o):
                return False
            if any(c.op_type != "QuantizeLinear" for c in consumers[o]):
                return False
    return producer["logits"].op_type == "DequantizeLinear"


def test_firmware_decoder_is_fully_static(tiny_export):
    proto = onnx.load(str(tiny_export / "decoder.int8.static.onnx"))
    g = proto.graph
    assert [n.op_type for n in g.node].count("Gemm") == 2
    assert _fully_static(g)
    ops = {n.op_type for n in g.node}
    assert ops <= {"QuantizeLinear", "DequantizeLinear", "Gemm", "Relu", "Sigmoid"}
    assert "DynamicQuantizeLinear" not in ops
    # Weights and biases are stored as integers, not floats.
    int_types = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT32}
    weights = [t for t in g.initializer if t.name.endswith(("weight_quantized", "bias_quantized"))]
    assert len(weights) == 4 and all(t.data_type in int_types for t in weights)
    logits_q = [
        n for n in g.node if n.op_type == "QuantizeLinear" and n.output[0].startswith("logits")
    ]
    assert logits_q, "the logits are quantized"


def test_runtime_int8_decoder_keeps_float_logits(tiny_export):
    """The check above is discriminating: the runtime recipe leaves Gemm outputs in float."""
    proto = onnx.load(str(tiny_export / "decoder.int8.onnx"))
    assert not _fully_static(proto.graph)
    producer, _ = _producers_consumers(proto.graph)
    assert producer["logits"].op_type == "Gemm"


@pytest.mark.slow
@pytest.mark.parametrize("failing_role", ["encoder", "decoder"])
def test_failed_re_export_leaves_the_previous_export_untouched(
    tiny_run, tiny_export, tmp_path, monkeypatch, failing_role
):
    """Parity failing on either model must not leave new fp32 files next to old int8 ones and
    an old manifest (it used to replace the encoder, then fail on the decoder)."""
    import shutil

    from edgevae.errors import ModelFileError
    from edgevae.training import export

    export_dir = tmp_path / "export"
    shutil.copytree(tiny_export, export_dir)
    before = {p.name: p.read_bytes() for p in export_dir.iterdir()}
    real = export.parity

    def parity(path, module, x):
        result = real(path, module, x)
        if path.name.startswith(failing_role):
            result.max_abs_diff = {k: 1.0 for k in result.max_abs_diff}
        return result

    monkeypatch.setattr(export, "parity", parity)
    with pytest.raises(ModelFileError, match=f"{failing_role}.fp32.onnx: onnxruntime differs"):
        export.export_run(tiny_run, export_dir)
    after = {p.name: p.read_bytes() for p in export_dir.iterdir()}  # staging dir gone too
    assert after == before
