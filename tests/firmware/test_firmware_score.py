"""The firmware score's numpy reference: integer parts against onnxruntime, the fixed-point
tail against the float64 formula (elbo and excess), the API's checks and refusals."""

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
    DEFAULT_KIND,
    KINDS,
    find_firmware_encoder,
    float64_score,
    load_score_model,
    manifest_threshold,
    score_images,
    score_model,
    score_parts,
)
from edgevae.firmware.scoretables import INT32_LIMIT, pixel_entropy, to_float32
from edgevae.runtime import score as runtime_score
from edgevae.runtime.anomaly import firmware_threshold
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


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_score_is_its_formula(pairs, name, kind):
    """The fixed-point tables against the float64 formula of the kind on the same integer
    outputs, and against the runtime's own likelihood, KL and floor on onnxruntime's outputs."""
    export = pairs(name)
    model = load_score_model(export, kind=kind)
    assert model.kind == kind
    pixels = score_images_for_tests(PAIRS[name].shape)
    parts = score_parts(model, pixels)
    assert parts.score.dtype == np.float32 and parts.score.shape == (len(pixels),)
    exact = float64_score(model, pixels)
    # Bernoulli: 2**-30-ish tables; Gaussian: the mean in 1/256 grey levels (see scoretables)
    tolerance = 1e-4 if model.likelihood == "bernoulli" else 0.05
    assert np.abs(parts.score - exact).max() <= tolerance + 1e-6 * np.abs(exact).max()
    floor = parts.floor if kind == "excess" else 0.0
    total = parts.recon - floor + parts.kl
    assert np.abs(total - parts.score).max() <= 1e-6 * np.abs(parts.recon).max()
    if name in PAIRS_ORT_EXACT:
        mu, logvar, logits = ort_encode_decode(export, pixels)
        x = pixels.astype(np.float64) / 255
        ref = -log_px_given_z(x, logits, model.likelihood, model.gauss_logvar)
        ref += kl_to_standard_normal(mu, logvar)
        if kind == "excess":
            ref -= runtime_score.floor_nats(model, x)
        assert np.abs(parts.score - ref).max() <= tolerance + 1e-6 * np.abs(ref).max()


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_excess_is_elbo_minus_the_floor(pairs, name):
    """The two kinds share every integer part; excess takes the floor off exactly in fixed
    point, and its float64 formula is the elbo's minus the runtime score's floor."""
    export = pairs(name)
    excess, elbo = (load_score_model(export, kind=k) for k in ("excess", "elbo"))
    pixels = score_images_for_tests(PAIRS[name].shape)
    a, b = score_parts(excess, pixels), score_parts(elbo, pixels)
    for field in ("recon", "kl", "floor", "mu_q", "logvar_q", "logits_q"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    x = pixels.astype(np.float64) / 255
    floor = runtime_score.floor_nats(elbo, x)
    assert np.abs(a.floor - floor).max() <= 1e-4 + 1e-6 * np.abs(floor).max()
    # the runtime's floor in float32 (entropy_nats): ~1e-7 relative per pixel
    assert np.abs(float64_score(excess, pixels) - (float64_score(elbo, pixels) - floor)).max() <= (
        1e-4 + 1e-6 * np.abs(floor).max()
    )
    scale = np.abs(b.score).max()
    assert np.abs(a.score - (b.score - a.floor)).max() <= 2e-6 * scale  # one rounding each
    if elbo.likelihood == "bernoulli":  # an entropy: never negative
        assert (a.floor >= 0).all() and (a.score <= b.score).all()
    else:  # the constant part: the squared errors remain
        t = elbo.tables
        assert np.array_equal(a.floor, np.full(len(pixels), to_float32(t.gauss_const, t.frac_bits)))


def test_a_binary_image_has_an_excess_floor_of_exactly_zero(pairs):
    """H(0) = H(1) = 0: for 0/255 pixels excess equals elbo to the last bit."""
    model = load_score_model(pairs("firmware"), kind="excess")
    rng = np.random.default_rng(5)
    pixels = rng.choice(np.array([0, 255], np.uint8), (50, 784))
    pixels[0], pixels[1] = 0, 255
    parts = score_parts(model, pixels)
    assert np.array_equal(parts.floor, np.zeros(50, np.float32))
    elbo = score_parts(load_score_model(pairs("firmware"), kind="elbo"), pixels).score
    assert np.array_equal(parts.score.view(np.uint32), elbo.view(np.uint32))
    grey = np.full((1, 784), 128, np.uint8)  # the most uncertain pixel: ~ln 2 nats each
    assert abs(score_parts(model, grey).floor[0] - 784 * pixel_entropy()[128]) < 1e-4


def test_the_entropy_table(pairs):
    tables = load_score_model(pairs("firmware")).tables
    exact = pixel_entropy()
    assert exact[0] == exact[255] == 0.0 and np.allclose(exact, exact[::-1])
    p = np.arange(1, 255) / 255
    assert np.allclose(exact[1:255], -(p * np.log(p) + (1 - p) * np.log(1 - p)), rtol=1e-13)
    t, f = tables.entropy, tables.entropy_frac_bits
    assert t.dtype == np.int32 and t[0] == t[255] == 0 and np.array_equal(t, t[::-1])
    assert f <= tables.frac_bits and np.abs(t.astype(np.int64)).max() <= INT32_LIMIT
    assert np.abs(t * 2.0**-f - exact).max() <= 2.0 ** -(f + 1)  # rounded once per entry
    assert f == min(31, tables.frac_bits)  # the finest unit that keeps ln 2 within int32


def test_the_default_kind_and_the_kind_of_a_folder(pairs, tmp_path):
    assert DEFAULT_KIND == runtime_score.DEFAULT == "excess" and set(KINDS) == {"excess", "elbo"}
    pixels = score_images_for_tests((9, 11), n=20)
    export = pairs("deep-odd")
    assert load_score_model(export).kind == "excess"
    excess = score_parts(load_score_model(export, kind="excess"), pixels).score
    assert np.array_equal(score_images(export, pixels), excess)
    stored = make_pair(
        tmp_path / "t", PAIRS["deep-odd"], threshold={"score": "elbo", "firmware": 10.0}
    )
    elbo = score_parts(load_score_model(stored, kind="elbo"), pixels).score
    assert load_score_model(stored).kind == "elbo"  # the stored threshold's kind
    assert np.array_equal(score_images(stored, pixels), elbo)
    assert np.array_equal(score_images(stored, pixels, kind="excess"), excess)
    with pytest.raises(UsageError, match="computes the excess score, not elbo") as info:
        score_images(load_score_model(export), pixels, kind="elbo")
    assert info.value.param == "kind"
    with pytest.raises(UsageError, match="must be one of excess, elbo") as info:
        load_score_model(export, kind="iwae")
    assert info.value.param == "kind" and "--" not in str(info.value)


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
    for array in (
        tables.kl_mu,
        tables.kl_logvar,
        tables.softplus,
        tables.neg_logit,
        tables.entropy,
    ):
        if array is not None:
            assert array.dtype == np.int32 and np.abs(array.astype(np.int64)).max() <= INT32_LIMIT
    if tables.likelihood == "gaussian":
        assert tables.gauss_weight.dtype == np.uint32 and tables.gauss_mean.max() <= 255 * 256
    else:
        assert tables.softplus_frac_bits <= tables.frac_bits
        assert tables.entropy_frac_bits <= tables.frac_bits
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
    ("entry", "asked", "value", "kind", "why"),
    [
        (None, None, None, "excess", "no threshold in the manifest"),
        (None, "elbo", None, "elbo", "no threshold in the manifest"),
        ({"score": "elbo", "firmware": 87.5, "fpr": 0.01}, None, 87.5, "elbo", ""),
        ({"score": "elbo", "firmware": 87.5}, "elbo", 87.5, "elbo", ""),
        ({"score": "excess", "firmware": 12.5}, None, 12.5, "excess", ""),
        ({"score": "excess", "firmware": 12.5}, "elbo", None, "elbo", "'excess', not elbo"),
        ({"score": "elbo", "firmware": 87.5}, "excess", None, "excess", "'elbo', not excess"),
        ({"score": "iwae", "firmware": 87.5}, None, None, "excess", "'iwae', which a board"),
        ({"score": "excess-ink", "firmware": None}, "elbo", None, "elbo", "does not compute"),
        ({"score": "elbo"}, None, None, "elbo", "no finite 'firmware' value"),
        ({"score": "excess", "firmware": float("nan")}, None, None, "excess", "no finite"),
        ({"score": "elbo", "firmware": True}, None, None, "elbo", "no finite"),
        ("87", None, None, "excess", "for score None"),
    ],
)
def test_manifest_threshold(entry, asked, value, kind, why):
    got, got_kind, note = manifest_threshold({} if entry is None else {"threshold": entry}, asked)
    assert got == value and got_kind == kind and why in note
    assert (note == "") == (value is not None)


