"""The firmware score's numpy reference: integer parts against onnxruntime, the fixed-point
tail against the float64 formula, the API's checks and refusals."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction

import numpy as np
import pytest
from support.firmware import Variant, quantize
from support.firmware_score import (
    PAIRS,
    PAIRS_ORT_EXACT,
    build_encoder_fp32,
    make_pair,
    ort_encode_decode,
    sample_images,
    score_images_for_tests,
    shared_pair,
    with_static_encoder,
)

from edgevae.errors import ModelFileError, UsageError
from edgevae.firmware.encoder import encode_int, load_int_encoder
from edgevae.firmware.fixedpoint import dequantize_linear
from edgevae.firmware.score import (
    find_firmware_encoder,
    float64_score,
    load_score_model,
    manifest_threshold,
    score_images,
    score_model,
    score_parts,
)
from edgevae.firmware.scoretables import INT32_LIMIT, to_float32
from edgevae.runtime.metrics import kl_to_standard_normal, log_px_given_z


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """name -> export folder with the static encoder and decoder, built once per session."""
    return lambda name: shared_pair(tmp_path_factory, name)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_encoder_equals_onnxruntime(pairs, name):
    export = pairs(name)
    enc = load_int_encoder(export / "encoder.int8.static.onnx")
    pixels = score_images_for_tests(PAIRS[name].shape)
    mu, logvar = encode_int(enc, pixels)
    ort_mu, ort_logvar, _ = ort_encode_decode(export, pixels)
    assert np.array_equal(mu, ort_mu) and np.array_equal(logvar, ort_logvar)


@pytest.mark.parametrize("name", PAIRS_ORT_EXACT)
def test_logits_at_mu_equal_onnxruntime(pairs, name):
    """onnxruntime's decoder on onnxruntime's mu: the mu -> zq table is what it computes."""
    export = pairs(name)
    model = load_score_model(export)
    pixels = score_images_for_tests(PAIRS[name].shape)
    parts = score_parts(model, pixels)
    logits = dequantize_linear(parts.logits_q, model.decoder.logit_q)
    assert np.array_equal(logits, ort_encode_decode(export, pixels)[2])


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_score_is_the_elbo_formula(pairs, name):
    """The fixed-point tables against the float64 formula on the same integer outputs, and
    against the runtime's own likelihood and KL on onnxruntime's outputs."""
    export = pairs(name)
    model = load_score_model(export)
    pixels = score_images_for_tests(PAIRS[name].shape)
    parts = score_parts(model, pixels)
    assert parts.score.dtype == np.float32 and parts.score.shape == (len(pixels),)
    exact = float64_score(model, pixels)
    # Bernoulli: 2**-30-ish tables; Gaussian: the mean in 1/256 grey levels (see scoretables)
    tolerance = 1e-4 if model.likelihood == "bernoulli" else 0.05
    assert np.abs(parts.score - exact).max() <= tolerance + 1e-6 * np.abs(exact).max()
    assert np.abs(parts.recon + parts.kl - parts.score).max() <= 1e-6 * np.abs(exact).max()
    if name in PAIRS_ORT_EXACT:
        mu, logvar, logits = ort_encode_decode(export, pixels)
        x = pixels.astype(np.float64) / 255
        ref = -log_px_given_z(x, logits, model.likelihood, model.gauss_logvar)
        ref += kl_to_standard_normal(mu, logvar)
        assert np.abs(parts.score - ref).max() <= tolerance + 1e-6 * np.abs(ref).max()


def test_anomalies_score_higher(pairs):
    model = load_score_model(pairs("firmware"))
    normal = sample_images((28, 28), 200, seed=21)
    scores = score_images(model, np.concatenate([normal, 255 - normal]))
    assert scores[200:].min() > np.median(scores[:200])


def _correctly_rounded(value: int, frac: int) -> Fraction:
    """value * 2**-frac rounded to 24 significant bits, half to even, in exact arithmetic."""
    magnitude, bits = abs(value), abs(value).bit_length()
    if bits > 24:
        quotient, rest = divmod(magnitude, 1 << (bits - 24))
        half = 1 << (bits - 25)
        if rest > half or (rest == half and quotient % 2):
            quotient += 1
        magnitude = quotient << (bits - 24)
    return Fraction(-magnitude if value < 0 else magnitude, 1 << frac)


def test_fixed_point_to_float32_rounds_once_half_to_even():
    rng = np.random.default_rng(3)
    values = np.concatenate(
        [
            rng.integers(-(2**62), 2**62, 3000),
            rng.integers(-(2**30), 2**30, 1000),
            np.array([0, 1, -1, 2**24 - 1, 2**24 + 1, 2**25 + 1, 2**25 + 3, 2**26 + 2]),
            (rng.integers(2**23, 2**24, 500) * 2 + 1) << rng.integers(1, 30, 500),  # ties
        ]
    ).astype(np.int64)
    for frac in (0, 27, 45):
        got = to_float32(values, frac)
        assert got.dtype == np.float32
        expected = [_correctly_rounded(int(v), frac) for v in values]
        assert all(Fraction(float(g)) == e for g, e in zip(got, expected, strict=True))


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_tables_fit_the_kernels_types(pairs, name):
    tables = load_score_model(pairs(name)).tables
    assert tables.kl_frac_bits <= tables.frac_bits
    for array in (tables.kl_mu, tables.kl_logvar, tables.softplus, tables.neg_logit):
        if array is not None:
            assert array.dtype == np.int32 and np.abs(array.astype(np.int64)).max() <= INT32_LIMIT
    if tables.likelihood == "gaussian":
        assert tables.gauss_weight.dtype == np.uint32 and tables.gauss_mean.max() <= 255 * 256
    else:
        assert tables.softplus_frac_bits <= tables.frac_bits
    assert tables.mu_to_zq.size == 256


def test_score_images_takes_a_folder_or_a_model_and_image_shapes(pairs):
    export = pairs("deep-odd")
    pixels = score_images_for_tests((9, 11), n=30)
    model = load_score_model(export)
    flat = score_images(export, pixels)
    assert np.array_equal(flat, score_images(model, pixels.reshape(-1, 9, 11)))
    with pytest.raises(UsageError, match="uint8") as info:
        score_images(model, pixels.astype(np.float32) / 255)
    assert info.value.param == "pixels"
    with pytest.raises(UsageError, match="99 pixels"):
        score_images(model, pixels[:, :98])


def test_missing_encoder_and_manifest_choice(pairs, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(pairs("deep-odd"), export)
    (export / "encoder.int8.static.onnx").rename(export / "enc.onnx")
    with pytest.raises(ModelFileError, match="no encoder.int8.static.onnx") as info:
        load_score_model(export)
    assert "--" not in str(info.value)
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["firmware_encoder"] = "enc.onnx"
    (export / "manifest.json").write_text(json.dumps(manifest))
    assert find_firmware_encoder(export).name == "enc.onnx"
    assert load_score_model(export).encoder.source == "enc.onnx"
    for bad in (3, "../enc.onnx"):
        manifest["firmware_encoder"] = bad
        (export / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ModelFileError, match="is not a file name"):
            load_score_model(export)


def test_mismatched_pair_is_refused(pairs):
    with pytest.raises(ModelFileError, match="does not pair with"):
        score_model(
            pairs("firmware") / "encoder.int8.static.onnx",
            pairs("deep-odd") / "decoder.int8.static.onnx",
        )


def test_gaussian_needs_the_logvariances(pairs):
    export = pairs("gaussian")
    with pytest.raises(ModelFileError, match="gaussian_logvar"):
        score_model(
            export / "encoder.int8.static.onnx", export / "decoder.int8.static.onnx", "gaussian"
        )


def test_float_outputs_and_dynamic_encoders_are_refused(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    pair = PAIRS["deep-odd"]
    src = build_encoder_fp32(tmp_path / "encoder.fp32.onnx", pair)
    with pytest.raises(ModelFileError, match=r"output 'mu' comes from node 'node_mu' \(op Gemm\)"):
        load_int_encoder(src)
    dynamic = tmp_path / "encoder.int8.onnx"
    quantize_dynamic(str(src), str(dynamic), weight_type=QuantType.QInt8)
    with pytest.raises(ModelFileError, match="DynamicQuantizeLinear.*encoder.int8.static.onnx"):
        load_int_encoder(dynamic)
    calib = sample_images(pair.shape, 100).astype(np.float32) / 255
    static = quantize(
        src, tmp_path / "encoder.int8.static.onnx", Variant("e", ops=("Gemm",)), calib
    )
    assert load_int_encoder(static).latent_dim == pair.latent


@pytest.mark.parametrize(
    ("entry", "value", "why"),
    [
        (None, None, "no threshold in the manifest"),
        ({"score": "elbo", "firmware": 87.5, "fpr": 0.01}, 87.5, ""),
        ({"score": "iwae", "firmware": 87.5}, None, "for score 'iwae'"),
        ({"score": "elbo"}, None, "no finite 'firmware' value"),
        ({"score": "elbo", "firmware": float("nan")}, None, "no finite"),
        ("87", None, "for score None"),
    ],
)
def test_manifest_threshold(entry, value, why):
    got, note = manifest_threshold({} if entry is None else {"threshold": entry})
    assert got == value and why in note


def test_threshold_is_read_from_the_manifest(tmp_path):
    export = make_pair(
        tmp_path / "t", PAIRS["deep-odd"], threshold={"score": "elbo", "firmware": 123.25}
    )
    model = load_score_model(export)
    assert model.threshold == 123.25 and model.threshold_note == ""


@pytest.mark.slow
def test_real_export(tiny_export, tmp_path):
    """The tiny trained run: its firmware encoder (made here with the firmware recipe until
    `edgevae quantize` writes it) scores like onnxruntime and the runtime's formula."""
    from edgevae.data.core import load_images

    export = with_static_encoder(tiny_export, tmp_path / "export")
    test, _ = load_images(None, split="test")
    pixels = np.rint(test[:400] * 255).astype(np.uint8)
    assert np.array_equal(pixels.astype(np.float32) / np.float32(255), test[:400])
    model = load_score_model(export)
    parts = score_parts(model, pixels)
    mu, logvar, logits = ort_encode_decode(export, pixels)
    enc_mu, enc_logvar = encode_int(model.encoder, pixels)
    assert np.array_equal(enc_mu, mu) and np.array_equal(enc_logvar, logvar)
    assert np.array_equal(dequantize_linear(parts.logits_q, model.decoder.logit_q), logits)
    ref = -log_px_given_z(test[:400].astype(np.float64), logits, "bernoulli")
    ref += kl_to_standard_normal(mu, logvar)
    assert np.abs(parts.score - ref).max() <= 1e-4 + 1e-6 * ref.max()


def test_score_imports_neither_torch_nor_onnx_nor_onnxruntime(pairs, tmp_path):
    """score_images and `edgevae firmware --score` run from the integers alone."""
    import subprocess
    import sys

    export = pairs("deep-odd")
    code = (
        "import json, sys\n"
        "import numpy as np\n"
        "from edgevae.cli import main\n"
        "from edgevae.firmware.score import score_images\n"
        f"rc = main(['firmware', '--export-dir', {str(export)!r}, '--out', {str(tmp_path)!r},"
        " '--score'])\n"
        f"score_images({str(export)!r}, np.zeros((2, 99), np.uint8))\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'onnx', 'onnxscript', 'safetensors', 'onnxruntime'))\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(done.stdout.splitlines()[-1]) == {"rc": 0, "heavy": []}
