"""`edgevae bench` and `edgevae parity` on a conditional export: accuracy on -log p(x | y) with
the held-out images' labels, timing fed with labels, the parity picture's (z, label) pairs."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
from support.conditional import RECIPE, quantized_copy
from support.firmware import parity_rows_with_c

import edgevae
from edgevae.bench import latency, parity
from edgevae.bench import run as bench
from edgevae.bench.report import REFERENCE
from edgevae.bench.rows import recipe_contenders
from edgevae.cli import main
from edgevae.runtime import images, manifest
from edgevae.runtime.generate import prior_z


@pytest.fixture(scope="module")
def cond_int8(tiny_cond_export, tiny_cond_run, tmp_path_factory):
    return quantized_copy(tiny_cond_export, tiny_cond_run, tmp_path_factory.mktemp("q") / "e")


@pytest.fixture(scope="module")
def report(cond_int8, tiny_cond_run):
    return bench.run_bench(
        cond_int8, batch_sizes=[1, 4], k=8, limit=16, run_dir=tiny_cond_run, rounds=3,
        round_ms=2, peak=False,
    )  # fmt: skip


def test_every_row_is_scored_on_the_conditional_nll(report, cond_int8):
    rows = {r.name: r for r in report.rows}
    assert list(rows) == [
        "torch fp32", REFERENCE, f"ORT int8 ({RECIPE})", "ORT int8 static", "ORT int4 static"
    ]  # fmt: skip
    assert all(r.status == "passed" for r in rows.values()), [r.reason for r in rows.values()]
    assert rows["torch fp32"].nll_delta == pytest.approx(0.0, abs=1e-3)
    # The reference is the fp32 model's -log p(x | y) on the export's held-out images.
    model = edgevae.load(cond_int8, "fp32")
    x, y = model.heldout()[:16], model.heldout_labels()[:16]
    want = model.evaluate(x, k=8, labels=y).nll_iw
    assert rows[REFERENCE].nll_iw == pytest.approx(want, rel=1e-6)
    for r in rows.values():  # timed with labels: both roles, both batch sizes
        assert set(r.decoder) == {"1", "4"} and set(r.encoder) == {"1", "4"}
    # MACs count the one-hot label: 12-32-784 decoder, 794-32-(2+2) encoder.
    assert report.macs_per_image == {"decoder": 12 * 32 + 32 * 784, "encoder": 794 * 32 + 32 * 4}


def test_macs_of_an_unconditional_manifest_are_unchanged():
    man = {"latent_dim": 20, "image_shape": [28, 28], "model": {"hidden": [400]}}
    assert latency.layer_macs(man) == {"decoder": 321_600, "encoder": 784 * 400 + 400 * 2 * 20}


def test_recipes_are_recreated_with_labelled_calibration(cond_int8, tmp_path):
    man = manifest.read(cond_int8)
    inputs = bench._inputs(cond_int8, None, 8, None, lambda *a: None)
    train, train_y = inputs.train()
    assert train_y.shape == (len(train), 10) and inputs.y.shape == (8, 10)
    (c,) = recipe_contenders(
        cond_int8, tmp_path, man, train, ["dynamic-pt"], 1, lambda *a: None, train_y
    )
    assert c.row.status != "failed", c.row.reason
    mu, _ = c.encode(inputs.x, inputs.y)
    assert mu.shape == (8, 2) and c.decode(mu, inputs.y).shape == (8, 784)


def test_parity_decodes_each_column_with_its_class(cond_int8, tiny_cond_run, tmp_path):
    """Every decoder gets the same (z, class i mod 10) pairs; a stand-in firmware that reads the
    class index, then z, and decodes with ORT int8 static is exact against that row."""
    fake = tmp_path / "fake_fw.py"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "from edgevae.runtime.session import open_session\n"
        "from edgevae.runtime.images import to_uint8\n"
        "rows = np.array([[float(v) for v in ln.split()] for ln in sys.stdin if ln.strip()])\n"
        "z = rows[:, 1:].astype(np.float32)\n"
        "y = np.eye(10, dtype=np.float32)[rows[:, 0].astype(int)]\n"
        f"s = open_session(Path({str(cond_int8)!r}) / 'decoder.int8.static.onnx', 'decoder',"
        " conditional=True)\n"
        "for row in to_uint8(s.run(['x_mean'], {'z': z, 'y': y})[0]):\n"
        "    print(' '.join(str(int(v)) for v in row))\n"
    )
    fake.chmod(0o755)
    pic, rows = parity.parity_grid(cond_int8, n=12, run_dir=tiny_cond_run, firmware=fake)
    by = {r.name: r for r in rows}
    assert all(r.status == "ok" for r in rows), [(r.name, r.note) for r in rows]
    assert by["torch fp32"].max_abs_px <= 1 and by["ORT fp32"].max_abs_px == 0
    assert by["C firmware"].exact_vs_static is True
    assert pic.shape == parity.picture_size(12, (28, 28), 6)
    # The reference row is column i's z decoded with class i mod 10.
    model = edgevae.load(cond_int8, "fp32")
    z = prior_z(12, 2, 0)
    ref = images.to_uint8(model.decode(z, np.arange(12) % 10)).reshape(12, 28, 28)
    pad = images.PAD
    top = pad + 2 * (28 + pad)  # the ORT fp32 row: below torch's images and its diff map
    left = parity.LABEL_WIDTH + pad
    np.testing.assert_array_equal(pic[top : top + 28, left : left + 28], ref[0])
    step = 28 + pad
    np.testing.assert_array_equal(pic[top : top + 28, left + step : left + step + 28], ref[1])


def test_parity_with_the_real_conditional_firmware(cond_int8, tmp_path):
    """The C host decoder built from this export (label, then z, on each line) equals the
    ORT int8 static row on every pixel of every (z, class) column."""
    by = parity_rows_with_c(cond_int8, tmp_path, 12)
    assert by["C firmware"].status == "ok", by["C firmware"].note
    assert by["C firmware"].exact_vs_static is True


def test_bench_and_parity_cli_on_a_conditional_export(cond_int8, tmp_path, capsys):
    exp = tmp_path / "e"
    shutil.copytree(cond_int8, exp)
    args = ["--batch-sizes", "1", "--k", "4", "--limit", "8", "--rounds", "2"]
    assert main(["bench", "--export-dir", str(exp), *args, "--no-torch"]) == 0
    assert main(["parity", "--export-dir", str(exp), "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").is_file()
    capsys.readouterr()
