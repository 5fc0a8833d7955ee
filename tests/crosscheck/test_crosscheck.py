"""edgevae.crosscheck.run: inputs, comparison rules, reports, files and CLI, without emulation.

The emulated runs themselves (Cortex-A72/A76, Haswell) are `make test-arm`.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edgevae.crosscheck import run as cc

# --------------------------------------------------------------------------- helpers


def _pb_field(num: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (payloads here are < 128 bytes or nested)."""

    def varint(v: int) -> bytes:
        out = bytearray()
        while True:
            b = v & 0x7F
            v >>= 7
            out.append(b | (0x80 if v else 0))
            if not v:
                return bytes(out)

    return varint((num << 3) | 2) + varint(len(payload)) + payload


def _fake_onnx(*ops: str, dtypes: tuple[int, ...] = (1,)) -> bytes:
    nodes = b"".join(_pb_field(1, _pb_field(4, op.encode())) for op in ops)
    # initializers: TensorProto with data_type (field 2, varint) and a name (field 8)
    inits = b"".join(_pb_field(5, bytes([0x10, d]) + _pb_field(8, b"w")) for d in dtypes)
    ir_version = bytes([0x08, 0x09])  # field 1 varint 9
    return ir_version + _pb_field(7, nodes + _pb_field(2, b"graph") + inits)


def _results(label="ref", *, seed=0, png=None, kinds=None, scale=1.0, sample=None) -> cc.Results:
    """A small synthetic run: one model per kind with one output each."""
    kinds = kinds or {
        "decoder.int8": cc.STATIC,
        "decoder.int8.dynamic": cc.DYNAMIC,
        "decoder.fp32": cc.FP32,
    }
    inputs = cc.make_inputs(seed, input_dim=16, latent_dim=4, n_random=4)
    rng = np.random.default_rng(123)
    outputs = {f"{stem}/x_mean": (rng.random((5, 16)) * scale).astype(np.float32) for stem in kinds}
    meta = {
        "format": cc.FORMAT,
        "label": label,
        "platform": {
            "machine": "x86_64",
            "numpy": np.__version__,
            "onnxruntime": "1.32.0",
            "python": "3.11",
            "numpy_cpu_features": ["AVX2"],
        },
        "models": {stem: {"kind": kind, "sha256": stem} for stem, kind in kinds.items()},
        "sample": sample
        or (
            {"status": "ok", "message": "edgevae sample", "decoder_kind": cc.STATIC}
            if png
            else {"status": "skipped", "message": "no CLI"}
        ),
    }
    return cc.Results(inputs=inputs, outputs=outputs, meta=meta, png=png)


def _png(pixels: np.ndarray, **save_kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="PNG", **save_kw)
    return buf.getvalue()


def _check(report: cc.Report, name: str) -> cc.Check:
    return next(c for c in report.checks if c.name == name)


# --------------------------------------------------------------------------- inputs


def test_inputs_are_deterministic_and_cover_extremes():
    a = cc.make_inputs(0)
    b = cc.make_inputs(0)
    assert a.keys() == {"x", "z"}
    for k in a:
        assert a[k].dtype == np.float32 and a[k].flags.c_contiguous
        assert a[k].tobytes() == b[k].tobytes()
    assert not np.array_equal(cc.make_inputs(1)["z"], a["z"])
    x, z = a["x"], a["z"]
    assert x.shape[1] == 784 and z.shape[1] == 20
    assert x.min() == 0.0 and x.max() == 1.0
    assert (x == 0).all(axis=1).any() and (x == 1).all(axis=1).any()
    # 8-bit levels, like real images
    assert np.array_equal(np.rint(x * 255) / np.float32(255), x)
    assert (z == 0).all(axis=1).any()
    assert (z == 4).all(axis=1).any() and (z == -4).all(axis=1).any()
    assert abs(float(z[8:].std()) - 1.0) < 0.3  # the N(0, 1) rows


def test_inputs_follow_dims_and_reject_bad_shape():
    inputs = cc.make_inputs(3, input_dim=12, latent_dim=3, image_shape=(3, 4))
    assert inputs["x"].shape[1] == 12 and inputs["z"].shape[1] == 3
    with pytest.raises(cc.CrosscheckError):
        cc.make_inputs(0, input_dim=12, image_shape=(5, 5))


# --------------------------------------------------------------------------- model kinds


