"""ONNX's protobuf message classes without importing `onnx`, and numpy arrays from tensors.

`onnx-ml.desc` (package data) is the serialized FileDescriptorProto of onnx/onnx-ml.proto as
onnx==1.23.2 ships it (`onnx.onnx_ml_pb2.DESCRIPTOR.serialized_pb`). At first use the classes
are built from it by protobuf's runtime, which every device has (onnxruntime requires
protobuf), in a private descriptor pool: no generated code, so no gencode/runtime version
check, and no clash with `onnx`'s own classes of the same names in the default pool when the
training process imports both. `import onnx` would cost ~0.7 s per command (most of it in
ml_dtypes) and is not a base dependency.

    from edgevae.onnxio import proto
    model = proto.parse_model(data, "decoder.onnx")   # ModelFileError if it does not parse
    proto.ModelProto(), proto.TensorProto.FLOAT        # any message of onnx-ml.proto

After upgrading onnx, refresh the schema with `python -m edgevae.onnxio.proto --refresh`.

The parser (upb) caps message nesting at 100 levels, so a hostile deeply nested graph fails
to decode instead of exhausting the stack; fields it does not know are kept as unknown fields
and ignored here. onnx-ml.proto is proto2, so string fields are not checked for UTF-8 when
parsed: upb hands out invalid ones as bytes, and `text` turns either kind into str. Like any
protobuf parser it builds every message, so a crafted file of empty messages takes up to
PARSE_BYTES_PER_BYTE bytes of memory per byte: `check_parse_memory` refuses a file whose
worst case is over the memory limit (`edgevae.limits`) before it is parsed.
"""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .. import limits
from ..errors import ModelFileError

SCHEMA = Path(__file__).with_name("onnx-ml.desc")
SCHEMA_FILE_NAME = "onnx/onnx-ml.proto"

# TensorProto.DataType -> numpy dtype: the types a (quantized) MLP uses
DTYPES: dict[int, type] = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    4: np.uint16,
    5: np.int16,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    11: np.float64,
    12: np.uint32,
    13: np.uint64,
}
# Without raw_data, a tensor's values sit in the typed field onnx.proto assigns to its type
# (every other type of DTYPES: int32_data).
_TYPED_FIELDS = {
    1: ("float_data", np.float32),
    11: ("double_data", np.float64),
    7: ("int64_data", np.int64),
    12: ("uint64_data", np.uint64),
    13: ("uint64_data", np.uint64),
}


class OnnxFormatError(ValueError):
    """Bytes that do not decode as a ModelProto, or a tensor this reader cannot turn into an
    array; the message says why, and callers put the file's name in front."""


@functools.cache
def _classes() -> dict[str, type]:
    from google.protobuf import descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(SCHEMA.read_bytes())
    names = pool.FindFileByName(SCHEMA_FILE_NAME).message_types_by_name
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"onnx.{name}"))
        for name in names
    }


def __getattr__(name: str) -> Any:
    """`proto.ModelProto`, `proto.TensorProto`, ...: the classes, built at first use."""
    if name[:1].isupper() and name in _classes():
        return _classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def decode_model(data: bytes, label: str = "model", error: type = ModelFileError) -> Any:
    """ModelProto from serialized bytes; OnnxFormatError if they are not one, `error` naming
    `label` when parsing them could exceed the memory limit (`check_parse_memory`)."""
    from google.protobuf.message import DecodeError

    check_parse_memory(len(data), label, error)
    try:
        return _classes()["ModelProto"].FromString(bytes(data))
    except (DecodeError, RecursionError, ValueError) as exc:
        # DecodeError: truncated, malformed or nested too deep (upb); the pure-Python backend
        # may raise RecursionError or UnicodeDecodeError (a ValueError) instead.
        raise OnnxFormatError("truncated or not protobuf") from exc


#: Memory protobuf may take per byte of a file: every 2 bytes on the wire can be an empty
#: message that upb builds whole (measured with onnx-ml.proto, upb 6: 100 bytes per wire byte
#: for empty AttributeProtos, the costliest; 85 for TensorProtos, 77 for NodeProtos).
PARSE_BYTES_PER_BYTE = 128
#: Files up to this size are parsed unchecked: the most they can take (256 MiB) is not worth
#: reading the memory limit for on every model load (the usual models are 0.1-3 MB).
UNCHECKED_BYTES = 2 << 20


