"""The numpy integer reference: its arithmetic pieces and its agreement with onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from support.firmware import (
    ORT_CLOSE,
    ORT_EXACT,
    VARIANTS,
    build_fp32,
    ort_pixels,
    sample_latents,
    shared_decoder,
)

from edgevae.errors import ModelFileError
from edgevae.firmware.fixedpoint import requant_scale, requantize, split_scale
from edgevae.firmware.intref import (
    decode_int,
    demo_latents,
    fnv1a32,
    load_int_model,
    quantize_input,
)
from edgevae.firmware.qdq import QType
from edgevae.onnxio.graph import load_graph


@pytest.fixture(scope="module")
def decoders(tmp_path_factory):
    """name -> QDQ decoder path, built once per session."""
    return lambda name: shared_decoder(tmp_path_factory, name)


# ------------------------------------------------------------------------ arithmetic pieces


def float32_requant(acc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """What onnxruntime's QGemm does: float32(acc) * float32 scale, clamp, round half even."""
    value = acc.astype(np.float32) * scale.astype(np.float32)
    return np.rint(np.clip(value, np.float32(-512), np.float32(512))).astype(np.int64)


def test_requantize_matches_float32_everywhere():
    rng = np.random.default_rng(0)
    scales = np.exp(rng.uniform(np.log(2.0**-20), np.log(4.0), 4000)).astype(np.float32)
    parts = [split_scale(float(s)) for s in scales]
    mult = np.array([p[0] for p in parts], np.uint64)
    shift = np.array([p[1] for p in parts], np.uint64)
    acc = np.concatenate(
        [
            rng.integers(-(2**31) + 1, 2**31, 4000),  # beyond 2**24: float32(acc) rounds
            rng.integers(-(2**20), 2**20, 4000),
            rng.integers(-300, 300, 4000),
        ]
    )
    s = np.tile(scales, 3)
    got = requantize(acc, np.tile(mult, 3), np.tile(shift, 3))
    assert np.array_equal(np.clip(got, -512, 512), float32_requant(acc, s))


def test_requantize_exact_ties_and_near_ties():
    # scale 2**-k makes acc * scale land exactly on .5; neighbours probe the rounding
    acc = np.arange(-4000, 4000)
    for k in (1, 3, 7, 12):
        m, sh = split_scale(2.0**-k)
        got = requantize(acc, m, sh)
        assert np.array_equal(got, float32_requant(acc, np.full(acc.shape, 2.0**-k)))
    # product needs more than 24 bits: float32's intermediate rounding decides the tie
    scale = np.float32(1 + 2**-23) * np.float32(2**-10)
    acc = np.arange(2**19 - 3000, 2**19 + 3000)
    m, sh = split_scale(float(scale))
    assert np.array_equal(requantize(acc, m, sh), float32_requant(acc, np.full(acc.shape, scale)))


def test_split_scale_is_exact():
    for value in (1.0, 0.5, 3.0e-5, 0.0123, 2.0**-40, 1e-45):
        m, s = split_scale(value)
        assert np.float32(value) == np.float32(m * 2.0**-s)
    assert split_scale(0.0) == (0, 24)
    with pytest.raises(ValueError):
        split_scale(-1.0)


def test_requant_scale_is_onnxruntimes_float32_expression():
    a, b, y = np.float32(0.0317), np.float32([0.0021, 0.77]), np.float32(0.1103)
    expected = np.array([np.float32(np.float32(a * bi) / y) for bi in b])
    assert np.array_equal(requant_scale(a, b, y), expected)


def test_quantize_input_matches_quantizelinear():
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    for signed, zp, scale in ((False, 131, 0.0371), (True, -3, 0.0123)):
        dtype = np.int8 if signed else np.uint8
        node = helper.make_node("QuantizeLinear", ["z", "s", "zp"], ["q"])
        graph = helper.make_graph(
            [node],
            "q",
            [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])],
            [
                helper.make_tensor_value_info(
                    "q", TensorProto.INT8 if signed else TensorProto.UINT8, ["N", 4]
                )
            ],
            [
                numpy_helper.from_array(np.array(scale, np.float32), "s"),
                numpy_helper.from_array(np.array(zp, dtype), "zp"),
            ],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
        model.ir_version = 10
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        rng = np.random.default_rng(1)
        z = np.concatenate(
            [
                rng.uniform(-6, 6, (20000, 4)),
                (np.arange(-600, 600) / 2 * scale).reshape(-1, 4),  # exact .5 ties
                rng.choice([1e3, -1e3, 0.0, -0.0, 1e-30], (50, 4)),
            ]
        ).astype(np.float32)
        ref = session.run(None, {"z": z})[0].astype(np.int64)

        class Model:
            latent_dim = 4
            input_q = QType("z", scale, zp, signed)

        assert np.array_equal(quantize_input(Model, z), ref)


