"""Builders shared by test_hardening.py and test_faults.py: tiny hand-made exports, data files
in every format (valid and hostile), pickle payloads, file-tree snapshots, and the two ways
of filling a disk (a real tmpfs when mounting is permitted, an fsync hook otherwise).

Everything is built in milliseconds without torch, so each test case gets fresh files.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[2]
LATENT, SIDE = 4, 28
DIM = SIDE * SIDE

# --------------------------------------------------------------------------- ONNX models


def _gemm(name: str, inp: str, out: str, rows: int, cols: int, rng) -> tuple:
    w = rng.standard_normal((rows, cols)).astype(np.float32) * np.float32(0.1)
    wt = numpy_helper.from_array(w, f"{name}.weight")
    bt = numpy_helper.from_array(np.zeros(rows, np.float32), f"{name}.bias")
    node = helper.make_node("Gemm", [inp, wt.name, bt.name], [out], name=name, transB=1)
    return node, [wt, bt]


def onnx_model(
    role: str,
    latent: int = LATENT,
    dim: int = DIM,
    hidden: int = 16,
    *,
    seed: int = 0,
    ir: int = 10,
    opset: int = 20,
    fails_at_run: bool = False,
) -> onnx.ModelProto:
    """An encoder (x -> mu, logvar) or decoder (z -> x_mean, logits) MLP with edgevae's I/O
    names and role metadata; `fails_at_run` adds a Reshape that loads fine and fails in run()."""
    rng = np.random.default_rng(seed)
    if role == "encoder":
        n1, i1 = _gemm("enc.0", "x", "h0", hidden, dim, rng)
        n2, i2 = _gemm("enc.mu", "h", "mu", latent, hidden, rng)
        n3, i3 = _gemm("enc.logvar", "h", "logvar", latent, hidden, rng)
        nodes = [n1, helper.make_node("Relu", ["h0"], ["h"], name="enc.relu"), n2, n3]
        inits = i1 + i2 + i3
        ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dim])]
        outs = [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", latent])
            for n in ("mu", "logvar")
        ]
    else:
        n1, i1 = _gemm("dec.0", "z", "h0", hidden, latent, rng)
        n2, i2 = _gemm("dec.out", "h", "raw" if fails_at_run else "logits", dim, hidden, rng)
        nodes = [n1, helper.make_node("Relu", ["h0"], ["h"], name="dec.relu"), n2]
        inits = i1 + i2
        if fails_at_run:  # [batch, dim] reshaped to z's [batch, latent]: fails inside run()
            nodes += [
                helper.make_node("Shape", ["z"], ["zshape"], name="dec.shape"),
                helper.make_node("Reshape", ["raw", "zshape"], ["logits"], name="dec.reshape"),
            ]
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["x_mean"], name="dec.sigmoid"))
        ins = [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", latent])]
        outs = [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", dim])
            for n in ("x_mean", "logits")
        ]
    graph = helper.make_graph(nodes, role, ins, outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    model.metadata_props.add(key="edgevae.role", value=role)
    return model


def manifest_dict(latent: int = LATENT, shape=(SIDE, SIDE)) -> dict:
    return {
        "schema": 1,
        "latent_dim": latent,
        "image_shape": list(shape),
        "likelihood": "bernoulli",
        "files": {},
    }


def mini_export(path: Path, latent: int = LATENT) -> Path:
    """An export dir the runtime accepts: fp32 and int8 encoder/decoder plus manifest.json."""
    path.mkdir(parents=True, exist_ok=True)
    for role in ("encoder", "decoder"):
        data = onnx_model(role, latent).SerializeToString()
        for precision in ("fp32", "int8"):
            (path / f"{role}.{precision}.onnx").write_bytes(data)
    (path / "manifest.json").write_text(json.dumps(manifest_dict(latent)))
    return path


def with_heldout(path: Path, n: int = 20, labels: list[int] | None = None, **entry) -> Path:
    """Add `n` held-out images (heldout.npy, and its manifest entry: `entry` overrides fields,
    `labels` adds labels with classes "0".."9") to an export dir."""
    from edgevae.runtime import heldout

    man = json.loads((path / "manifest.json").read_text())
    man["heldout"] = heldout.write(path, images(n).reshape(n, -1) / np.float32(255), "test")
    if labels is not None:
        man["heldout"].update(labels=labels, classes=[str(i) for i in range(10)])
    man["heldout"].update(entry)
    (path / "manifest.json").write_text(json.dumps(man))
    return path


# ----------------------------------------------------------------------------- data files


def images(n: int, h: int = SIDE, w: int = SIDE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


def idx_bytes(arr: np.ndarray, count: int | None = None) -> bytes:
    n, h, w = arr.shape
    return struct.pack(">BBBBIII", 0, 0, 8, 3, n if count is None else count, h, w) + (
        arr.astype(np.uint8).tobytes()
    )


def idx_label_bytes(labels, count: int | None = None, magic: int = 2049) -> bytes:
    """An IDX label file (magic 2049, uint8 labels); `count` overrides the declared count."""
    labels = np.asarray(labels, dtype=np.uint8)
    n = len(labels) if count is None else count
    return struct.pack(">II", magic, n) + labels.tobytes()


def amat_bytes(bits: np.ndarray) -> bytes:
    rows = bits.reshape(len(bits), -1)
    return "".join(" ".join(str(int(v)) for v in row) + "\n" for row in rows).encode()


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose IHDR declares w x h 8-bit gray pixels, with a few bytes of IDAT."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def png_bytes(arr: np.ndarray, mode: str = "L") -> bytes:
    from PIL import Image

    im = Image.fromarray(arr.astype(np.uint8), mode="L").convert(mode)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8), mode="L").save(buf, format="JPEG")
    return buf.getvalue()


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute every chunk CRC (so mutated chunk data reaches the parser's checks)."""
    out, pos = bytearray(data[:8]), 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 8 + length
        if end + 4 > len(data):
            out += data[pos:]
            return bytes(out)
        kind_data = data[pos + 4 : end]
        out += data[pos : pos + 4] + kind_data + struct.pack(">I", zlib.crc32(kind_data))
        pos = end + 4
    out += data[pos:]
    return bytes(out)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