def check_parse_memory(size: int, label: str, error: type = ModelFileError) -> None:
    """Refuse (`error`, naming `label`) to parse a file of `size` bytes whose worst case is
    over the memory limit."""
    if size > UNCHECKED_BYTES:
        what = f"{label}: parsing this {limits.human(size)} model (protobuf's worst case)"
        limits.check(size * PARSE_BYTES_PER_BYTE, what, error=error)


def parse_model(data: bytes, label: str) -> Any:
    """ModelProto from serialized bytes; ModelFileError "<label>: truncated or not an ONNX
    model" if they do not decode, or when parsing them could exceed the memory limit."""
    try:
        return decode_model(data, label)
    except OnnxFormatError:
        raise ModelFileError(f"{label}: truncated or not an ONNX model") from None


def text(value: str | bytes, strict: bool = False) -> str:
    """A string field as str: upb returns proto2 strings that are not UTF-8 as bytes; those
    are decoded with replacement characters, or refused with OnnxFormatError if `strict`."""
    if isinstance(value, str):
        return value
    if strict:
        raise OnnxFormatError(f"the name {value!r} is not UTF-8")
    return value.decode("utf-8", "replace")


def is_external(tensor: Any) -> bool:
    """The tensor's data lives in another file (data_location EXTERNAL or external_data)."""
    external = _classes()["TensorProto"].EXTERNAL
    return tensor.data_location == external or len(tensor.external_data) > 0


def dense_size(dims) -> int:
    """Elements of a tensor of shape `dims` (negative dimensions count as 0)."""
    return math.prod(max(int(d), 0) for d in dims)


def to_array(tensor: Any) -> np.ndarray:
    """A TensorProto's values as a numpy array (native byte order, a copy), from raw_data or
    the typed repeated field of its data type. OnnxFormatError for external data, a data type
    outside DTYPES (strings, float16, ...) or a value count that does not match the shape."""
    name = text(tensor.name)
    if is_external(tensor):
        raise OnnxFormatError(f"tensor {name!r} is stored as external data; re-export as one file")
    code = tensor.data_type
    if code not in DTYPES:
        raise OnnxFormatError(f"tensor {name!r} has unsupported data type {code}")
    dims = [int(d) for d in tensor.dims]
    if any(d < 0 for d in dims):
        raise OnnxFormatError(f"tensor {name!r} has negative dimensions {dims}")
    count = math.prod(dims)
    dtype = np.dtype(DTYPES[code])
    if tensor.HasField("raw_data"):
        raw = tensor.raw_data
        if len(raw) != count * dtype.itemsize:
            raise OnnxFormatError(f"tensor {name!r}: {len(raw)} bytes of data for shape {dims}")
        array = np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype)
    else:
        field, stored = _TYPED_FIELDS.get(code, ("int32_data", np.int32))
        values = getattr(tensor, field)
        if len(values) != count:
            raise OnnxFormatError(f"tensor {name!r}: {len(values)} values for shape {dims}")
        array = np.array(values, dtype=stored).astype(dtype)
    return array.reshape(dims)


def refresh() -> bool:
    """Write the installed onnx's schema to SCHEMA; True if it changed. Needs `onnx`."""
    from onnx import onnx_ml_pb2

    from ..fsio import write_bytes

    data = onnx_ml_pb2.DESCRIPTOR.serialized_pb
    if SCHEMA.is_file() and SCHEMA.read_bytes() == data:
        return False
    write_bytes(SCHEMA, data)
    return True


if __name__ == "__main__":
    if sys.argv[1:] != ["--refresh"]:
        sys.exit(
            "usage: python -m edgevae.onnxio.proto --refresh  (copies installed onnx's schema)"
        )
    import onnx

    changed = refresh()
    print(f"{SCHEMA}: {'updated to' if changed else 'already matches'} onnx {onnx.__version__}")
