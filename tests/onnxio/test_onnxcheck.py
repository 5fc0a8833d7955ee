"""onnxio.vet: the vetting reader agrees with `onnx` on real models, refuses what it should,
and never fails with anything but ModelFileError on damaged files."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from support.fuzz import MODEL_FUZZ

from edgevae.errors import ModelFileError
from edgevae.onnxio import vet as onnxcheck
from edgevae.runtime.session import DECODER_IO, ENCODER_IO, open_session

REAL = ["encoder.fp32.onnx", "decoder.fp32.onnx", "encoder.int8.onnx", "decoder.int8.onnx",
        "decoder.int8.static.onnx"]  # fmt: skip


def _role(name: str) -> str:
    return name.split(".")[0]


def _vet(path: Path, role: str = "decoder") -> onnxcheck.OnnxInfo:
    io = ENCODER_IO if role == "encoder" else DECODER_IO
    return onnxcheck.vet(path, role, io[0], io[1][:1])


def _small_model(**meta: str) -> onnx.ModelProto:
    """z[?,2] -> Gemm -> Sigmoid: a few hundred bytes, so fuzzing hits the structure."""
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2), "w")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    g = helper.make_graph(
        [
            helper.make_node("Gemm", ["z", "w", "b"], ["logits"], name="gemm", transB=1),
            helper.make_node("Sigmoid", ["logits"], ["x_mean"], name="sig"),
        ],
        "g",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 2])],
        [
            helper.make_tensor_value_info("x_mean", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
        ],
        initializer=[w, b],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    m.ir_version = 10
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    return m


def _write(path: Path, model: onnx.ModelProto) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


# --------------------------------------------------------------------------- read_info


@pytest.mark.parametrize("name", REAL)
def test_read_info_agrees_with_onnx(tiny_export, name):
    path = tiny_export / name
    info = onnxcheck.read_info(path)
    proto = onnx.load(str(path))
    assert info.path == path
    assert info.ir_version == proto.ir_version > 0
    assert info.opsets == {o.domain: o.version for o in proto.opset_import}
    assert info.ops == [(n.domain, n.op_type, n.name) for n in proto.graph.node]
    assert info.inputs == [i.name for i in proto.graph.input]
    assert info.outputs == [o.name for o in proto.graph.output]
    assert info.metadata == {p.key: p.value for p in proto.metadata_props}
    assert info.metadata["edgevae.role"] == _role(name)
    assert info.external_data == []
    sizes = [math.prod(t.dims) for t in proto.graph.initializer]
    assert info.largest_initializer == max(sizes) == 784 * 64
    assert ("", "Gemm") in {(d, o) for d, o, _ in info.ops}


@pytest.mark.parametrize("name", REAL)
def test_vet_accepts_the_real_models(tiny_export, name):
    info = _vet(tiny_export / name, _role(name))
    assert info.inputs == (["x"] if _role(name) == "encoder" else ["z"])


def test_vet_refuses_wrong_role_and_contract(tiny_export, tmp_path):
    with pytest.raises(ModelFileError, match="this is an encoder model, expected the decoder"):
        _vet(tiny_export / "encoder.int8.onnx", "decoder")
    # Without the role stamp, the I/O names still give it away.
    m = onnx.load(str(tiny_export / "encoder.fp32.onnx"))
    del m.metadata_props[:]
    p = _write(tmp_path / "enc.onnx", m)
    with pytest.raises(ModelFileError, match=r"is not the decoder contract \['z'\]->\['x_mean'\]"):
        _vet(p, "decoder")
    assert _vet(p, "encoder").inputs == ["x"]


def test_read_info_file_errors(tmp_path, monkeypatch):
    with pytest.raises(ModelFileError, match="no such model file"):
        onnxcheck.read_info(tmp_path / "nope.onnx")
    with pytest.raises(ModelFileError, match="not a regular file"):
        onnxcheck.read_info(tmp_path)
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty file"):
        onnxcheck.read_info(tmp_path / "empty.onnx")
    p = _write(tmp_path / "m.onnx", _small_model())
    assert onnxcheck.read_info(p).ops == [("", "Gemm", "gemm"), ("", "Sigmoid", "sig")]
    monkeypatch.setattr(onnxcheck, "MAX_MODEL_BYTES", 100)
    with pytest.raises(ModelFileError, match=r"m\.onnx: \d+ bytes, more than the 100-byte limit"):
        onnxcheck.read_info(p)


def test_read_info_needs_a_graph(tmp_path):
    m = _small_model()
    m.ClearField("graph")
    with pytest.raises(ModelFileError, match="no graph"):
        onnxcheck.read_info(_write(tmp_path / "m.onnx", m))
    (tmp_path / "t.onnx").write_bytes(b"\x08\x0a\x3a\xff\xff\x03")  # graph field longer than file
    with pytest.raises(ModelFileError, match="truncated or not an ONNX model"):
        onnxcheck.read_info(tmp_path / "t.onnx")


def test_vet_refuses_big_initializers(tmp_path, monkeypatch):
    p = _write(tmp_path / "m.onnx", _small_model())
    assert onnxcheck.read_info(p).largest_initializer == 6
    monkeypatch.setattr(onnxcheck, "MAX_INITIALIZER_ELEMENTS", 5)
    with pytest.raises(ModelFileError, match="an initializer has 6 elements"):
        _vet(p)


def test_vet_normalizes_ai_onnx_domain_and_refuses_others(tmp_path):
    m = _small_model()
    m.graph.node[0].domain = "ai.onnx"
    assert _vet(_write(tmp_path / "a.onnx", m)).ops[0] == ("ai.onnx", "Gemm", "gemm")
    m.graph.node[1].domain = "ai.onnx.ml"
    with pytest.raises(ModelFileError, match="node 'sig' uses custom domain 'ai.onnx.ml'"):
        _vet(_write(tmp_path / "b.onnx", m))
    m = _small_model()
    m.graph.node[1].domain = "com.microsoft"  # Sigmoid is not one of the contrib ops we allow
    with pytest.raises(ModelFileError, match="node 'sig' has unexpected op Sigmoid"):
        _vet(_write(tmp_path / "c.onnx", m))


# --------------------------------------------------------------------------- external data


def _externalize(t: onnx.TensorProto, location: str, out_dir: Path) -> None:
    data = numpy_helper.to_array(t).tobytes()
    (out_dir / Path(location).name).write_bytes(data)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(len(data)))):
        e = t.external_data.add()
        e.key, e.value = k, v


def test_external_initializer_is_refused(tmp_path):
    m = _small_model()
    _externalize(m.graph.initializer[0], "../outside.bin", tmp_path)
    sub = tmp_path / "e"
    sub.mkdir()
    p = _write(sub / "m.onnx", m)
    info = onnxcheck.read_info(p)
    assert info.external_data == ["w"]
    with pytest.raises(ModelFileError, match="tensor 'w' is stored as external data"):
        _vet(p)


def test_external_sparse_initializer_is_refused(tmp_path):
    """onnxruntime densifies sparse initializers and reads their external values."""
    m = _small_model()
    b = m.graph.initializer.pop()
    values = numpy_helper.from_array(np.ones(3, np.float32), "b")
    _externalize(values, "b.bin", tmp_path)
    indices = numpy_helper.from_array(np.arange(3, dtype=np.int64), "")
    m.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [3]))
    assert b.name == "b"
    p = _write(tmp_path / "m.onnx", m)
    with pytest.raises(ModelFileError, match="tensor 'b' is stored as external data"):
        _vet(p)


def test_sparse_initializer_counts_its_dense_size(tmp_path, monkeypatch):
    m = _small_model()
    values = numpy_helper.from_array(np.ones(1, np.float32), "big")
    indices = numpy_helper.from_array(np.zeros(1, dtype=np.int64), "")
    m.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [1 << 30]))
    p = _write(tmp_path / "m.onnx", m)
    assert onnxcheck.read_info(p).largest_initializer == 1 << 30
    with pytest.raises(ModelFileError, match="an initializer has 1073741824 elements"):
        _vet(p)


def test_external_constant_tensor_attribute_is_refused(tmp_path):
    m = _small_model()
    t = numpy_helper.from_array(np.ones(3, np.float32), "c")
    _externalize(t, "c.bin", tmp_path)
    m.graph.node.append(helper.make_node("Constant", [], ["c"], name="const", value=t))
    with pytest.raises(ModelFileError, match="tensor 'c' is stored as external data"):
        _vet(_write(tmp_path / "m.onnx", m))


def test_external_tensors_in_other_attribute_kinds_are_refused(tmp_path):
    """Sparse Constant values and TENSORS-typed attributes can point at external data too."""
    m = _small_model()
    values = numpy_helper.from_array(np.ones(2, np.float32), "sv")
    _externalize(values, "sv.bin", tmp_path)
    indices = numpy_helper.from_array(np.array([0, 2], np.int64), "")
    sparse = helper.make_sparse_tensor(values, indices, [3])
    m.graph.node.append(helper.make_node("Constant", [], ["s"], name="sc", sparse_value=sparse))
    with pytest.raises(ModelFileError, match="tensor 'sv' is stored as external data"):
        _vet(_write(tmp_path / "a.onnx", m))

    m = _small_model()
    t = numpy_helper.from_array(np.ones(2, np.float32), "listed")
    _externalize(t, "listed.bin", tmp_path)
    m.graph.node[1].attribute.append(helper.make_attribute("extra", [t]))
    assert m.graph.node[1].attribute[0].type == onnx.AttributeProto.TENSORS
    info = onnxcheck.read_info(_write(tmp_path / "b.onnx", m))
    assert info.external_data == ["listed"]


def test_subgraph_nodes_are_refused_by_op_name(tmp_path):
    m = _small_model()
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, [])],
    )
    m.graph.node.append(helper.make_node("Loop", ["", ""], [], name="evil", body=body))
    with pytest.raises(ModelFileError, match="node 'evil' has unexpected op Loop with a subgraph"):
        onnxcheck.read_info(_write(tmp_path / "m.onnx", m))


# --------------------------------------------------------------------------- fuzz


@pytest.fixture(scope="module")
def fuzz_seeds(tiny_export, tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    small = _small_model(**{"edgevae.role": "decoder"}).SerializeToString()
    real = (tiny_export / "decoder.int8.static.onnx").read_bytes()
    return d, [small, real]


@MODEL_FUZZ
@given(
    which=st.integers(0, 1),
    cut=st.one_of(st.none(), st.floats(0.0, 1.0)),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=6),
    head=st.booleans(),
)
def test_fuzzed_models_fail_only_with_model_file_error(fuzz_seeds, which, cut, flips, head):
    d, seeds = fuzz_seeds
    data = bytearray(seeds[which])
    # On the real model, aim half the flips at the first/last 2 KB, where the structure is
    # (nodes, I/O, metadata) rather than weight bytes.
    span = len(data) if which == 0 or not head else min(2048, len(data))
    for frac, xor in flips:
        pos = int(frac * (span - 1))
        if which == 1 and head and frac > 0.5:
            pos = len(data) - 1 - int((1 - frac) * (span - 1))
        data[pos] ^= xor
    if cut is not None:
        data = data[: int(cut * len(data))]
    path = d / "fuzz.onnx"
    path.write_bytes(bytes(data))
    try:
        info = onnxcheck.read_info(path)
    except ModelFileError as exc:
        assert str(exc).startswith(str(path))
        return
    assert isinstance(info.ops, list) and info.inputs and info.outputs
    try:
        _vet(path)
    except ModelFileError:
        pass


def test_truncations_of_a_real_model_are_refused_by_the_runtime(tiny_export, tmp_path):
    """What reaches onnxruntime through open_session is vetted; cut files never get there."""
    data = (tiny_export / "decoder.int8.onnx").read_bytes()
    p = tmp_path / "decoder.int8.onnx"
    for frac in (0.01, 0.25, 0.5, 0.9, 0.999):
        p.write_bytes(data[: int(frac * len(data))])
        with pytest.raises(ModelFileError, match="truncated or not an ONNX model"):
            open_session(p, "decoder")
    shutil.copyfile(tiny_export / "decoder.int8.onnx", p)
    sess = open_session(p, "decoder")
    assert [o.name for o in sess.get_outputs()] == ["x_mean", "logits"]
