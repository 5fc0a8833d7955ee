"""edgevae.crosscheck: model kinds, comparison rules, PNGs, results files, reports and summary,
on synthetic runs (no emulation; the emulated runs themselves are `make test-arm`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from crosscheck_helpers import check_named, fake_onnx, png_bytes, results

from edgevae.crosscheck.compare import (
    DYNAMIC,
    FP16,
    FP32,
    INT4,
    STATIC,
    CrosscheckError,
    compare,
    compare_png,
)
from edgevae.crosscheck.models import model_kind, onnx_graph_info, onnx_op_types
from edgevae.crosscheck.report import compare_files, render_report, report_dict, summary_line
from edgevae.crosscheck.results import load_results, results_summary, save_results
from edgevae.errors import EdgeVAEError

# --------------------------------------------------------------------------- model kinds


@pytest.mark.parametrize(
    ("ops", "kind"),
    [
        (("Gemm", "Relu", "Sigmoid"), FP32),
        (("QuantizeLinear", "DequantizeLinear", "Gemm"), STATIC),
        (("QLinearMatMul",), STATIC),
        (("DynamicQuantizeLinear", "MatMulInteger", "Mul"), DYNAMIC),
    ],
)
def test_op_types_are_read_from_protobuf(ops, kind):
    found = onnx_op_types(fake_onnx(*ops))
    assert found == set(ops)
    assert model_kind(found) == kind


def test_fp16_and_int4_models_are_their_own_kinds():
    fp16 = fake_onnx("Cast", "Gemm", dtypes=(10, 1))
    assert onnx_graph_info(fp16) == ({"Cast", "Gemm"}, {10, 1})
    assert model_kind(*onnx_graph_info(fp16)) == FP16
    assert model_kind(*onnx_graph_info(fake_onnx("MatMulNBits", "Add"))) == INT4
    assert model_kind(*onnx_graph_info(fake_onnx("Gemm", dtypes=(1,)))) == FP32


def test_not_an_onnx_file_is_an_error():
    with pytest.raises(EdgeVAEError):
        onnx_op_types(b"\x3a\xff\xff\xff")


def test_crosscheck_errors_are_input_errors():
    assert issubclass(CrosscheckError, EdgeVAEError) and CrosscheckError.exit_code == 2


# --------------------------------------------------------------------------- compare rules


def test_identical_runs_pass():
    report = compare(results("ref"), results("cand"))
    assert report.passed
    assert all(c.n_different == 0 for c in report.checks)
    assert report.max_diff(STATIC) == 0 and report.max_diff(FP32) == 0


def test_static_int8_must_be_bit_exact():
    cand = results("cand")
    out = cand.outputs["decoder.int8/x_mean"]
    out[0, 0] = np.nextafter(out[0, 0], np.float32(2))  # one ulp
    report = compare(results("ref"), cand)
    check = check_named(report, "decoder.int8/x_mean")
    assert not report.passed and not check.passed
    assert check.n_different == 1 and 0 < check.max_abs_diff < 1e-6
    assert "bit-exact" in check.note
    # the AVX2-without-VNNI reference gets the saturation hint
    assert any("vpmaddubsw" in n for n in report.notes)


def test_fp32_tolerance():
    ref = results("ref")
    small, large = results("a"), results("b")
    small.outputs["decoder.fp32/x_mean"][1, 2] += np.float32(5e-7)
    large.outputs["decoder.fp32/x_mean"][1, 2] += np.float32(3e-6)
    assert compare(ref, small).passed
    report = compare(ref, large)
    assert not report.passed
    assert check_named(report, "decoder.fp32/x_mean").max_abs_diff == pytest.approx(3e-6, rel=0.2)
    assert compare(ref, large, {FP32: 1e-5}).passed


def test_dynamic_int8_is_reported_not_failed():
    cand = results("cand")
    cand.outputs["decoder.int8.dynamic/x_mean"] += np.float32(0.25)
    report = compare(results("ref"), cand)
    check = check_named(report, "decoder.int8.dynamic/x_mean")
    assert report.passed and check.passed
    assert check.max_abs_diff == pytest.approx(0.25, abs=1e-6)
    assert check.tolerance is None
    assert any("may differ across CPUs" in n for n in report.notes)
    assert not compare(results("ref"), cand, {DYNAMIC: 0.1}).passed


def test_missing_output_shape_mismatch_and_different_model_fail():
    cand = results("cand")
    del cand.outputs["decoder.fp32/x_mean"]
    cand.outputs["decoder.int8/x_mean"] = cand.outputs["decoder.int8/x_mean"][:2]
    cand.meta["models"]["decoder.int8.dynamic"]["sha256"] = "other"
    del cand.meta["models"]["decoder.fp32"]
    report = compare(results("ref"), cand)
    notes = {c.name: c.note for c in report.failures()}
    assert "missing" in notes["decoder.fp32/x_mean"]
    assert "shape" in notes["decoder.int8/x_mean"]
    assert "sha256" in notes["decoder.int8.dynamic"]
    assert notes["decoder.fp32"] == "model not run"


def test_nan_positions_must_match():
    ref, same, moved = results("ref"), results("a"), results("b")
    for r in (ref, same):
        r.outputs["decoder.fp32/x_mean"][0, 0] = np.nan
    moved.outputs["decoder.fp32/x_mean"][0, 1] = np.nan
    assert compare(ref, same).passed
    report = compare(ref, moved)
    assert check_named(report, "decoder.fp32/x_mean").max_abs_diff == float("inf")
    assert not report.passed
    assert json.dumps(report.to_dict())  # inf is written as a string, still valid JSON


def test_different_inputs_fail():
    report = compare(results("ref", seed=0), results("cand", seed=1))
    assert not report.passed
    assert any("inputs differ" in c.note for c in report.failures())


def test_platform_differences_and_extra_outputs_are_noted():
    cand = results("cand")
    cand.meta["platform"]["onnxruntime"] = "1.31.0"
    cand.outputs["decoder.fp32/logits"] = np.zeros(3, np.float32)
    report = compare(results("ref"), cand)
    assert report.passed
    assert "onnxruntime 1.31.0 on cand, 1.32.0 on ref" in report.notes
    assert "outputs only in cand: decoder.fp32/logits" in report.notes


# --------------------------------------------------------------------------- PNG


def test_png_bytes_equality_and_pixel_difference():
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    same = compare_png(png_bytes(pixels), png_bytes(pixels))
    assert same.passed and same.max_abs_diff == 0
    other = pixels.copy()
    other[2, 3] += 7
    diff = compare_png(png_bytes(pixels), png_bytes(other))
    assert not diff.passed
    assert diff.max_abs_diff == 7 and diff.n_different == 1
    assert "largest pixel difference 7" in diff.note
    # same pixels, other encoder settings: bytes differ, largest pixel difference 0
    recoded = compare_png(png_bytes(pixels), png_bytes(pixels, compress_level=0))
    assert not recoded.passed and recoded.max_abs_diff == 0
    assert not compare_png(png_bytes(pixels), None).passed
    broken = compare_png(png_bytes(pixels), b"\x89PNG not really")
    assert not broken.passed and "could not be decoded" in broken.note


def test_png_in_compare_and_dynamic_decoder_makes_it_informational():
    pixels = np.zeros((4, 4), np.uint8)
    other = pixels.copy()
    other[0, 0] = 1
    ref = results("ref", png=png_bytes(pixels))
    cand = results("cand", png=png_bytes(other))
    assert not compare(ref, cand).passed
    for kind in (DYNAMIC, FP16, INT4):
        ref.meta["sample"]["decoder_kind"] = kind
        report = compare(ref, cand)
        assert report.passed and kind in check_named(report, "sample.png").note
    missing = results("cand", sample={"status": "skipped", "message": "no cli"})
    assert not compare(results("ref", png=png_bytes(pixels)), missing).passed


def test_failed_sample_fails_the_comparison():
    failed = results("cand", sample={"status": "failed", "message": "boom"})
    report = compare(results("ref"), failed)
    assert not report.passed and "boom" in report.failures()[0].note
    skipped = compare(results("ref"), results("cand"))
    assert "sample PNG not compared: no CLI" in skipped.notes


# --------------------------------------------------------------------------- files


def test_npz_round_trip_without_pickle(tmp_path):
    res = results("ref", png=png_bytes(np.eye(4) * 255))
    path = save_results(tmp_path / "r.npz", res)
    with np.load(path, allow_pickle=False) as npz:  # loads with pickle disabled
        assert all(not npz[name].dtype.hasobject for name in npz.files)
    back = load_results(path)
    assert back.meta == res.meta and back.png == res.png
    assert back.inputs.keys() == res.inputs.keys() and back.outputs.keys() == res.outputs.keys()
    for k, v in res.outputs.items():
        assert back.outputs[k].tobytes() == v.tobytes() and back.outputs[k].dtype == v.dtype
    assert compare(res, back).passed
    summary = results_summary(back)
    assert json.loads(json.dumps(summary))["outputs"]["decoder.int8/x_mean"]["shape"] == [5, 16]
    assert [p.name for p in tmp_path.iterdir()] == ["r.npz"]  # no temporary file left


def test_bad_results_files(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CrosscheckError, match="not a crosscheck results file"):
        load_results(bad)
    np.savez(tmp_path / "nometa.npz", a=np.zeros(2))
    with pytest.raises(CrosscheckError, match="no meta"):
        load_results(tmp_path / "nometa.npz")
    np.savez(tmp_path / "other.npz", meta=np.array(json.dumps({"format": "x/9"})))
    with pytest.raises(CrosscheckError, match="format 'x/9'"):
        load_results(tmp_path / "other.npz")
    with pytest.raises(CrosscheckError, match="no such file"):
        load_results(tmp_path / "missing.npz")
    with pytest.raises(CrosscheckError, match="not a regular file"):
        load_results(tmp_path)
    res = results("ref")
    res.outputs["odd"] = np.array([object()], dtype=object)
    with pytest.raises(CrosscheckError):
        save_results(tmp_path / "obj.npz", res)


# --------------------------------------------------------------------------- reports


def test_summary_line():
    ok = compare(results("ref"), results("cortex-a72"))
    line = summary_line([ok])
    assert line.startswith("crosscheck: 1 target(s) [cortex-a72] vs ref")
    assert "int8-static 0" in line and "fp32 0" in line and line.endswith("; PASS")
    failed = summary_line(
        [ok], failed_runs={"cortex-a76": "segfault"}, skipped={"haswell": "no qemu"}
    )
    assert "cortex-a76 (run failed)" in failed and "skipped [haswell]" in failed
    assert failed.endswith("FAIL")
    assert summary_line([]).endswith("FAIL")
    assert summary_line([], skipped={"cortex-a72": "no qemu"}).endswith("SKIP")


def test_compare_files_report_and_rendering(tmp_path):
    ref = save_results(tmp_path / "ref.npz", results("ref"))
    bad = results("bad")
    bad.outputs["decoder.int8/x_mean"][0, 0] += 1
    paths = [save_results(tmp_path / f"{r.label}.npz", r) for r in (results("good"), bad)]
    reports = compare_files(ref, paths, {FP32: 1e-5})
    assert [r.passed for r in reports] == [True, False]
    lines = render_report(reports[1])
    assert lines[0].startswith("bad vs ref: FAIL")
    assert any(line.startswith("  FAIL decoder.int8/x_mean") for line in lines)
    data = json.loads(json.dumps(report_dict(reports, {FP32: 1e-5})))
    assert data["passed"] is False and data["tolerances"][FP32] == 1e-5
    assert data["summary"].endswith("FAIL") and len(data["reports"]) == 2
