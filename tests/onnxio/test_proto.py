"""onnxio.proto: the vendored schema is onnx's, the classes live apart from onnx's, tensors
become the arrays onnx's numpy_helper makes, and hostile bytes end in ModelFileError."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgevae import limits
from edgevae.bench.peak import matmul_model
from edgevae.crosscheck.compare import CrosscheckError
from edgevae.crosscheck.models import onnx_graph_info
from edgevae.errors import ModelFileError
from edgevae.onnxio import graph, proto, vet


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    """A length-delimited field, for bytes no well-behaved writer would produce."""
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def test_vendored_schema_is_the_installed_onnx_schema():
    """Refresh after upgrading onnx: python -m edgevae.onnxio.proto --refresh"""
    assert proto.SCHEMA.read_bytes() == onnx.onnx_ml_pb2.DESCRIPTOR.serialized_pb, (
        f"{proto.SCHEMA} is not onnx {onnx.__version__}'s schema; refresh it with "
        "`python -m edgevae.onnxio.proto --refresh` and commit the file"
    )


def test_refresh_writes_only_when_the_schema_differs(tmp_path, monkeypatch):
    target = tmp_path / "onnx-ml.desc"
    monkeypatch.setattr(proto, "SCHEMA", target)
    assert proto.refresh() is True
    assert target.read_bytes() == onnx.onnx_ml_pb2.DESCRIPTOR.serialized_pb
    assert proto.refresh() is False


def test_classes_live_apart_from_onnx_and_read_its_bytes(tiny_export):
    assert proto.ModelProto is not onnx.ModelProto
    assert proto.ModelProto.DESCRIPTOR.file.pool is not onnx.ModelProto.DESCRIPTOR.file.pool
    assert proto.TensorProto.FLOAT == TensorProto.FLOAT and proto.TensorProto.EXTERNAL == 1
    with pytest.raises(AttributeError):
        proto.NoSuchProto  # noqa: B018
    data = (tiny_export / "decoder.int8.static.onnx").read_bytes()
    model = proto.parse_model(data, "m")
    assert model.SerializeToString() == onnx.load_from_string(data).SerializeToString() == data


@pytest.mark.parametrize(("op", "a_elem", "dtype", "out_elem"), [
    ("MatMul", TensorProto.FLOAT, np.float32, TensorProto.FLOAT),
    ("MatMulInteger", TensorProto.UINT8, np.int8, TensorProto.INT32),
])  # fmt: skip
def test_peak_probe_models_are_valid_onnx(op, a_elem, dtype, out_elem):
    b = np.arange(-6, 6, dtype=dtype).reshape(3, 4)
    model = onnx.load_from_string(matmul_model(op, a_elem, b, out_elem, m=2))
    onnx.checker.check_model(model, full_check=True)
    assert np.array_equal(numpy_helper.to_array(model.graph.initializer[0]), b)
    assert model.graph.node[0].op_type == op and model.opset_import[0].version == 13


# --------------------------------------------------------------------------- to_array

_VALUES = [0, 1, -2, 3, 127, -128, 5]


@pytest.mark.parametrize("code", sorted(proto.DTYPES))
@pytest.mark.parametrize("raw", [True, False])
def test_to_array_matches_numpy_helper(code, raw):
    dtype = np.dtype(proto.DTYPES[code])
    if dtype.kind == "u":
        values = np.abs(np.array(_VALUES + [3])).astype(dtype)
    else:
        values = np.array(_VALUES + [4]).astype(dtype)
    if dtype.kind == "u" and dtype.itemsize >= 4:
        values[-1] = np.iinfo(dtype).max  # the top bit set: uint64_data, not int64_data
    t = helper.make_tensor("t", code, [2, 4], values.reshape(-1).tolist(), raw=False)
    if raw:
        t = numpy_helper.from_array(values.reshape(2, 4), "t")
    ours = proto.to_array(proto.TensorProto.FromString(t.SerializeToString()))
    expected = numpy_helper.to_array(t)
    assert ours.dtype == expected.dtype == dtype
    assert ours.shape == (2, 4) and np.array_equal(ours, expected)


def test_to_array_scalar_and_refusals():
    as_proto = lambda t: proto.TensorProto.FromString(t.SerializeToString())  # noqa: E731
    scalar = proto.to_array(as_proto(numpy_helper.from_array(np.array(2.5, np.float32), "s")))
    assert scalar.shape == () and scalar == np.float32(2.5)
    cases = {
        "has unsupported data type 8": helper.make_tensor("t", TensorProto.STRING, [1], [b"a"]),
        "has unsupported data type 10": helper.make_tensor("t", TensorProto.FLOAT16, [1], [1.0]),
        "3 values for shape \\[2\\]": helper.make_tensor("t", TensorProto.FLOAT, [3], [1, 2, 3]),
        "8 bytes of data for shape \\[3\\]": numpy_helper.from_array(np.zeros(2, np.float32), "t"),
        "negative dimensions": helper.make_tensor("t", TensorProto.FLOAT, [0], []),
        "stored as external data": numpy_helper.from_array(np.zeros(2, np.float32), "t"),
    }
    cases["3 values for shape \\[2\\]"].dims[:] = [2]
    cases["8 bytes of data for shape \\[3\\]"].dims[:] = [3]
    cases["negative dimensions"].dims[:] = [-1]
    cases["stored as external data"].data_location = TensorProto.EXTERNAL
    for why, t in cases.items():
        with pytest.raises(proto.OnnxFormatError, match=f"tensor 't'.*{why}"):
            proto.to_array(as_proto(t))


# --------------------------------------------------------------------------- hostile bytes


def _deep_graph(levels: int) -> bytes:
    """graph -> node -> attribute.g -> graph ..., `levels` times."""
    g = b""
    for _ in range(levels):
        g = _field(1, _field(5, _field(6, g)))
    return _field(7, g)


def test_deeply_nested_graphs_are_refused_not_a_crash(tmp_path):
    path = tmp_path / "deep.onnx"
    path.write_bytes(_deep_graph(100_000))  # far past upb's nesting limit of 100
    with pytest.raises(ModelFileError, match="deep.onnx: truncated or not an ONNX model"):
        vet.read_info(path)
    with pytest.raises(ModelFileError, match="deep.onnx: not a readable ONNX model"):
        graph.load_graph(path)
    path.write_bytes(_deep_graph(20))  # decodes; the subgraph itself is refused
    with pytest.raises(ModelFileError, match="has unexpected op  with a subgraph"):
        vet.read_info(path)


def test_names_that_are_not_utf8(tmp_path):
    """proto2 strings are not checked when parsed: vet shows them with replacement
    characters (and refuses the op), the graph reader refuses them outright."""
    nodes = _field(1, _field(1, b"z") + _field(2, b"x_mean") + _field(4, b"Sig\xffmoid"))
    io = _field(11, _field(1, b"z")) + _field(12, _field(1, b"x_mean"))
    path = tmp_path / "m.onnx"
    path.write_bytes(_field(7, nodes + io))
    with pytest.raises(ModelFileError, match="has unexpected op Sig\ufffdmoid"):
        vet.vet(path, "decoder", ["z"], ["x_mean"])
    with pytest.raises(ModelFileError, match=r"not a readable ONNX model \(the name .* not UTF-8"):
        graph.load_graph(path)


def test_unknown_fields_and_wire_types_are_ignored(tmp_path):
    m = onnx.ModelProto(ir_version=10)
    m.graph.node.add(op_type="Sigmoid", input=["z"], output=["x_mean"], name="sig")
    m.graph.input.add(name="z")
    m.graph.output.add(name="x_mean")
    # field 999 (unknown) and ModelProto.graph (7) written as a varint (wrong wire type)
    extra = _field(999, b"whatever") + _varint(7 << 3) + _varint(5)
    path = tmp_path / "m.onnx"
    path.write_bytes(m.SerializeToString() + extra)
    info = vet.vet(path, "decoder", ["z"], ["x_mean"])
    assert info.ops == [("", "Sigmoid", "sig")] and info.ir_version == 10


def _empty_attributes(n: int) -> bytes:
    """A ModelProto whose one node holds `n` empty attributes: 2 bytes each on the wire, the
    message protobuf spends the most memory on per byte."""
    return _field(7, _field(1, _field(5, b"") * n))


def test_files_that_could_parse_past_the_memory_limit_are_refused_first(tmp_path, monkeypatch):
    """Above UNCHECKED_BYTES, a file whose worst case (PARSE_BYTES_PER_BYTE a byte) is over
    the memory limit is refused by every reader before protobuf sees it; under the limit it
    parses. (tests/hardening/test_limits.py runs a real-sized one in a child process.)"""
    monkeypatch.setattr(proto, "UNCHECKED_BYTES", 1000)
    hostile = _empty_attributes(2048)  # 4 KiB and a few bytes: up to 513 KiB to parse
    path = tmp_path / "decoder.int8.onnx"
    path.write_bytes(hostile)
    monkeypatch.setenv(limits.ENV, "256K")
    want = r"h\.onnx: parsing this 4\.0 KiB model \(protobuf's worst case\) would need 512\.\d KiB"
    for parse in (proto.parse_model, graph.parse_graph):
        with pytest.raises(ModelFileError, match=want):
            parse(hostile, "h.onnx")
    with pytest.raises(CrosscheckError, match=want):  # crosscheck's reader, its own error
        onnx_graph_info(hostile, "h.onnx")
    with pytest.raises(ModelFileError, match=r"decoder\.int8\.onnx: parsing .* memory limit"):
        vet.read_info(path)
    monkeypatch.setenv(limits.ENV, "1M")
    assert len(proto.parse_model(hostile, "h.onnx").graph.node[0].attribute) == 2048
    monkeypatch.setattr(proto, "UNCHECKED_BYTES", len(hostile))  # at the size: not checked
    monkeypatch.setenv(limits.ENV, "1K")
    assert proto.parse_model(hostile, "h.onnx").graph.node[0].attribute