class Payload:
    """Unpickling this creates `marker`: proof that pickle ran, if the marker ever appears."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def pickle_npy(marker: Path) -> bytes:
    """A .npy of dtype object whose payload, once unpickled, creates `marker`."""
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }"
    header += " " * (117 - len(header)) + "\n"
    body = pickle.dumps([Payload(marker), 1.0])
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + body


def pickle_npz(marker: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x_train.npy", pickle_npy(marker))
    return buf.getvalue()


def payload_is_live(tmp: Path) -> bool:
    """The payload really executes when numpy is allowed to unpickle it."""
    probe, marker = tmp / ".probe.npy", tmp / ".probe-marker"
    probe.write_bytes(pickle_npy(marker))
    np.load(probe, allow_pickle=True)
    live = marker.exists()
    probe.unlink()
    marker.unlink(missing_ok=True)
    return live


# ------------------------------------------------------------------------ file-tree checks


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every regular file (symlinks by their target text)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_file():
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[rel] = "special"
    return out


def one_error_line(err: str) -> str:
    """stderr holds exactly one non-empty line, an `error:` line, and no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err, err
    return lines[0]


def final_error_line(err: str) -> str:
    """For a command that fails mid-training: the epoch progress lines it printed, then exactly
    one `error:` line, last; no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith("error: "), err
    assert all(line.startswith("epoch") for line in lines[:-1]), err
    return lines[-1]


def temp_files(directory: Path) -> list[str]:
    """fsio's temp files (.NAME.XXXX.tmp) left in a directory."""
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ----------------------------------------------------------------------------- full disks