def test_non_finite_latents_are_refused(decoders):
    model = load_int_model(decoders("firmware"))
    z = np.zeros((2, model.latent_dim), np.float32)
    z[1, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        decode_int(model, z)
    with pytest.raises(ValueError, match="shape"):
        decode_int(model, np.zeros((2, model.latent_dim + 1), np.float32))


def test_demo_latents_are_the_c_generators():
    z = demo_latents(2, 3)
    assert z.dtype == np.float32 and z.shape == (2, 3)
    assert fnv1a32(b"") == 0x811C9DC5 and fnv1a32(b"a") == 0xE40C292C
    wide = demo_latents(8, 3, wide=True)
    assert np.array_equal(wide[0], demo_latents(1, 3)[0])
    assert np.all(wide[3] == 0) and np.abs(wide[2]).max() > 100


# ------------------------------------------------------------------------- model loading


def test_reader_matches_onnx_package(decoders):
    import onnx
    from onnx import numpy_helper

    path = decoders("firmware")
    ours, ref = load_graph(path), onnx.load(str(path))
    expected = {t.name: numpy_helper.to_array(t) for t in ref.graph.initializer}
    assert set(ours.initializers) == set(expected)
    for name, array in expected.items():
        assert ours.initializers[name].dtype == array.dtype
        assert np.array_equal(ours.initializers[name], array)
    assert [(n.op_type, n.inputs, n.outputs) for n in ours.nodes] == [
        (n.op_type, list(n.input), list(n.output)) for n in ref.graph.node
    ]
    assert ours.metadata["edgevae.latent_dim"] == "8"


def test_load_describes_layers(decoders):
    model = load_int_model(decoders("firmware"))
    assert (model.latent_dim, model.output_dim, model.image_shape) == (8, 784, (28, 28))
    assert [layer.activation for layer in model.layers] == ["relu", "none"]
    assert model.layers[0].lut is not None  # DQ -> Relu -> Q runs as a table
    assert model.macs == 8 * 64 + 64 * 784
    fused = load_int_model(decoders("relu-fused"))
    assert fused.layers[0].lut is None  # Relu absorbed into the quantization range
    assert len(load_int_model(decoders("deep")).layers) == 3


def test_float_decoder_is_refused_naming_the_node(tmp_path):
    path = build_fp32(tmp_path / "decoder.fp32.onnx", VARIANTS["firmware"])
    with pytest.raises(ModelFileError, match=r"node 'node_gemm1' \(op Gemm\) is not quantized"):
        load_int_model(path)


# ------------------------------------------------------------------ against onnxruntime


@pytest.mark.parametrize("name", ORT_EXACT)
def test_matches_onnxruntime_within_one_grey_level(decoders, name, record_property):
    path = decoders(name)
    model = load_int_model(path)
    z = sample_latents(model.latent_dim, n=1500)
    diff = np.abs(decode_int(model, z).astype(np.int64) - ort_pixels(path, z))
    record_property("fraction_differing", float((diff > 0).mean()))
    print(f"{name}: {(diff > 0).mean():.2e} of {diff.size} pixels differ, max {diff.max()}")
    assert diff.max() <= 1
    assert (diff > 0).mean() < 1e-3


@pytest.mark.parametrize("name", ORT_CLOSE)
def test_inexact_variants_stay_close_to_the_unfused_graph(decoders, name):
    """Not bit-exact against onnxruntime by design (see intref's docstring): compare with
    onnxruntime's unfused float reference, where only rounding ties can differ."""
    import onnxruntime as ort

    path = decoders(name)
    model = load_int_model(path)
    z = sample_latents(model.latent_dim, n=600)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ref = np.rint(session.run(["x_mean"], {"z": z})[0].astype(np.float64) * 255)
    diff = np.abs(decode_int(model, z).astype(np.int64) - ref)
    print(f"{name}: {(diff > 0).mean():.2e} differ from the unfused graph, max {diff.max()}")
    assert (diff > 0).mean() < 0.01