@pytest.mark.parametrize(
    ("ops", "kind"),
    [
        (("Gemm", "Relu", "Sigmoid"), cc.FP32),
        (("QuantizeLinear", "DequantizeLinear", "Gemm"), cc.STATIC),
        (("QLinearMatMul",), cc.STATIC),
        (("DynamicQuantizeLinear", "MatMulInteger", "Mul"), cc.DYNAMIC),
    ],
)
def test_op_types_are_read_from_protobuf(ops, kind):
    found = cc.onnx_op_types(_fake_onnx(*ops))
    assert found == set(ops)
    assert cc.model_kind(found) == kind


def test_fp16_and_int4_models_are_their_own_kinds():
    fp16 = _fake_onnx("Cast", "Gemm", dtypes=(10, 1))
    assert cc.onnx_graph_info(fp16) == ({"Cast", "Gemm"}, {10, 1})
    assert cc.model_kind(*cc.onnx_graph_info(fp16)) == cc.FP16
    assert cc.model_kind(*cc.onnx_graph_info(_fake_onnx("MatMulNBits", "Add"))) == cc.INT4
    assert cc.model_kind(*cc.onnx_graph_info(_fake_onnx("Gemm", dtypes=(1,)))) == cc.FP32


def test_not_an_onnx_file_is_an_error():
    with pytest.raises(cc.CrosscheckError):
        cc.onnx_op_types(b"\x3a\xff\xff\xff")


# --------------------------------------------------------------------------- compare rules


def test_identical_runs_pass():
    report = cc.compare(_results("ref"), _results("cand"))
    assert report.passed
    assert all(c.n_different == 0 for c in report.checks)
    assert report.max_diff(cc.STATIC) == 0 and report.max_diff(cc.FP32) == 0


def test_static_int8_must_be_bit_exact():
    cand = _results("cand")
    out = cand.outputs["decoder.int8/x_mean"]
    out[0, 0] = np.nextafter(out[0, 0], np.float32(2))  # one ulp
    report = cc.compare(_results("ref"), cand)
    check = _check(report, "decoder.int8/x_mean")
    assert not report.passed and not check.passed
    assert check.n_different == 1 and 0 < check.max_abs_diff < 1e-6
    assert "bit-exact" in check.note
    # the AVX2-without-VNNI reference gets the saturation hint
    assert any("vpmaddubsw" in n for n in report.notes)


def test_fp32_tolerance():
    ref = _results("ref")
    small, large = _results("a"), _results("b")
    small.outputs["decoder.fp32/x_mean"][1, 2] += np.float32(5e-7)
    large.outputs["decoder.fp32/x_mean"][1, 2] += np.float32(3e-6)
    assert cc.compare(ref, small).passed
    report = cc.compare(ref, large)
    assert not report.passed
    assert _check(report, "decoder.fp32/x_mean").max_abs_diff == pytest.approx(3e-6, rel=0.2)
    assert cc.compare(ref, large, {cc.FP32: 1e-5}).passed


def test_dynamic_int8_is_reported_not_failed():
    cand = _results("cand")
    cand.outputs["decoder.int8.dynamic/x_mean"] += np.float32(0.25)
    report = cc.compare(_results("ref"), cand)
    check = _check(report, "decoder.int8.dynamic/x_mean")
    assert report.passed and check.passed
    assert check.max_abs_diff == pytest.approx(0.25, abs=1e-6)
    assert check.tolerance is None
    assert any("may differ across CPUs" in n for n in report.notes)
    assert not cc.compare(_results("ref"), cand, {cc.DYNAMIC: 0.1}).passed


def test_missing_output_shape_mismatch_and_different_model_fail():
    cand = _results("cand")
    del cand.outputs["decoder.fp32/x_mean"]
    cand.outputs["decoder.int8/x_mean"] = cand.outputs["decoder.int8/x_mean"][:2]
    cand.meta["models"]["decoder.int8.dynamic"]["sha256"] = "other"
    report = cc.compare(_results("ref"), cand)
    notes = {c.name: c.note for c in report.failures()}
    assert "missing" in notes["decoder.fp32/x_mean"]
    assert "shape" in notes["decoder.int8/x_mean"]
    assert "sha256" in notes["decoder.int8.dynamic"]


def test_nan_positions_must_match():
    ref, same, moved = _results("ref"), _results("a"), _results("b")
    for r in (ref, same):
        r.outputs["decoder.fp32/x_mean"][0, 0] = np.nan
    moved.outputs["decoder.fp32/x_mean"][0, 1] = np.nan
    assert cc.compare(ref, same).passed
    report = cc.compare(ref, moved)
    assert _check(report, "decoder.fp32/x_mean").max_abs_diff == float("inf")
    assert not report.passed
    assert json.dumps(report.to_dict())  # inf is written as a string, still valid JSON


def test_different_inputs_fail():
    report = cc.compare(_results("ref", seed=0), _results("cand", seed=1))
    assert not report.passed
    assert any("inputs differ" in c.note for c in report.failures())