SITECUSTOMIZE = '''
"""Test hook: fsync of a file under $EDGEVAE_TEST_FULL_DIR fails with ENOSPC once the files
fsync'ed there total more than $EDGEVAE_TEST_FULL_BYTES (a disk that fills up)."""
import errno
import os

_DIR = os.environ.get("EDGEVAE_TEST_FULL_DIR")
if _DIR:
    _left = [int(os.environ.get("EDGEVAE_TEST_FULL_BYTES", "0"))]
    _real_fsync = os.fsync

    def _fsync(fd):
        try:
            path = os.readlink(f"/proc/self/fd/{int(fd)}")
        except (OSError, TypeError, ValueError):
            path = ""
        if path.startswith(_DIR + os.sep) and os.path.isfile(path):
            size = os.fstat(fd).st_size
            if size > _left[0]:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            _left[0] -= size
        return _real_fsync(fd)

    os.fsync = _fsync
'''


@contextlib.contextmanager
def full_disk(mount_point: Path, kind: str, free_bytes: int, hook_dir: Path) -> Iterator[dict]:
    """A directory where writes run out of space after about `free_bytes` bytes.

    kind "tmpfs": a 4 MiB tmpfs mounted at `mount_point`, filled up to `free_bytes` of free
    space by a filler file (real ENOSPC from write()). If mounting is not permitted here, it
    falls back to the hook. kind "hook": a sitecustomize.py (in `hook_dir`, put on the child's
    PYTHONPATH) makes fsync raise ENOSPC past `free_bytes`. Yields {"kind", "env", "fill"}:
    the environment for the child process, and fill() to call once the directory holds what
    must survive (only tmpfs fills; the hook starts counting in the child).
    """
    mount_point.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    mounted = False
    if kind == "tmpfs":
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
            capture_output=True,
            text=True,
        )
        mounted = proc.returncode == 0
        if not mounted:
            print(f"tmpfs not permitted here ({proc.stderr.strip()}); using the fsync hook")
    try:
        if mounted:

            def fill() -> None:
                st = os.statvfs(mount_point)
                filler = (st.f_bavail * st.f_frsize) - free_bytes
                with open(mount_point / ".filler", "wb", buffering=0) as fh:
                    while filler > 0:
                        try:
                            fh.write(b"\0" * min(filler, 1 << 20))
                        except OSError as exc:
                            if exc.errno != errno.ENOSPC:
                                raise
                            break
                        filler -= 1 << 20
                # what is left may be a little less than asked: tmpfs counts pages

            yield {"kind": "tmpfs", "env": env, "fill": fill}
        else:
            hook_dir.mkdir(parents=True, exist_ok=True)
            (hook_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(hook_dir), *filter(None, [env.get("PYTHONPATH")])]
            )
            env["EDGEVAE_TEST_FULL_DIR"] = str(mount_point.resolve())
            env["EDGEVAE_TEST_FULL_BYTES"] = str(free_bytes)
            yield {"kind": "hook", "env": env, "fill": lambda: None}
    finally:
        if mounted:
            if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def edgevae(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 300):
    """`python -m edgevae ARGS` in a child process; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "edgevae", *args],
        cwd=cwd,
        env=env or {**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def mat_bytes(ff: np.ndarray, *, compressed: bool = False, name: bytes = b"ff") -> bytes:
    """A MATLAB v5 file holding one uint8 matrix (Frey Face layout: 560 x N), little-endian."""

    def element(mtype: int, body: bytes) -> bytes:
        return struct.pack("<II", mtype, len(body)) + body + b"\0" * (-len(body) % 8)

    rows, cols = ff.shape
    body = (
        element(6, struct.pack("<II", 9, 0))  # array flags: class mxUINT8
        + element(5, struct.pack("<ii", rows, cols))  # dimensions
        + element(1, name)  # array name
        + element(2, np.asarray(ff, np.uint8).tobytes(order="F"))  # real part, miUINT8
    )
    matrix = element(14, body)
    if compressed:
        data = zlib.compress(matrix)
        matrix = struct.pack("<II", 15, len(data)) + data
    header = b"MATLAB 5.0 MAT-file, written by edgevae tests".ljust(116) + b"\0" * 8
    return header + struct.pack("<H", 0x0100) + b"IM" + matrix
