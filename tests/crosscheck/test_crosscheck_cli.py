"""`edgevae crosscheck run|compare` through the one Typer app (`edgevae.cli.main`): exit status
0 PASS / 1 FAIL / 2 usage or input error, and the summary as the last line of stdout."""

from __future__ import annotations

import json

import pytest
from crosscheck_helpers import results, tiny_fp32_export

from edgevae.cli import main
from edgevae.crosscheck.compare import STATIC, compare
from edgevae.crosscheck.results import load_results, save_results


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_compare_exit_codes_and_last_line(tmp_path, capsys):
    ref = save_results(tmp_path / "ref.npz", results("ref"))
    good = save_results(tmp_path / "good.npz", results("good"))
    bad_res = results("bad")
    bad_res.outputs["decoder.int8/x_mean"][0, 0] += 1
    bad = save_results(tmp_path / "bad.npz", bad_res)
    report = tmp_path / "out" / "r.json"

    assert main(["crosscheck", "compare", str(ref), str(good), "--json", str(report)]) == 0
    last = _last_line(capsys.readouterr().out)
    assert last.startswith("crosscheck: 1 target(s) [good]") and last.endswith("PASS")
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["summary"] == last

    assert main(["crosscheck", "compare", str(ref), str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "bad vs ref: FAIL" in out
    assert "[good, bad]" in _last_line(out) and _last_line(out).endswith("FAIL")


def test_compare_tolerance_options(tmp_path, capsys):
    ref = save_results(tmp_path / "ref.npz", results("ref"))
    cand = results("cand")
    cand.outputs["decoder.fp32/x_mean"][0, 0] += 3e-6
    cand.outputs["decoder.int8.dynamic/x_mean"][0, 0] += 0.25
    cand = save_results(tmp_path / "cand.npz", cand)
    args = ["crosscheck", "compare", str(ref), str(cand)]
    assert main(args) == 1
    assert main([*args, "--fp32-tol", "1e-5"]) == 0
    assert "fp32" in _last_line(capsys.readouterr().out)
    assert main([*args, "--fp32-tol", "1e-5", "--dynamic-tol", "0.1"]) == 1
    assert main([*args, "--fp32-tol", "-1"]) == 2
    assert "--fp32-tol" in capsys.readouterr().err


def test_compare_input_and_usage_errors(tmp_path, capsys):
    ref = save_results(tmp_path / "ref.npz", results("ref"))
    assert main(["crosscheck", "compare", str(ref), str(tmp_path / "missing.npz")]) == 2
    captured = capsys.readouterr()
    assert _last_line(captured.out).startswith("crosscheck compare: FAIL")
    assert "error:" in captured.err and "missing.npz: no such file" in captured.err
    assert main(["crosscheck", "compare", str(ref)]) == 2  # no candidate
    assert "error:" in capsys.readouterr().err


def test_run_on_a_tiny_export(tmp_path, capsys):
    out = tmp_path / "run.npz"
    export = tiny_fp32_export(tmp_path / "export")
    args = ["crosscheck", "run", "--export-dir", str(export), "--out", str(out)]
    assert main([*args, "--label", "t", "--no-sample"]) == 0
    last = _last_line(capsys.readouterr().out)
    assert last.startswith("crosscheck run [t]: 6 outputs from 2 models (2 fp32)")
    assert load_results(out).meta["sample"]["status"] == "skipped"
    assert json.loads(out.with_suffix(".json").read_text())["label"] == "t"

    summary = tmp_path / "summary.json"
    again = tmp_path / "again.npz"
    assert (
        main([*args[:-1], str(again), "--no-sample", "--inputs", str(out), "--json", str(summary)])
        == 0
    )
    assert json.loads(summary.read_text())["format"] == "edgevae.crosscheck/1"
    assert main(["crosscheck", "compare", str(out), str(again)]) == 0


def test_run_errors(tmp_path, capsys):
    assert main(["crosscheck", "run", "--out", str(tmp_path / "r.npz"), "--seed", "-1"]) == 2
    assert "--seed" in capsys.readouterr().err
    missing = tmp_path / "nowhere"
    assert (
        main(["crosscheck", "run", "--export-dir", str(missing), "--out", str(tmp_path / "r.npz")])
        == 2
    )
    captured = capsys.readouterr()
    assert _last_line(captured.out).startswith("crosscheck run: FAIL")
    assert f"export dir {missing} does not exist" in captured.err
    assert main(["crosscheck", "run", "--out", str(tmp_path)]) == 2  # a directory
    assert "--out" in capsys.readouterr().err
    assert main(["crosscheck", "run"]) == 2  # --out is required


@pytest.mark.slow
def test_run_with_the_sample_png_twice_is_identical(tmp_path, capsys, tiny_export):
    """The board's path: `edgevae crosscheck run` runs `edgevae sample` in-process."""
    runs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.npz"
        assert main(["crosscheck", "run", "--export-dir", str(tiny_export), "--out", str(out)]) == 0
        assert "sample: ok: edgevae sample" in capsys.readouterr().out
        assert out.with_suffix(".sample.png").is_file()
        runs.append(load_results(out))
    assert runs[0].png is not None and runs[0].png == runs[1].png
    assert runs[0].meta["sample"]["decoder_kind"] == STATIC
    assert compare(runs[0], runs[1]).passed
