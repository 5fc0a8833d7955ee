"""A small, bounds-checked reader for one real numeric matrix in a MATLAB v5 `.mat` file.

Why not `scipy.io.loadmat`: it is pickle-free, but its compiled parser crashes the whole process
(SIGSEGV) on some corrupt files - one changed byte in the storage type of a matrix's data is
enough (see tests/test_data.py::test_frey_corrupt_mat_is_an_error). A data loader must turn
every bad file into an error message, so this module parses the few element types a numeric
matrix needs, with every length checked against the bytes present before it is used; it also
means scipy is not needed to read Frey Face.

Supported: little- and big-endian v5 files, miCOMPRESSED (zlib) variables, the small data
element format, any real numeric class stored in any numeric storage type. Not supported (an
error): v7.3 (HDF5) files, and a wanted variable that is complex, sparse, char, cell or struct.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from . import checks as c
from .checks import fail

# storage type codes (mi*) -> numpy dtype character
_MI_TYPES = {
    1: "i1",
    2: "u1",
    3: "i2",
    4: "u2",
    5: "i4",
    6: "u4",
    7: "f4",
    9: "f8",
    12: "i8",
    13: "u8",
}
# array class codes (mx*) -> numpy dtype character
_MX_CLASSES = {
    6: "f8",
    7: "f4",
    8: "i1",
    9: "u1",
    10: "i2",
    11: "u2",
    12: "i4",
    13: "u4",
    14: "i8",
    15: "u8",
}
_MX_NAMES = {1: "cell", 2: "struct", 3: "object", 4: "char", 5: "sparse"}
_MI_MATRIX, _MI_COMPRESSED = 14, 15


class _Bad(Exception):
    """Internal: structural problem; turned into a DataError naming the file."""


def _elements(buf: memoryview, endian: str, *, top: bool):
    """Yield (type, body) for the data elements in buf, checking every declared length."""
    pos = 0
    while pos < len(buf):
        if len(buf) - pos < 8:
            if top and not any(buf[pos:]):
                return  # zero padding at the end of the file
            raise _Bad(f"truncated data element at byte {pos}")
        first, second = struct.unpack_from(endian + "II", buf, pos)
        if first >> 16:  # small data element: type and size in 4 bytes, data in the next 4
            mtype, nbytes = first & 0xFFFF, first >> 16
            if nbytes > 4:
                raise _Bad(f"bad small data element at byte {pos}")
            yield mtype, buf[pos + 4 : pos + 4 + nbytes]
            pos += 8
            continue
        mtype, nbytes = first, second
        start = pos + 8
        if nbytes > len(buf) - start:
            raise _Bad(
                f"element at byte {pos} declares {nbytes} bytes, only {len(buf) - start} remain"
            )
        yield mtype, buf[start : start + nbytes]
        pos = start + nbytes
        if not (top and mtype == _MI_COMPRESSED):
            pos += -nbytes % 8


def _inflate(body: memoryview) -> memoryview:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(body, c.MAX_FILE_BYTES + 1)
    except zlib.error as exc:
        raise _Bad(f"corrupt compressed variable ({exc})") from None
    if len(out) > c.MAX_FILE_BYTES:
        raise _Bad(f"a compressed variable expands beyond the {c.MAX_FILE_BYTES}-byte limit")
    if not inflater.eof:
        raise _Bad("truncated compressed variable")
    return memoryview(out)


def _matrix(body: memoryview, endian: str, want: str) -> tuple[str, np.ndarray | None]:
    """(name, array if name == want else None) of one miMATRIX element."""
    parts = _elements(body, endian, top=False)
    try:
        ftype, flags = next(parts)
        dtype_code, dims_raw = next(parts)
        ntype, name_raw = next(parts)
    except StopIteration:
        raise _Bad("incomplete matrix header") from None
    if ftype != 6 or len(flags) != 8 or dtype_code != 5 or len(dims_raw) % 4 or ntype != 1:
        raise _Bad("malformed matrix header")
    name = bytes(name_raw).decode("ascii", "replace")
    if name != want:
        return name, None
    word = struct.unpack_from(endian + "I", flags)[0]
    mx = word & 0xFF
    if mx not in _MX_CLASSES or word & 0x800:
        kind = "complex" if word & 0x800 else _MX_NAMES.get(mx, f"class {mx}")
        raise _Bad(f"variable '{want}' is {kind}, not a real numeric matrix")
    dims = np.frombuffer(dims_raw, dtype=endian + "i4").tolist()
    if len(dims) != 2 or min(dims) < 0:
        raise _Bad(f"variable '{want}' has dimensions {dims}; expected a 2-D matrix")
    try:
        rtype, real = next(parts)
    except StopIteration:
        raise _Bad(f"variable '{want}' has no data") from None
    if rtype not in _MI_TYPES:
        raise _Bad(f"variable '{want}' has unknown storage type {rtype}")
    stored = np.dtype(endian + _MI_TYPES[rtype])
    count = dims[0] * dims[1]
    if len(real) != count * stored.itemsize:
        raise _Bad(
            f"variable '{want}' declares {dims[0]}x{dims[1]} values but holds "
            f"{len(real)} bytes of {stored.name}"
        )
    arr = np.frombuffer(real, dtype=stored, count=count).reshape(dims, order="F")
    return name, arr.astype(np.dtype(_MX_CLASSES[mx]))


def read_mat_variable(path: object, data: bytes, want: str) -> np.ndarray:
    """The real numeric 2-D matrix `want` from the bytes of a MATLAB v5 file."""
    if data.startswith(b"MATLAB 7.3"):
        raise fail(path, "MATLAB v7.3 (HDF5) files are not supported; save with -v7")
    if len(data) < 128 or not data.startswith(b"MATLAB"):
        raise fail(path, "not a MATLAB v5 .mat file (header missing)")
    endian = {b"IM": "<", b"MI": ">"}.get(data[126:128])
    if endian is None:
        raise fail(path, "not a MATLAB v5 .mat file (bad endian indicator)")
    names: list[str] = []
    try:
        for mtype, body in _elements(memoryview(data)[128:], endian, top=True):
            if mtype == _MI_COMPRESSED:
                inner = list(_elements(_inflate(body), endian, top=True))
                if len(inner) != 1:
                    raise _Bad("a compressed element must hold exactly one variable")
                mtype, body = inner[0]
            if mtype != _MI_MATRIX:
                continue
            name, arr = _matrix(body, endian, want)
            if arr is not None:
                return arr
            names.append(name)
    except _Bad as exc:
        raise fail(path, f"corrupt MATLAB file: {exc}") from None
    raise fail(path, f"no variable '{want}' (found: {', '.join(names) or 'none'})")