# --------------------------------------------------------------------------- PNG


def test_png_bytes_equality_and_pixel_difference():
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    same = cc.compare_png(_png(pixels), _png(pixels))
    assert same.passed and same.max_abs_diff == 0
    other = pixels.copy()
    other[2, 3] += 7
    diff = cc.compare_png(_png(pixels), _png(other))
    assert not diff.passed
    assert diff.max_abs_diff == 7 and diff.n_different == 1
    assert "largest pixel difference 7" in diff.note
    # same pixels, other encoder settings: bytes differ, largest pixel difference 0
    recoded = cc.compare_png(_png(pixels), _png(pixels, compress_level=0))
    assert not recoded.passed and recoded.max_abs_diff == 0
    assert not cc.compare_png(_png(pixels), None).passed


def test_png_in_compare_and_dynamic_decoder_makes_it_informational():
    pixels = np.zeros((4, 4), np.uint8)
    other = pixels.copy()
    other[0, 0] = 1
    ref, cand = _results("ref", png=_png(pixels)), _results("cand", png=_png(other))
    assert not cc.compare(ref, cand).passed
    for kind in (cc.DYNAMIC, cc.FP16, cc.INT4):
        ref.meta["sample"]["decoder_kind"] = kind
        report = cc.compare(ref, cand)
        assert report.passed and kind in _check(report, "sample.png").note
    missing = _results("cand", sample={"status": "skipped", "message": "no cli"})
    assert not cc.compare(_results("ref", png=_png(pixels)), missing).passed


def test_failed_sample_fails_the_comparison():
    failed = _results("cand", sample={"status": "failed", "message": "boom"})
    report = cc.compare(_results("ref"), failed)
    assert not report.passed and "boom" in report.failures()[0].note


# --------------------------------------------------------------------------- files


def test_npz_round_trip_without_pickle(tmp_path):
    res = _results("ref", png=_png(np.eye(4) * 255))
    path = cc.save_results(tmp_path / "r.npz", res)
    with np.load(path, allow_pickle=False) as npz:  # loads with pickle disabled
        assert all(not npz[name].dtype.hasobject for name in npz.files)
    back = cc.load_results(path)
    assert back.meta == res.meta and back.png == res.png
    assert back.inputs.keys() == res.inputs.keys() and back.outputs.keys() == res.outputs.keys()
    for k, v in res.outputs.items():
        assert back.outputs[k].tobytes() == v.tobytes() and back.outputs[k].dtype == v.dtype
    assert cc.compare(res, back).passed
    summary = cc.results_summary(back)
    assert json.loads(json.dumps(summary))["outputs"]["decoder.int8/x_mean"]["shape"] == [5, 16]


