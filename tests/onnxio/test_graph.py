"""onnxio.graph: the firmware's view of a model (nodes, numpy initializers, metadata); damaged
files end in ModelFileError only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from support.firmware import VARIANTS, make_decoder
from support.fuzz import MODEL_FUZZ

from edgevae.errors import ModelFileError
from edgevae.firmware.qdq import read_qdq_chain
from edgevae.onnxio import graph


def _model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.arange(6, dtype=np.int8).reshape(3, 2), "w")
    g = helper.make_graph(
        [
            helper.make_node("Constant", [], ["c"], name="const", value=numpy_helper.from_array(
                np.array([1.5, -2.0], np.float32), "c")),
            helper.make_node("Gemm", ["z", "w", "c"], ["y"], name="gemm", transB=1, alpha=0.5),
            helper.make_node("Foo", ["y"], ["x_mean"], domain="custom", names=["a"], k=[1, 2]),
        ],
        "g",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2]),
         helper.make_tensor_value_info("w", TensorProto.INT8, [3, 2])],
        [helper.make_tensor_value_info("x_mean", TensorProto.FLOAT, [1, 3])],
        initializer=[w],
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    m.metadata_props.add(key="edgevae.latent_dim", value="2")
    return m


def test_graph_view_of_a_model():
    g = graph.parse_graph(_model().SerializeToString(), "m.onnx")
    assert [n.op_type for n in g.nodes] == ["Gemm", "Foo"]  # the Constant became an initializer
    assert set(g.initializers) == {"w", "c"} and g.initializers["w"].dtype == np.int8
    assert np.array_equal(g.initializers["c"], np.array([1.5, -2.0], np.float32))
    assert g.inputs == ["z"] and g.outputs == ["x_mean"]  # an initializer is not an input
    gemm, foo = g.nodes
    assert gemm.attrs == {"transB": 1, "alpha": 0.5} and gemm.inputs == ["z", "w", "c"]
    assert foo.domain == "custom" and foo.attrs == {"names": None, "k": [1, 2]}
    assert g.metadata == {"edgevae.latent_dim": "2"} and g.opsets == {"": 20}
    assert g.producer()["y"] is gemm and g.consumers()["y"] == [foo]


def test_load_graph_file_errors(tmp_path, monkeypatch):
    with pytest.raises(ModelFileError, match="nope.onnx: no such file"):
        graph.load_graph(tmp_path / "nope.onnx")
    m = _model()
    m.ClearField("graph")
    (tmp_path / "m.onnx").write_bytes(m.SerializeToString())
    with pytest.raises(ModelFileError, match=r"m\.onnx: not a readable ONNX model \(no graph\)"):
        graph.load_graph(tmp_path / "m.onnx")
    monkeypatch.setattr(graph, "MAX_MODEL_BYTES", 10)
    with pytest.raises(ModelFileError, match="more than the 10-byte limit"):
        graph.load_graph(tmp_path / "m.onnx")


def test_non_numeric_attribute_is_refused_by_name(tmp_path):
    path = make_decoder(tmp_path, VARIANTS["firmware"])
    m = onnx.load(str(path))
    gemm = next(n for n in m.graph.node if n.op_type == "Gemm")
    for attr in gemm.attribute:
        if attr.name == "transB":
            gemm.attribute.remove(attr)
            break
    gemm.attribute.append(helper.make_attribute("transB", "yes"))
    path.write_bytes(m.SerializeToString())
    with pytest.raises(ModelFileError, match=r"\(op Gemm\) has attribute transB=b'yes'; expected"):
        read_qdq_chain(path)


@pytest.fixture(scope="module")
def seed_model(tmp_path_factory) -> tuple[bytes, Path]:
    """A QDQ decoder's bytes, and where each fuzzed copy goes."""
    d = tmp_path_factory.mktemp("seed")
    return make_decoder(d, VARIANTS["firmware"]).read_bytes(), d / "fuzz.onnx"


@MODEL_FUZZ
@given(
    which=st.integers(0, 1),
    cut=st.one_of(st.none(), st.floats(0.0, 1.0)),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=6),
)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # damaged scales divide by zero
def test_fuzzed_models_fail_only_with_model_file_error(seed_model, which, cut, flips):
    """The parse and the QDQ walk both: a damaged decoder is refused, never a traceback."""
    seed, path = seed_model
    data = bytearray(seed if which else _model().SerializeToString())
    for frac, xor in flips:
        data[int(frac * (len(data) - 1))] ^= xor
    if cut is not None:
        data = data[: int(cut * len(data))]
    path.write_bytes(bytes(data))
    try:
        chain = read_qdq_chain(path)
    except ModelFileError as exc:
        assert str(exc).startswith("fuzz.onnx: ")
        return
    assert chain.steps