def test_threshold_is_read_from_the_manifest(tmp_path):
    for kind, value in (("elbo", 123.25), ("excess", 23.5)):
        export = make_pair(
            tmp_path / kind, PAIRS["deep-odd"], threshold={"score": kind, "firmware": value}
        )
        model = load_score_model(export)
        assert model.kind == kind and model.threshold == value and model.threshold_note == ""
        other = load_score_model(export, kind="elbo" if kind == "excess" else "excess")
        assert other.threshold is None and f"for score {kind!r}" in other.threshold_note


def _with_files(export, threshold_models: dict[str, str]) -> None:
    """Record the folder's model files' sha256 in the manifest, as an export does, and
    `threshold_models` as the models the threshold was calibrated with."""
    from edgevae import fsio

    man = json.loads((export / "manifest.json").read_text())
    man["files"] = {p.name: {"sha256": fsio.sha256_file(p)} for p in export.glob("*.onnx")}
    man["threshold"]["models"] = threshold_models
    (export / "manifest.json").write_text(json.dumps(man))


def test_a_threshold_of_other_models_is_refused(tmp_path):
    """A firmware threshold recorded with other model files (re-quantized since, or copied
    from another export) is refused, naming the file; with the pair it recorded it is kept."""
    from edgevae import fsio

    export = make_pair(
        tmp_path / "t", PAIRS["deep-odd"], threshold={"score": "excess", "firmware": 9.5}
    )
    names = ("encoder.int8.static.onnx", "decoder.int8.static.onnx")
    _with_files(export, {n: fsio.sha256_file(export / n) for n in names})
    assert load_score_model(export, check_threshold=True).threshold == 9.5
    _with_files(export, {names[0]: fsio.sha256_file(export / names[0]), names[1]: "ab" * 32})
    with pytest.raises(ModelFileError, match="calibrated with another decoder.int8.static.onnx"):
        load_score_model(export, check_threshold=True)
    # Scoring, and calibrating a new threshold over the stale one, do not depend on it.
    assert load_score_model(export).threshold == 9.5
    man = json.loads((export / "manifest.json").read_text())
    man["firmware_encoder"] = names[0]
    (export / "manifest.json").write_text(json.dumps(man))
    pixels = sample_images(PAIRS["deep-odd"].shape, 40, 5)
    x = pixels.astype(np.float32) / np.float32(255)
    assert np.isfinite(firmware_threshold(export, x, 0.1, "excess"))


def test_the_int8_pairs_threshold_is_not_given_to_a_4_bit_decoder(tmp_path):
    from support.firmware_int4 import make_int4_decoder

    from edgevae import fsio

    export = make_pair(
        tmp_path / "t", PAIRS["deep-odd"], threshold={"score": "excess", "firmware": 9.5}
    )
    make_int4_decoder(export, PAIRS["deep-odd"].decoder())
    names = ("encoder.int8.static.onnx", "decoder.int8.static.onnx")
    _with_files(export, {n: fsio.sha256_file(export / n) for n in names})
    model = load_score_model(export, weight_bits=4, check_threshold=True)
    assert model.threshold is None
    assert "not decoder.int4.static.onnx" in model.threshold_note


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
    x = test[:400].astype(np.float64)
    ref = -log_px_given_z(x, logits, "bernoulli") + kl_to_standard_normal(mu, logvar)
    assert model.kind == "excess"  # the default
    assert (
        np.abs(parts.score - (ref - runtime_score.entropy_nats(x))).max() <= 1e-4 + 1e-6 * ref.max()
    )
    elbo = score_parts(load_score_model(export, kind="elbo"), pixels).score
    assert np.abs(elbo - ref).max() <= 1e-4 + 1e-6 * ref.max()


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
