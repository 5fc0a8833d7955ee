"""The protobuf wire format, just enough to read and write ONNX files without the onnx package.

The device path has only numpy and onnxruntime, so `onnxcheck`, `onnxmodel` and `crosscheck`
read ModelProto bytes and `peak` writes its probe models with these few functions instead of a
protobuf library.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

VARINT, I64, LEN, I32 = 0, 1, 2, 5  # the wire types ONNX uses
_UINT64 = (1 << 64) - 1


class Truncated(Exception):
    """The bytes end inside a field or hold something that is not protobuf."""


# --------------------------------------------------------------------------- reading


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it); unsigned, so a negative int64 reads as value + 2**64."""
    result = shift = 0
    while True:
        # 10 bytes carry 64 bits: a longer varint is corrupt, not a big number.
        if pos >= len(buf) or shift > 63:
            raise Truncated
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, int | bytes | memoryview]]:
    """Yield (field number, wire type, value) of one message: value is an int for varints, else
    a slice of `buf` (pass a memoryview and nested messages are read without copies)."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == VARINT:
            val, pos = read_varint(buf, pos)
        elif wt == I64:
            val, pos = buf[pos : pos + 8], pos + 8
        elif wt == LEN:
            ln, pos = read_varint(buf, pos)
            if pos + ln > len(buf):
                raise Truncated
            val, pos = buf[pos : pos + ln], pos + ln
        elif wt == I32:
            val, pos = buf[pos : pos + 4], pos + 4
        else:  # groups (3, 4) are not in ONNX's schema
            raise Truncated
        if pos > len(buf):
            raise Truncated
        yield num, wt, val


def packed_varints(buf: bytes | memoryview) -> list[int]:
    """The values of a packed repeated integer field (e.g. TensorProto.dims)."""
    out, pos = [], 0
    while pos < len(buf):
        value, pos = read_varint(buf, pos)
        out.append(value)
    return out


def repeated_varints(wt: int, val: int | bytes | memoryview) -> list[int]:
    """The values one occurrence of a repeated integer field adds: readers must accept both
    encodings, packed (one LEN field) and unpacked (one VARINT field per value)."""
    return [val] if wt == VARINT else packed_varints(val)


def repeated_fixed(wt: int, val: bytes | memoryview, code: str) -> tuple:
    """The same for a repeated float ("f", I32) or double ("d", I64) field."""
    count = len(val) // struct.calcsize(code) if wt == LEN else 1
    return struct.unpack(f"<{count}{code}", val)


def int64(value: int) -> int:
    """A varint read back as the int64 it holds (a negative one was written as value + 2**64)."""
    return value - (1 << 64) if value >= 1 << 63 else value


# --------------------------------------------------------------------------- writing


def varint(n: int) -> bytes:
    """Base-128, low group first; a negative n is written as its 64-bit two's complement, as
    protobuf does for int32/int64 fields."""
    n &= _UINT64
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def field(num: int, value: int | str | bytes) -> bytes:
    """One field: a varint for ints, length-delimited for strings, bytes and messages."""
    if isinstance(value, int):
        return varint(num << 3 | VARINT) + varint(value)
    data = value.encode() if isinstance(value, str) else value
    return varint(num << 3 | LEN) + varint(len(data)) + data


def message(*items: tuple[int, int | str | bytes]) -> bytes:
    """A message from (field number, value) pairs, in order; repeat a number for a list."""
    return b"".join(field(num, value) for num, value in items)
