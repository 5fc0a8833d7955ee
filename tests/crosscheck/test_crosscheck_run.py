"""edgevae.crosscheck run side: fixed inputs, running an export's models, the in-process sample
command, and the module's imports (the board has numpy + onnxruntime, no torch or onnx)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from crosscheck_helpers import png_bytes, tiny_fp32_export

from edgevae.crosscheck.compare import DYNAMIC, FP32, STATIC, CrosscheckError, compare
from edgevae.crosscheck.inputs import make_inputs
from edgevae.crosscheck.models import describe_models
from edgevae.crosscheck.results import load_results
from edgevae.crosscheck.run import run, run_and_save, run_sample
from edgevae.errors import UsageError

# --------------------------------------------------------------------------- inputs


def test_inputs_are_deterministic_and_cover_extremes():
    a = make_inputs(0)
    b = make_inputs(0)
    assert a.keys() == {"x", "z"}
    for k in a:
        assert a[k].dtype == np.float32 and a[k].flags.c_contiguous
        assert a[k].tobytes() == b[k].tobytes()
    assert not np.array_equal(make_inputs(1)["z"], a["z"])
    x, z = a["x"], a["z"]
    assert x.shape[1] == 784 and z.shape[1] == 20
    assert x.min() == 0.0 and x.max() == 1.0
    assert (x == 0).all(axis=1).any() and (x == 1).all(axis=1).any()
    # 8-bit levels, like real images
    assert np.array_equal(np.rint(x * 255) / np.float32(255), x)
    assert (z == 0).all(axis=1).any()
    assert (z == 4).all(axis=1).any() and (z == -4).all(axis=1).any()
    assert abs(float(z[8:].std()) - 1.0) < 0.3  # the N(0, 1) rows


def test_inputs_follow_dims_and_reject_bad_shape_or_seed():
    inputs = make_inputs(3, input_dim=12, latent_dim=3, image_shape=(3, 4))
    assert inputs["x"].shape[1] == 12 and inputs["z"].shape[1] == 3
    with pytest.raises(CrosscheckError):
        make_inputs(0, input_dim=12, image_shape=(5, 5))
    with pytest.raises(UsageError) as info:
        make_inputs(-1)
    assert info.value.param == "seed"


# --------------------------------------------------------------------------- imports


def test_run_side_imports_without_torch_onnx_or_pillow():
    code = (
        "import sys, edgevae.crosscheck.run as cc, edgevae.crosscheck.report; "
        "cc.make_inputs(0); "
        "bad = [m for m in ('torch', 'onnx', 'PIL') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- sample runner


def test_run_sample_with_a_stand_in_cli(tmp_path, monkeypatch):
    import edgevae

    calls = []

    def main(argv):
        calls.append(argv)
        Path(argv[argv.index("--out") + 1]).write_bytes(png_bytes(np.zeros((2, 2))))
        return 0

    fake = types.ModuleType("edgevae.cli")
    fake.main = main
    monkeypatch.setitem(sys.modules, "edgevae.cli", fake)
    monkeypatch.setattr(edgevae, "cli", fake, raising=False)
    status = run_sample(tmp_path / "export", tmp_path / "s.png")
    assert status["status"] == "ok", status
    assert calls[0][:3] == ["sample", "--export-dir", str(tmp_path / "export")]
    assert ["--n", "16", "--seed", "0", "--precision", "int8"] == calls[0][3:9]

    fake.main = lambda argv: 1
    assert run_sample(tmp_path / "export", tmp_path / "s.png")["status"] == "failed"
    fake.main = lambda argv: 0  # exits cleanly but writes nothing
    status = run_sample(tmp_path / "export", tmp_path / "s.png")
    assert status["status"] == "failed" and "wrote no" in status["message"]

    monkeypatch.setitem(sys.modules, "edgevae.cli", None)  # import raises ImportError
    monkeypatch.delattr(edgevae, "cli")
    status = run_sample(tmp_path / "export", tmp_path / "s.png")
    assert status["status"] == "skipped" and "not importable" in status["message"]


# --------------------------------------------------------------------------- real models


def test_run_and_save_on_a_tiny_export(tmp_path):
    export = tiny_fp32_export(tmp_path / "export")
    out = tmp_path / "run.npz"
    res = run_and_save(export, out, label="t", sample=False)
    assert len(res.outputs) == 6
    back = load_results(out)
    assert back.outputs["decoder.fp32/x_mean"].shape == (back.inputs["z"].shape[0], 16)
    assert back.outputs["encoder.fp32/mu@b1"].shape == (4, 4)
    np.testing.assert_allclose(
        back.outputs["encoder.fp32/mu@b1"], back.outputs["encoder.fp32/mu"][:4], atol=1e-5
    )
    assert back.meta["models"]["decoder.fp32"]["kind"] == FP32
    assert back.meta["sample"]["status"] == "skipped"
    assert json.loads(out.with_suffix(".json").read_text())["label"] == "t"
    again = run(export, label="t2", inputs=back.inputs)  # same machine, same numbers
    assert compare(back, again).passed
    # the inputs of a results file, fed again
    fed = run_and_save(export, tmp_path / "fed.npz", inputs_from=out, seed=5)
    assert fed.inputs["x"].tobytes() == back.inputs["x"].tobytes()


def test_missing_or_empty_export_dir(tmp_path):
    with pytest.raises(CrosscheckError, match="does not exist"):
        run(tmp_path / "nowhere")
    with pytest.raises(CrosscheckError, match="no \\*.onnx models"):
        run(tmp_path)


def test_kinds_of_real_quantized_models(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # calibration's scratch files
    export = tiny_fp32_export(tmp_path / "export")
    q = pytest.importorskip("onnxruntime.quantization")

    class Reader:
        def __init__(self):
            self.batches = iter(
                [{"z": np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)}]
            )

        def get_next(self):
            return next(self.batches, None)

    src = export / "decoder.fp32.onnx"
    q.quantize_dynamic(
        src,
        export / "decoder.int8.dynamic.onnx",
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gemm"],
    )
    q.quantize_static(
        src,
        export / "decoder.int8.onnx",
        Reader(),
        quant_format=q.QuantFormat.QDQ,
        activation_type=q.QuantType.QUInt8,
        weight_type=q.QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
        op_types_to_quantize=["Gemm"],
    )
    kinds = {stem: m["kind"] for stem, m in describe_models(export).items()}
    assert kinds == {
        "decoder.fp32": FP32,
        "encoder.fp32": FP32,
        "decoder.int8": STATIC,
        "decoder.int8.dynamic": DYNAMIC,
    }
    res = run(export, label="q")
    assert res.meta["sample"]["decoder_kind"] == STATIC
    assert "decoder.int8.dynamic/x_mean@b1" in res.outputs
