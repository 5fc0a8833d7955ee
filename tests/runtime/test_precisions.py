"""The firmware's models through the runtime: precision "firmware" (the static int8 pair the C
kernel computes) and "int4" (its 4-bit decoder), with their own anomaly thresholds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import edgevae
from edgevae.cli import main
from edgevae.data.core import load_images
from edgevae.errors import ModelFileError, UsageError
from edgevae.firmware.intmodel import load_int_model
from edgevae.firmware.intref import decode_int
from edgevae.firmware.score import load_score_model
from edgevae.runtime import manifest
from edgevae.runtime.model import Model

PAIRS = {
    "int8": ("encoder.int8.onnx", "decoder.int8.onnx"),
    "fp32": ("encoder.fp32.onnx", "decoder.fp32.onnx"),
    "firmware": (manifest.FIRMWARE_ENCODER, manifest.FIRMWARE_DECODER),
    "int4": (manifest.FIRMWARE_ENCODER, manifest.FIRMWARE_DECODER_INT4),
}


@pytest.fixture
def export(tiny_export, tmp_path):
    """A copy of the tiny export that a test may write (thresholds, deleted files)."""
    return shutil.copytree(tiny_export, tmp_path / "export")


def normal_images(n: int = 300) -> np.ndarray:
    """Test digits whose pixels are whole 8-bit levels (what the firmware reads)."""
    test, _ = load_images(None, split="test")
    x = np.rint(test[:n] * 255).astype(np.float32) / np.float32(255)
    return x


@pytest.mark.parametrize("precision", list(PAIRS))
def test_each_precision_runs_its_pair(tiny_export, precision):
    model = edgevae.load(tiny_export, precision)
    assert (model.path("encoder").name, model.path("decoder").name) == PAIRS[precision]
    images = model.sample(4, seed=0)
    assert images.shape == (4, 28, 28) and 0.0 <= images.min() and images.max() <= 1.0
    mu, logvar = model.encode(images)
    assert mu.shape == logvar.shape == (4, model.latent_dim)


@pytest.mark.parametrize(("precision", "bits"), [("firmware", 8), ("int4", 4)])
def test_the_firmware_precisions_draw_what_the_c_kernel_draws(tiny_export, precision, bits):
    """onnxruntime on the firmware's decoder draws the integer reference's pixels (the C
    kernel's, bit for bit: tests/firmware): its logits are the same integers, and its float
    Sigmoid, rounded to 8 bits, lands on the kernel's table within one grey level."""
    model = edgevae.load(tiny_export, precision)
    z = np.random.default_rng(3).standard_normal((64, model.latent_dim)).astype(np.float32)
    got = np.rint(model.decode(z).reshape(64, -1).astype(np.float64) * 255).astype(np.int64)
    want = decode_int(load_int_model(model.path("decoder"), bits), z).astype(np.int64)
    assert np.abs(got - want).max() <= 1
    assert np.mean(got == want) > 0.99


def test_the_4_bit_decoder_is_not_the_8_bit_one(tiny_export):
    four, eight = (edgevae.load(tiny_export, p) for p in ("int4", "firmware"))
    z = np.random.default_rng(4).standard_normal((32, four.latent_dim)).astype(np.float32)
    four, eight = four.decode(z), eight.decode(z)
    assert not np.array_equal(four, eight)
    assert np.abs(four - eight).mean() < 0.1  # the same decoder, 4-bit rounded


def test_unknown_precision_and_a_missing_4_bit_decoder(export):
    with pytest.raises(UsageError, match="int8, fp32, firmware, int4"):
        Model(export, "int2")
    (export / manifest.FIRMWARE_DECODER_INT4).unlink()
    model = Model(export, "int4")
    with pytest.raises(ModelFileError, match=manifest.FIRMWARE_DECODER_INT4):
        model.sample(2)
    assert Model(export, "firmware").sample(2).shape == (2, 28, 28)  # the rest still runs


def test_a_manifest_naming_other_firmware_files_is_followed(export):
    """The manifest's firmware_* names pick the files (as `edgevae firmware` reads them)."""
    shutil.copy(export / manifest.FIRMWARE_DECODER, export / "board.onnx")
    man = json.loads((export / manifest.NAME).read_text())
    man["firmware_decoder"] = "board.onnx"
    (export / manifest.NAME).write_text(json.dumps(man))
    assert Model(export, "firmware").path("decoder").name == "board.onnx"
    assert Model(export, "int4").path("decoder").name == manifest.FIRMWARE_DECODER_INT4


def test_an_int4_threshold_is_the_4_bit_firmwares(export):
    """Calibrated at precision int4, the stored firmware threshold is the 4-bit board's own
    score and goes into a 4-bit deployment, not into the int8 one; the int8 pair's threshold
    goes the other way, and says how to get a 4-bit one."""
    x = normal_images()
    four = edgevae.threshold(export, precision="int4", images=x, fpr=0.05)
    assert four.precision == "int4" and four.firmware is not None
    assert set(four.models) == set(PAIRS["int4"])
    deployed = load_score_model(export, 4, check_threshold=True)
    assert deployed.threshold == four.firmware
    eight = load_score_model(export, 8, check_threshold=True)
    assert eight.threshold is None and "not decoder.int8.static.onnx" in eight.threshold_note

    int8 = edgevae.threshold(export, precision="int8", images=x, fpr=0.05)
    assert int8.firmware is not None and int8.firmware != four.firmware
    assert load_score_model(export, 8, check_threshold=True).threshold == int8.firmware
    note = load_score_model(export, 4, check_threshold=True).threshold_note
    assert "not decoder.int4.static.onnx" in note and "precision int4" in note


def test_cli_sample_and_threshold_at_the_firmware_precisions(export, tmp_path, capsys):
    out = tmp_path / "grid.png"
    args = ["--export-dir", str(export)]
    assert main(["sample", *args, "--n", "4", "--precision", "int4", "--out", str(out)]) == 0
    assert "from the int4 decoder" in capsys.readouterr().out and out.stat().st_size > 0
    assert main(["threshold", *args, "--precision", "int4", "--fpr", "0.05"]) == 0
    firmware = tmp_path / "fw"
    argv = ["firmware", *args, "--out", str(firmware), "--weight-bits", "4", "--score"]
    assert main(argv) == 0
    header = (firmware / "edgevae_weights.h").read_text()
    assert "#define EDGEVAE_THRESHOLD_NATS" in header
    assert main(["sample", *args, "--precision", "int2"]) == 2
    assert "int8, fp32, firmware, int4" in capsys.readouterr().err.replace("'", "")
