"""Conditional decoders on the MCU: the one-hot label becomes one bias row per class, the C
API takes a class index (edgevae_decode_label), bit-exact with the numpy reference and
onnxruntime, int8 and 4-bit."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from support.firmware import Variant, checksum_line, make, need_tools, sample_latents
from support.firmware_int4 import label_text, make_conditional, ort_pixels_zy

from edgevae.errors import ModelFileError
from edgevae.firmware.deploy import write_firmware
from edgevae.firmware.intref import decode_int, demo_latents, fnv1a32, load_int_model

CLASSES = 10
VARIANTS = {
    "cond": Variant("cond"),  # 8 (+10) - 64 - 784
    "cond-odd": Variant("cond-odd", hidden=(37, 22), latent=5, out=99, seed=3),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(name, bits) -> (export folder, model path, weights dir, build dir), host built."""
    need_tools("gcc", "make")
    root = tmp_path_factory.mktemp("cond")
    cache: dict[tuple, tuple] = {}

    def get(name: str, bits: int = 8):
        if (name, bits) not in cache:
            export = root / name / "export"
            if not (export / "manifest.json").exists():
                make_conditional(export, VARIANTS[name], CLASSES, int4=True)
            out = root / name / f"gen{bits}"
            report = write_firmware(export, out, sources=False, command="t", weight_bits=bits)
            build = root / name / f"build{bits}"
            make(out, build, str(build / "host" / "edgevae_decode"))
            cache[(name, bits)] = (export, export / report.source, out, build, report)
        return cache[(name, bits)]

    return get


def _run(program, text: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(program)], input=text, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_labels_select_a_bias_row_bit_exactly(built, name, bits):
    _, path, _, build, report = built(name, bits)
    model = load_int_model(path, bits)
    assert model.classes == CLASSES and model.class_names == [f"c{i}" for i in range(10)]
    assert model.latent_dim == VARIANTS[name].latent  # the label's columns are not MACs
    assert report.classes == model.class_names
    z = sample_latents(model.latent_dim, n=600)
    labels = np.arange(len(z)) % CLASSES
    ref = decode_int(model, z, labels)
    assert np.array_equal(ort_pixels_zy(path, z, labels, CLASSES), ref)
    got = _run(build / "host" / "edgevae_decode", label_text(z, labels))
    assert got.returncode == 0, got.stderr
    pixels = np.array(got.stdout.split(), dtype=np.int64).reshape(len(z), -1)
    assert np.array_equal(pixels, ref)
    # the label matters: another label gives another image for most latents
    other = decode_int(model, z, (labels + 1) % CLASSES)
    assert (other != ref).any(axis=1).mean() > 0.5


def test_header_api_and_run_line(built):
    _, _, weights, _, report = built("cond")
    header = (weights / "edgevae_weights.h").read_text()
    assert "#define EDGEVAE_NUM_CLASSES 10" in header
    assert "edgevae_class_bias" in (weights / "edgevae_weights.c").read_text()
    assert report.run_command.startswith("printf '" + " ".join(["0"] * 9) + "\\n'")
    assert report.macs == 8 * 64 + 64 * 784
    assert report.flash_bytes > 10 * 64 * 4  # the class rows are in flash


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("10 0 0 0 0 0 0 0 0", "the label must be an integer"),
        ("-1 0 0 0 0 0 0 0 0", "the label must be an integer"),
        ("2.5 0 0 0 0 0 0 0 0", "the label must be an integer"),
        ("0 0 0 0 0 0 0 0", "expected 9 numbers, got 8"),
    ],
)
def test_bad_labels_stop_with_a_message(built, line, message):
    _, _, _, build, _ = built("cond")
    result = _run(build / "host" / "edgevae_decode", "9 0 0 0 0 0 0 0 0\n" + line + "\n")
    assert result.returncode == 1 and message in result.stderr
    assert len(result.stdout.splitlines()) == 1
    info = subprocess.run([str(build / "host" / "edgevae_decode"), "--info"], capture_output=True)
    assert b"labels: 0=c0 1=c1" in info.stdout


def test_reference_checks_labels(built):
    _, path, _, _, _ = built("cond")
    model = load_int_model(path)
    z = np.zeros((2, model.latent_dim), np.float32)
    for labels in (None, [0, 10], [0.5, 1.0]):
        with pytest.raises(ValueError, match="label"):
            decode_int(model, z, labels)


def test_demo_uses_label_i_mod_classes(built):
    _, path, weights, build, _ = built("cond", 4)
    model = load_int_model(path, 4)
    z = demo_latents(16, model.latent_dim)
    expected = fnv1a32(decode_int(model, z, np.arange(16) % CLASSES).tobytes())
    out = make(weights, build, "run-host").stdout
    assert checksum_line(out) == f"checksum: 0x{expected:08x}"
    need_tools("arm-none-eabi-gcc", "qemu-system-arm")
    assert checksum_line(make(weights, build, "run-m4").stdout) == f"checksum: 0x{expected:08x}"


def test_score_refuses_conditional_models(built, tmp_path):
    export, path, _, _, _ = built("cond")
    with pytest.raises(ModelFileError, match="conditional.*unconditional"):
        write_firmware(export, tmp_path / "s", command="t", score=True)
    from support.firmware_score import Pair, make_pair

    from edgevae.firmware.score import score_model

    encoder = make_pair(tmp_path / "pair", Pair("e")) / "encoder.int8.static.onnx"
    with pytest.raises(ModelFileError, match="conditional decoder"):
        score_model(encoder, path)


def test_concat_of_anything_else_is_refused(tmp_path):
    import onnx

    export = make_conditional(tmp_path / "e", VARIANTS["cond"], 3)
    model = onnx.load(str(export / "decoder.int8.static.onnx"))
    concat = next(n for n in model.graph.node if n.op_type == "Concat")
    concat.input[0], concat.input[1] = concat.input[1], concat.input[0]
    del concat.attribute[:]
    concat.attribute.append(onnx.helper.make_attribute("axis", 0))
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(ModelFileError, match="axis other than 1"):
        load_int_model(tmp_path / "bad.onnx")