def test_bad_results_files(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(cc.CrosscheckError):
        cc.load_results(bad)
    np.savez(tmp_path / "nometa.npz", a=np.zeros(2))
    with pytest.raises(cc.CrosscheckError):
        cc.load_results(tmp_path / "nometa.npz")
    res = _results("ref")
    res.outputs["odd"] = np.array([object()], dtype=object)
    with pytest.raises(cc.CrosscheckError):
        cc.save_results(tmp_path / "obj.npz", res)


# --------------------------------------------------------------------------- summary + CLI


def test_summary_line():
    ok = cc.compare(_results("ref"), _results("cortex-a72"))
    line = cc.summary_line([ok])
    assert line.startswith("crosscheck: 1 target(s) [cortex-a72] vs ref")
    assert "int8-static 0" in line and "fp32 0" in line and line.endswith("; PASS")
    failed = cc.summary_line(
        [ok], failed_runs={"cortex-a76": "segfault"}, skipped={"haswell": "no qemu"}
    )
    assert "cortex-a76 (run failed)" in failed and "skipped [haswell]" in failed
    assert failed.endswith("FAIL")
    assert cc.summary_line([]).endswith("FAIL")
    assert cc.summary_line([], skipped={"cortex-a72": "no qemu"}).endswith("SKIP")


def test_compare_cli_exit_codes_and_last_line(tmp_path, capsys):
    ref = cc.save_results(tmp_path / "ref.npz", _results("ref"))
    good = cc.save_results(tmp_path / "good.npz", _results("good"))
    bad_res = _results("bad")
    bad_res.outputs["decoder.int8/x_mean"][0, 0] += 1
    bad = cc.save_results(tmp_path / "bad.npz", bad_res)

    assert cc.main(["compare", str(ref), str(good), "--json", str(tmp_path / "r.json")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("crosscheck: 1 target(s) [good]") and last.endswith("PASS")
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is True

    assert cc.main(["compare", str(ref), str(good), str(bad)]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "[good, bad]" in last and last.endswith("FAIL")

    assert cc.main(["compare", str(ref), str(tmp_path / "missing.npz")]) == 2
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("crosscheck compare: FAIL")


def test_module_imports_without_torch_onnx_or_pillow():
    code = (
        "import sys, edgevae.crosscheck.run as cc; cc.make_inputs(0); "
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
        Path(argv[argv.index("--out") + 1]).write_bytes(_png(np.zeros((2, 2))))
        return 0

    fake = types.ModuleType("edgevae.cli")
    fake.main = main
    monkeypatch.setitem(sys.modules, "edgevae.cli", fake)
    monkeypatch.setattr(edgevae, "cli", fake, raising=False)
    status = cc.run_sample(tmp_path / "export", tmp_path / "s.png")
    assert status["status"] == "ok", status
    assert calls[0][:3] == ["sample", "--export-dir", str(tmp_path / "export")]
    assert ["--n", "16", "--seed", "0", "--precision", "int8"] == calls[0][3:9]

    fake.main = lambda argv: 1
    assert cc.run_sample(tmp_path / "export", tmp_path / "s.png")["status"] == "failed"

    monkeypatch.setitem(sys.modules, "edgevae.cli", None)  # import raises ImportError
    monkeypatch.delattr(edgevae, "cli")
    status = cc.run_sample(tmp_path / "export", tmp_path / "s.png")
    assert status["status"] == "skipped" and "not importable" in status["message"]


# --------------------------------------------------------------------------- real models


def _tiny_export(path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    path.mkdir()

    def save(name, inp, outs, nodes, inits, d_in):
        graph = helper.make_graph(
            nodes,
            name,
            [helper.make_tensor_value_info(inp, TensorProto.FLOAT, ["N", d_in])],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["N", d]) for o, d in outs],
            initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 9
        onnx.save(model, path / f"{name}.onnx")

    w = {"W": rng.standard_normal((16, 4)).astype(np.float32), "b": np.zeros(4, np.float32)}
    save(
        "encoder.fp32",
        "x",
        [("mu", 4), ("logvar", 4)],
        [
            helper.make_node("Gemm", ["x", "W", "b"], ["mu"]),
            helper.make_node("Neg", ["mu"], ["logvar"]),
        ],
        w,
        16,
    )
    save(
        "decoder.fp32",
        "z",
        [("x_mean", 16)],
        [
            helper.make_node("Gemm", ["z", "V", "c"], ["t"]),
            helper.make_node("Sigmoid", ["t"], ["x_mean"]),
        ],
        {"V": rng.standard_normal((4, 16)).astype(np.float32), "c": np.zeros(16, np.float32)},
        4,
    )
    (path / "manifest.json").write_text(json.dumps({"latent_dim": 4, "image_shape": [4, 4]}))
    return path


def test_run_cli_on_a_tiny_export(tmp_path, capsys):
    export = _tiny_export(tmp_path / "export")
    out = tmp_path / "run.npz"
    assert (
        cc.main(
            ["run", "--export-dir", str(export), "--out", str(out), "--label", "t", "--no-sample"]
        )
        == 0
    )
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("crosscheck run [t]: 6 outputs from 2 models (2 fp32)")
    res = cc.load_results(out)
    assert res.outputs["decoder.fp32/x_mean"].shape == (res.inputs["z"].shape[0], 16)
    assert res.outputs["encoder.fp32/mu@b1"].shape == (4, 4)
    np.testing.assert_allclose(
        res.outputs["encoder.fp32/mu@b1"], res.outputs["encoder.fp32/mu"][:4], atol=1e-5
    )
    assert res.meta["models"]["decoder.fp32"]["kind"] == cc.FP32
    assert json.loads(out.with_suffix(".json").read_text())["label"] == "t"
    again = cc.run(export, label="t2")  # same machine, same numbers
    assert cc.compare(res, again).passed


def test_kinds_of_real_quantized_models(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # calibration's scratch files
    export = _tiny_export(tmp_path / "export")
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
    kinds = {stem: m["kind"] for stem, m in cc.describe_models(export).items()}
    assert kinds == {
        "decoder.fp32": cc.FP32,
        "encoder.fp32": cc.FP32,
        "decoder.int8": cc.STATIC,
        "decoder.int8.dynamic": cc.DYNAMIC,
    }
    res = cc.run(export, label="q")
    assert res.meta["sample"]["decoder_kind"] == cc.STATIC
    assert "decoder.int8.dynamic/x_mean@b1" in res.outputs
