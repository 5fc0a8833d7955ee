"""`edgevae bench` and `edgevae parity` on the tiny export: keys, gates, files, picture sizes.

No timing assertions: the machine running the tests may be busy. Every test copies the
session export into its own tmp dir before writing anything.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from support.firmware import parity_rows_with_c

from edgevae.bench import parity, peak
from edgevae.bench import report as benchreport
from edgevae.bench import run as bench
from edgevae.cli import main
from edgevae.runtime import images

# Small enough to keep each bench call to a few seconds.
FAST = ["--batch-sizes", "1,4", "--k", "8", "--limit", "16", "--rounds", "3"]
ROW_KEYS = {
    "name",
    "runtime",
    "precision",
    "recipe",
    "encoder_file",
    "decoder_file",
    "note",
    "format",
    "ceiling",
    "status",
    "reason",
    "size_kb",
    "neg_elbo",
    "nll_iw",
    "nll_delta",
    "kl",
    "active_units",
    "recon_mse",
    "recon_nats",
    "decoder_max_abs_diff_px",
    "decoder_mean_abs_diff_px",
    "accuracy_seconds",
    "decoder",
    "encoder",
}
LATENCY_KEYS = {
    "p50_us",
    "p90_us",
    "p99_us",
    "spread",
    "n_samples",
    "images_per_s",
    "gmac_per_s",
    "pct_of_peak",
    "speedup_vs_fp32",
    "cpu_p50_us",
    "cpu_speedup_vs_fp32",
    "cpu_pct_of_peak",
    "share_of_ceiling",
    "cpu_share_of_ceiling",
}
TOP_KEYS = {
    "schema",
    "created",
    "wall_seconds",
    "export_dir",
    "run_dir",
    "data",
    "split",
    "n_images",
    "k",
    "seed",
    "diff_z",
    "threads",
    "batch_sizes",
    "cpu",
    "versions",
    "peak",
    "macs_per_image",
    "budget_nats",
    "budget_from",
    "timing",
    "noise",
    "reference",
    "notes",
    "rows",
}


@pytest.fixture()
def export(tiny_export, tmp_path) -> Path:
    dst = tmp_path / "export"
    shutil.copytree(tiny_export, dst)
    return dst


@pytest.fixture(scope="module")
def report(tiny_export, tiny_run):
    """One library run shared by the read-only checks (nothing is written)."""
    return bench.run_bench(
        tiny_export, batch_sizes=[1, 4], k=8, limit=16, run_dir=tiny_run, rounds=3, round_ms=2
    )


def test_json_has_the_documented_keys(report):
    d = report.to_dict()
    assert set(d) == TOP_KEYS
    names = [r["name"] for r in d["rows"]]
    assert names[:5] == [
        "torch fp32", "ORT fp32", "ORT int8 (static-pc-rr)", "ORT int8 static", "ORT int4 static"
    ]  # fmt: skip
    four = d["rows"][4]
    assert four["precision"] == "int4" and four["recipe"] == "firmware-int4"
    assert (four["encoder_file"], four["decoder_file"]) == (
        "encoder.int8.static.onnx", "decoder.int4.static.onnx"
    )  # fmt: skip
    assert four["nll_delta"] != d["rows"][3]["nll_delta"]  # its own decoder, the same noise
    for row in d["rows"]:
        assert set(row) == ROW_KEYS
        assert row["status"] == "passed", row
        assert set(row["decoder"]) == {"1", "4"}
        for lat in (*row["decoder"].values(), *row["encoder"].values()):
            assert set(lat) == LATENCY_KEYS
    assert d["rows"][1]["nll_delta"] == 0.0
    assert d["rows"][1]["decoder"]["4"]["speedup_vs_fp32"] == 1.0
    for key in ("fp32_gmac_per_s", "int8_gmac_per_s", "shape", "threads", "formats", "ceiling"):
        assert key in d["peak"]
    # Each int8 row names its GEMM format and that format's ceiling; the share follows.
    static = d["rows"][3]
    assert (
        static["format"] == "u8s8-7bit" and static["ceiling"] == d["peak"]["ceiling"]["u8s8-7bit"]
    )
    # The static row is the firmware pair: its own encoder, timed on its own.
    assert static["encoder_file"] == "encoder.int8.static.onnx"
    assert static["encoder"]["4"]["p50_us"] != d["rows"][2]["encoder"]["4"]["p50_us"]
    lat = static["decoder"]["4"]
    assert lat["cpu_share_of_ceiling"] == pytest.approx(
        lat["cpu_speedup_vs_fp32"] / static["ceiling"]
    )
    assert d["rows"][1]["format"] is None and d["rows"][1]["ceiling"] is None
    assert d["macs_per_image"] == {"decoder": 4 * 64 + 64 * 784, "encoder": 784 * 64 + 64 * 8}
    assert d["noise"]["verdict"].split(":")[0] in ("quiet", "moderate", "noisy")
    json.dumps(d, allow_nan=False)  # strict JSON: no NaN anywhere


def test_the_4_bit_row_is_not_held_to_the_int8_budget(tiny_export, tiny_run):
    """Under a budget of 1e-9 nats the int8 rows are held to it; the 4-bit pair, which costs
    more than that, is reported, not failed (its cost is what the row is there to show)."""
    report = bench.run_bench(
        tiny_export, batch_sizes=[1], k=8, limit=16, torch_row=False, rounds=1, round_ms=1,
        peak=False, max_delta_nats=1e-9,
    )  # fmt: skip
    rows = {r.name: r for r in report.rows}
    four = rows["ORT int4 static"]
    assert four.status == "passed" and "not held to the int8 budget" in four.note
    assert four.nll_delta is not None and math.isfinite(four.nll_delta) and four.nll_delta > 1e-9
    held = [r for name, r in rows.items() if name not in ("ORT fp32", "ORT int4 static")]
    assert all(r.status == "passed" or "budget" in (r.reason or "") for r in held)


def test_every_key_is_documented_in_the_module_docstring(report):
    doc = bench.__doc__ or ""
    d = report.to_dict()
    keys = set(d) | set(d["rows"][0]) | set(d["rows"][0]["decoder"]["1"])
    missing = sorted(k for k in keys if f"`{k}`" not in doc)
    assert not missing


def test_markdown_and_plot(report, tmp_path):
    md = benchreport.to_markdown(report)
    assert "| ORT int8 static |" in md and "## Latency" in md
    from edgevae.bench.plot import bench_plot

    out = tmp_path / "bench.png"
    bench_plot(report, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_cli_writes_json_markdown_plot(export, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(
        [
            "bench",
            "--export-dir",
            str(export),
            *FAST,
            "--no-torch",
            "--json",
            str(out / "b.json"),
            "--markdown",
            str(out / "b.md"),
            "--plot",
            str(out / "b.png"),
        ]
    )
    assert rc == 0
    d = json.loads((out / "b.json").read_text())
    assert set(d) == TOP_KEYS
    assert [r["name"] for r in d["rows"]][0] == "ORT fp32"
    assert not any("torch" in n for n in d["notes"])  # --no-torch: no row, no note
    assert (out / "b.md").read_text().startswith("# edgevae bench")
    assert (out / "b.png").stat().st_size > 5000
    text = capsys.readouterr().out
    assert "Accuracy" in text and "Latency" in text and "timing noise" in text


def test_gate_min_speedup_fails(export, capsys):
    rc = main(["bench", "--export-dir", str(export), *FAST, "--no-torch", "--min-speedup", "1000"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "--min-speedup: int8 decoder speedup" in err and "is below 1000" in err
    assert len([ln for ln in err.splitlines() if "error:" in ln]) == 1


def test_gate_max_delta_fails(export, capsys):
    rc = main(["bench", "--export-dir", str(export), *FAST, "--no-torch", "--max-delta-nats", "-1"])
    assert rc == 1
    assert "--max-delta-nats: int8 NLL delta" in capsys.readouterr().err


def test_gates_pass_when_met(report):
    assert benchreport.check_gates(report, None, None) == []
    assert benchreport.check_gates(report, 1e-6, 1e6) == []
    [slow] = benchreport.check_gates(report, 1e6, None)
    [inexact] = benchreport.check_gates(report, None, -1.0)
    assert (slow.param, inexact.param) == ("min_speedup", "max_delta_nats")
    assert str(inexact).startswith("max_delta_nats: int8 NLL delta")


def test_status_failed_validation_and_failed(report, export, tiny_run):
    """A budget below the int8 delta marks rows; a broken model file is 'failed'."""
    (export / "decoder.int8.static.onnx").write_bytes(b"not an onnx model")
    r = bench.run_bench(
        export,
        batch_sizes=[2],
        k=4,
        limit=8,
        torch_row=False,
        max_delta_nats=-1.0,
        rounds=2,
        round_ms=1,
        peak=False,
    )
    rows = {row.name: row for row in r.rows}
    assert rows["ORT fp32"].status == "passed"  # the reference is not held to the budget
    assert rows["ORT int8 (static-pc-rr)"].status == benchreport.FAILED_VALIDATION
    assert "budget -1" in rows["ORT int8 (static-pc-rr)"].reason
    assert rows["ORT int8 static"].status == benchreport.FAILED
    assert rows["ORT int8 static"].decoder == {}
    assert r.budget_from == "max_delta_nats"


def test_bad_options_are_usage_errors(export, capsys):
    assert main(["bench", "--export-dir", str(export), "--batch-sizes", "0"]) == 2
    assert main(["bench", "--export-dir", str(export), "--k", "0"]) == 2
    assert main(["bench", "--export-dir", str(export / "nope")]) == 1
    err = capsys.readouterr().err
    assert "--batch-sizes" in err and "--k" in err


def test_bench_and_parity_modules_do_not_import_torch():
    import subprocess

    code = (
        "import sys; import edgevae.bench.run, edgevae.bench.parity, edgevae.bench.plot; "
        "import edgevae.paper.plots, edgevae.charts; "
        "import edgevae.cli.bench; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_peak_probe_model_runs():
    p = peak.peak_probe(threads=1, shape=(64, 64, 64), runs=2)
    assert p["fp32_gmac_per_s"] > 0 and p["int8_gmac_per_s"] > 0
    assert set(p["formats"]) == set(peak.FORMATS)
    assert set(p["ceiling"]) == set(peak.FORMATS) - {"fp32"}
    fp32 = p["formats"]["fp32"]["cpu_gmac_per_s"]
    for fmt, ratio in p["ceiling"].items():
        assert ratio == pytest.approx(p["formats"][fmt]["cpu_gmac_per_s"] / fp32)


def test_peak_probe_only_the_formats_asked_and_fp32():
    p = peak.peak_probe(threads=1, shape=(32, 32, 32), runs=1, formats=("u8u8",))
    assert set(p["formats"]) == {"fp32", "u8u8"} and set(p["ceiling"]) == {"u8u8"}
    with pytest.raises(ValueError, match="unknown GEMM formats"):
        peak.peak_probe(shape=(8, 8, 8), runs=1, formats=("u4s4",))


@pytest.mark.parametrize(
    ("fmt", "low", "high"),
    [("u8s8", -128, 127), ("u8s8-7bit", -64, 63), ("u8u8", 0, 255), ("s8s8", -128, 127)],
)
def test_peak_probe_weights_cover_the_format_range(fmt, low, high):
    import onnx
    from onnx import numpy_helper

    model, a = peak._probe_models(16, 64, 64, (fmt,))[fmt]
    b = numpy_helper.to_array(onnx.load_from_string(model).graph.initializer[0])
    assert b.min() >= low and b.max() <= high and b.min() < low + 8 and b.max() > high - 8
    assert a.dtype == (np.int8 if fmt == "s8s8" else np.uint8)


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("n", [1, 5])
def test_parity_grid_dims(tiny_export, tiny_run, n):
    pic, rows = parity.parity_grid(tiny_export, n=n, run_dir=tiny_run, firmware=None)
    shown = [r for r in rows if r.status == "ok"]
    assert [r.name for r in shown] == [
        "torch fp32", "ORT fp32", "ORT int8", "ORT int8 static", "ORT int4 static"
    ]  # fmt: skip
    assert pic.dtype == np.uint8
    pad = images.PAD
    assert pic.shape == (
        2 * len(shown) * (28 + pad) + pad,
        n * (28 + pad) + pad + parity.LABEL_WIDTH,
    )
    assert pic.shape == parity.picture_size(n, (28, 28), len(shown))
    by = {r.name: r for r in rows}
    assert by["ORT fp32"].max_abs_px == 0 and by["torch fp32"].max_abs_px <= 1
    assert by["C firmware"].status == "skipped"


def test_parity_unlabelled_and_reference_diff_is_black(tiny_export):
    pic, rows = parity.parity_grid(tiny_export, n=3, torch_row=False, firmware=None, labels=False)
    assert pic.shape == parity.picture_size(3, (28, 28), 4, labels=False)
    pad = images.PAD
    ref_diff = pic[pad + 28 + pad : pad + 2 * 28 + pad, :]  # the ORT fp32 row's diff map
    assert ref_diff.max() == 0


def test_parity_firmware_row_with_a_fake_binary(tiny_export, tmp_path):
    """A stand-in 'firmware' that decodes with ORT int8 static: exact vs that row."""
    fake = tmp_path / "fake_fw.py"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "from edgevae.runtime.session import open_session\n"
        "from edgevae.runtime.images import to_uint8\n"
        "z = np.array([[float(v) for v in ln.split()] for ln in sys.stdin if ln.strip()],"
        " dtype=np.float32)\n"
        f"s = open_session(Path({str(tiny_export)!r}) / 'decoder.int8.static.onnx', 'decoder')\n"
        "for row in to_uint8(s.run(['x_mean'], {'z': z})[0]):\n"
        "    print(' '.join(str(int(v)) for v in row))\n"
    )
    fake.chmod(0o755)
    pic, rows = parity.parity_grid(tiny_export, n=4, torch_row=False, firmware=fake)
    fw = rows[-1]
    assert fw.name == "C firmware" and fw.status == "ok", fw
    assert fw.exact_vs_static is True and fw.max_abs_vs_static_px == 0
    assert fw.vs_static == "ORT int8 static"
    assert pic.shape == parity.picture_size(4, (28, 28), 5)


@pytest.mark.parametrize("bits", [8, 4])
def test_parity_with_the_real_firmware_of_either_width(tiny_export, tmp_path, bits):
    """The C host decoder built with 8- or 4-bit weights equals the static row of its width
    on every pixel, and the parity table says which row that is."""
    by = parity_rows_with_c(tiny_export, tmp_path, 16, bits)
    assert by["C firmware"].status == "ok", by["C firmware"].note
    assert by["C firmware"].exact_vs_static is True
    assert by["C firmware"].vs_static == f"ORT int{bits} static"  # (a tie would name int8)


def test_parity_skips_a_static_row_whose_model_the_export_lacks(tiny_export, tmp_path):
    export = shutil.copytree(tiny_export, tmp_path / "e")
    (export / "decoder.int4.static.onnx").unlink()
    pic, rows = parity.parity_grid(export, n=2, torch_row=False, firmware=None)
    by = {r.name: r for r in rows}
    assert by["ORT int4 static"].status == "skipped"
    assert "no decoder.int4.static.onnx" in by["ORT int4 static"].note
    assert by["ORT int8 static"].status == "ok"
    assert pic.shape == parity.picture_size(2, (28, 28), 3)


def test_parity_firmware_failure_is_a_row_not_a_crash(tiny_export, tmp_path):
    bad = tmp_path / "bad_fw.sh"
    bad.write_text("#!/bin/sh\necho 'edgevae_decode: line 1: expected 4 numbers' >&2\nexit 1\n")
    bad.chmod(0o755)
    _, rows = parity.parity_grid(tiny_export, n=2, torch_row=False, firmware=bad)
    assert rows[-1].status == "failed" and "expected 4 numbers" in rows[-1].note


def test_parity_cli(export, tmp_path, capsys):
    out = tmp_path / "p.png"
    rc = main(
        [
            "parity",
            "--export-dir",
            str(export),
            "--out",
            str(out),
            "--n",
            "3",
            "--firmware",
            str(tmp_path / "absent"),
        ]
    )
    assert rc == 0 and out.read_bytes()[:4] == b"\x89PNG"
    text = capsys.readouterr().out
    assert "C firmware" in text and "not found" in text


def test_parity_without_firmware_skips_the_c_row_and_says_how_to_get_one(export, tmp_path, capsys):
    out = tmp_path / "p.png"
    assert main(["parity", "--export-dir", str(export), "--out", str(out), "--n", "2"]) == 0
    text = capsys.readouterr().out
    assert "edgevae firmware" in text and "add --firmware PATH" in text
    _, rows = parity.parity_grid(export, n=2, torch_row=False)  # the library's default: no row
    assert rows[-1].name == "C firmware" and rows[-1].status == "skipped"
    assert "`edgevae firmware` prints the cc line" in rows[-1].note


# --------------------------------------------------------------------------- option errors


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"k": 0}, "k"),
        ({"threads": 0}, "threads"),
        ({"rounds": 0}, "rounds"),
        ({"batch_sizes": [4, 0]}, "batch_sizes"),
        ({"round_ms": 0.0}, "round_ms"),
    ],
)
def test_library_option_errors_name_the_argument_not_a_flag(tiny_export, kwargs, param):
    from edgevae.errors import UsageError

    with pytest.raises(UsageError) as info:
        bench.run_bench(tiny_export, **kwargs)
    assert info.value.param == param and str(info.value).startswith(f"{param}: must be")
    assert "--" not in str(info.value)


@pytest.mark.parametrize(("kwargs", "param"), [({"n": 0}, "n"), ({"amplify": 0.0}, "amplify")])
def test_parity_option_errors_name_the_argument(tiny_export, kwargs, param):
    from edgevae.errors import UsageError

    with pytest.raises(UsageError) as info:
        parity.parity_grid(tiny_export, **kwargs)
    assert info.value.param == param and "--" not in str(info.value)


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["bench", "--limit", "-1"], "--limit"),
        (["bench", "--threads", "0"], "--threads"),
        (["bench", "--rounds", "0"], "--rounds"),
        (["bench", "--batch-sizes", "4,0"], "--batch-sizes"),
        (["bench", "--min-speedup", "-1"], "--min-speedup"),
        (["parity", "--n", "0"], "--n"),
        (["parity", "--amplify", "0"], "--amplify"),
    ],
)
def test_cli_option_errors_are_one_line_naming_the_flag(export, tmp_path, capsys, args, flag):
    argv = [*args, "--export-dir", str(export)]
    if args[0] == "parity":
        argv += ["--out", str(tmp_path / "p.png")]
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and flag in err[0], err
    assert not (tmp_path / "p.png").exists()


def test_help_lists_the_valid_ranges(capsys):
    for command in ("bench", "parity"):
        assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "x>=1" in text and "x>=0" in text


def test_profile_names_the_fused_kernels(tiny_export):
    from edgevae.bench.profile import profile_model

    p = profile_model(tiny_export / "decoder.int8.onnx", "decoder", 4, runs=5, warmup=2)
    ops = [n.op for n in p.nodes]
    assert "QGemm" in ops and "Sigmoid" in ops  # QDQ Gemms run fused into integer kernels
    assert p.total_us > 0 and all(n.us >= 0 for n in p.nodes)
    assert set(p.to_dict()) == {"path", "batch", "runs", "total_us", "other_us", "nodes"}
