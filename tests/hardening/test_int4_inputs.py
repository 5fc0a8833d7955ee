"""The 4-bit inputs, refused like every other bad input (`support.table`): malformed 4-bit
decoders (weights off the 4-bit range, a layer left at int8, the edgevae.weight_bits metadata
wrong or missing, truncated or mistyped files, another model's decoder) through `firmware
--weight-bits 4` (decoder and --score) and `crosscheck run`, which reads every model of an
export; manifests naming the 4-bit decoder badly; bad --weight-bits and --qat-bits values;
and a 4-bit QAT run's corrupt resume state.

Where a row edits decoder.int4.static.onnx, the manifest's sha256 of it is made to match, so
the check under test is the one that refuses it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper
from support.firmware import Variant
from support.firmware_int4 import make_int4_decoder
from support.hardening import images, npy_bytes
from support.table import Case, Ctx, distinct, run_case

import edgevae
from edgevae import fsio
from edgevae.errors import ModelFileError, UsageError

INT4 = "decoder.int4.static.onnx"
TRAIN = ["train", "--no-export", "--threads", "1", "--run-dir", "r", "--epochs", "1"]
FW = ("fw",)
KEEP = (f"exp/{INT4}", "exp/manifest.json")


# ----------------------------------------------------------------------------- helpers


def gemm_weights(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The quantized weight initializer of every Gemm, in graph order (behind its
    DequantizeLinear)."""
    inits = {t.name: t for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    out = []
    for node in model.graph.node:
        if node.op_type == "Gemm":
            dq = producers[node.input[1]]
            out.append(inits[dq.input[0]])
    return out


def _sync(c: Ctx, exp: str, name: str = INT4) -> None:
    """The manifest's files entry of `name` made to match the file as it is now."""
    path = c.tmp / exp / "manifest.json"
    man = json.loads(path.read_text())
    data = (c.tmp / exp / name).read_bytes()
    man["files"][name] = {"bytes": len(data), "sha256": fsio.sha256_of(data)}
    path.write_text(json.dumps(man))


def _edit(c: Ctx, exp: str, edit) -> None:
    """decoder.int4.static.onnx of the export at `exp` rewritten by `edit(model)` (or its
    bytes replaced by `edit(bytes)` when it is given bytes), the manifest kept in step."""
    path = c.tmp / exp / INT4
    if getattr(edit, "raw", False):
        path.write_bytes(edit(path.read_bytes()))
    else:
        model = onnx.load(str(path))
        edit(model)
        path.write_bytes(model.SerializeToString())
    _sync(c, exp)


def raw(fn):
    fn.raw = True
    return fn


def set_weight(layer: int, value: int, at: int = 0):
    """Weight `at` of Gemm `layer` set to `value` (int8)."""

    def edit(model: onnx.ModelProto) -> None:
        t = gemm_weights(model)[layer]
        w = numpy_helper.to_array(t).copy()
        w.flat[at] = value
        t.CopyFrom(numpy_helper.from_array(w.astype(np.int8), t.name))

    return edit


def int8_weights(layer: int):
    """Gemm `layer`'s weights spread over the int8 range (x 16): a layer left at 8 bits."""

    def edit(model: onnx.ModelProto) -> None:
        t = gemm_weights(model)[layer]
        w = numpy_helper.to_array(t).astype(np.int64) * 16
        t.CopyFrom(numpy_helper.from_array(np.clip(w, -128, 127).astype(np.int8), t.name))

    return edit


def metadata(value: str | None):
    """edgevae.weight_bits set to `value` (None: removed)."""

    def edit(model: onnx.ModelProto) -> None:
        for prop in list(model.metadata_props):
            if prop.key == "edgevae.weight_bits":
                model.metadata_props.remove(prop)
        if value is not None:
            model.metadata_props.add(key="edgevae.weight_bits", value=value)

    return edit


def as_onnx_int4(model: onnx.ModelProto) -> None:
    """The last Gemm's weights declared as ONNX's own INT4 type (bytes unchanged)."""
    gemm_weights(model)[-1].data_type = TensorProto.INT4


def weight_zero_point(model: onnx.ModelProto) -> None:
    """The last Gemm's weight zero points set to 1 (the 4-bit grid is symmetric)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    gemm = [n for n in model.graph.node if n.op_type == "Gemm"][-1]
    zp_name = producers[gemm.input[1]].input[2]
    for t in model.graph.initializer:
        if t.name == zp_name:
            t.CopyFrom(numpy_helper.from_array(np.ones(numpy_helper.to_array(t).shape, np.int8),
                                               t.name))  # fmt: skip


def _firmware(edit=None, *extra: str):
    """firmware --weight-bits 4 on a copy of the tiny export, its int4 decoder edited."""

    def setup(c: Ctx) -> list[str]:
        exp = c.copy("tiny_export", "exp")
        if edit is not None:
            _edit(c, exp, edit)
        return ["firmware", "--export-dir", exp, "--out", "fw", "--weight-bits", "4", *extra]

    return setup


def _manifest_names(value, key: str = "firmware_decoder_int4", bits: str = "4"):
    """firmware --weight-bits `bits` on a copy of the tiny export whose manifest has `key`
    set to `value`."""

    def setup(c: Ctx) -> list[str]:
        exp = c.copy("tiny_export", "exp")
        path = c.tmp / exp / "manifest.json"
        man = json.loads(path.read_text())
        man[key] = value
        path.write_text(json.dumps(man))
        return ["firmware", "--export-dir", exp, "--out", "fw", "--weight-bits", bits]

    return setup


def _manifest_not_an_object(c: Ctx) -> list[str]:
    exp = c.copy("tiny_export", "exp")
    c.write(f"{exp}/manifest.json", "[1, 2]")
    return ["firmware", "--export-dir", exp, "--out", "fw", "--weight-bits", "4"]


def _int8_renamed(c: Ctx) -> list[str]:
    exp = c.copy("tiny_export", "exp")
    (c.tmp / exp / INT4).write_bytes((c.tmp / exp / "decoder.int8.static.onnx").read_bytes())
    _sync(c, exp)
    return ["firmware", "--export-dir", exp, "--out", "fw", "--weight-bits", "4"]


def _no_int4(c: Ctx) -> list[str]:
    exp = c.copy("tiny_export", "exp")
    (c.tmp / exp / INT4).unlink()
    return ["firmware", "--export-dir", exp, "--out", "fw", "--weight-bits", "4"]


def _three_layers(edit):
    """firmware --weight-bits 4 on a file: a 5-37-22-99 int4 decoder (two 4-bit layers)."""

    def setup(c: Ctx) -> list[str]:
        model = onnx.load(str(c.fixture("three_layer_int4")))
        edit(model)
        c.model("dec4.onnx", model)
        return ["firmware", "--export-dir", "dec4.onnx", "--out", "fw", "--weight-bits", "4"]

    return setup


def _another_models_int4(c: Ctx) -> list[str]:
    exp = c.copy("tiny_export", "exp")
    (c.tmp / exp / INT4).write_bytes(c.fixture("three_layer_int4").read_bytes())
    _sync(c, exp)
    return ["firmware", "--export-dir", exp, "--out", "fw", "--weight-bits", "4", "--score"]


def _crosscheck(edit):
    def setup(c: Ctx) -> list[str]:
        exp = c.copy("tiny_export", "exp")
        _edit(c, exp, edit)
        return ["crosscheck", "run", "--export-dir", exp, "--out", "r.npz", "--no-sample"]

    return setup


def _crosscheck_manifest(key: str, value):
    def setup(c: Ctx) -> list[str]:
        exp = c.copy("tiny_export", "exp")
        path = c.tmp / exp / "manifest.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
        return ["crosscheck", "run", "--export-dir", exp, "--out", "r.npz", "--no-sample"]

    return setup


def _qat_resume(edit):
    """train --resume of a copy of the 4-bit QAT run, its resume state's steps edited."""

    def setup(c: Ctx) -> list[str]:
        run = c.copy("qat_run", "qat")
        path = c.tmp / run / "state.safetensors"
        path.write_bytes(edit(path.read_bytes()))
        return ["train", "--resume", "--run-dir", run, "--epochs", "2", "--threads", "1",
                "--no-export"]  # fmt: skip

    return setup


def _safetensors_tensor(data: bytes, name: str) -> tuple[dict, int, int]:
    """(header entry, start, end) of tensor `name` in a safetensors file's bytes."""
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    entry = header[name]
    start, end = entry["data_offsets"]
    return entry, 8 + n + start, 8 + n + end


def nan_steps(data: bytes) -> bytes:
    _, start, end = _safetensors_tensor(data, "qat.decoder.out")
    return data[:start] + struct.pack("<f", float("nan")) * ((end - start) // 4) + data[end:]


def int_steps(data: bytes) -> bytes:
    """The steps' dtype declared I32 (same size, so the file still parses)."""
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    header["qat.decoder.out"]["dtype"] = "I32"
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (n - len(text))
    assert len(text) == n
    return data[:8] + text + data[8 + n :]


# ------------------------------------------------------------------------------- table

OFF = (
    r"node '[^']+' has weights {}, off the 4-bit range -8\.\.7 that every layer but the first "
    r"of a 4-bit decoder holds"
)
META = (
    r"^error: decoder\.int4\.static\.onnx: metadata edgevae\.weight_bits is {}; a 4-bit "
    r"decoder \(the int4 recipe's\) declares '4'"
)
NO_4BIT = (
    r"no layer has 4-bit weights \(all in -8\.\.7\); 4-bit firmware needs the decoder the int4 "
    r"recipe writes"
)
WEIGHT_BITS = r"Invalid value for '--weight-bits': '{}' is not one of '8', '4'"
QAT_BITS = r"Invalid value for '--qat-bits': '{}' is not one of '0', '4'"

CASES = [
    # malformed 4-bit weights: firmware --weight-bits 4
    Case("int4: a weight of 8 in a 4-bit layer", _firmware(set_weight(-1, 8)), 1,
         r"^error: decoder\.int4\.static\.onnx: " + OFF.format(r"-\d\.\.8"), keep=KEEP,
         absent=FW),
    Case("int4: a weight of -9 in a 4-bit layer", _firmware(set_weight(-1, -9, at=5)), 1,
         OFF.format(r"-9\.\.\d"), keep=KEEP, absent=FW),
    Case("int4: a weight of 127 in a 4-bit layer", _firmware(set_weight(-1, 127, at=100)), 1,
         OFF.format(r"-\d\.\.127"), keep=KEEP, absent=FW),
    Case("int4: the 4-bit layer left at int8 (off the grid)", _firmware(int8_weights(-1)), 1,
         OFF.format(r"-\d+\.\.\d+"), keep=KEEP, absent=FW),
    Case("int4: one of two 4-bit layers left at int8", _three_layers(int8_weights(1)), 1,
         r"dec4\.onnx: " + OFF.format(r"-\d+\.\.\d+"), absent=FW),
    Case("int4: one weight of 8 in the second of two 4-bit layers", _three_layers(
         set_weight(2, 8, at=3)), 1, r"dec4\.onnx: node 'node_gemm2' has weights -8\.\.8",
         absent=FW),
    Case("int4: the int8 decoder under the int4 name", _int8_renamed, 1, NO_4BIT, keep=KEEP,
         absent=FW),
    Case("int4: metadata weight_bits 8", _firmware(metadata("8")), 1, META.format("'8'"),
         keep=KEEP, absent=FW),
    Case("int4: metadata weight_bits missing", _firmware(metadata(None)), 1,
         META.format("missing"), keep=KEEP, absent=FW),
    Case("int4: metadata weight_bits not a number", _firmware(metadata("four")), 1,
         META.format("'four'"), absent=FW),
    Case("int4: metadata weight_bits empty", _firmware(metadata("")), 1, META.format("''"),
         absent=FW),
    Case("int4: metadata weight_bits missing in a file", _three_layers(metadata(None)), 1,
         r"dec4\.onnx: metadata edgevae\.weight_bits is missing", absent=FW),
    Case("int4: truncated", _firmware(raw(lambda b: b[: len(b) // 2])), 1,
         r"^error: decoder\.int4\.static\.onnx: not a readable ONNX model \(truncated or not "
         r"protobuf\)", keep=KEEP, absent=FW),
    Case("int4: empty", _firmware(raw(lambda b: b"")), 1,
         r"^error: decoder\.int4\.static\.onnx: not a readable ONNX model", absent=FW),
    Case("int4: weights declared as ONNX INT4", _firmware(as_onnx_int4), 1,
         r"^error: decoder\.int4\.static\.onnx: not a readable ONNX model \(tensor '[^']+' has "
         r"unsupported data type 22\)", absent=FW),
    Case("int4: a non-zero weight zero point", _firmware(weight_zero_point), 1,
         r"^error: decoder\.int4\.static\.onnx: node '[^']+' \(op Gemm\) has a non-zero weight "
         r"zero point; the kernel needs symmetric int8", absent=FW),
    Case("int4: missing", _no_int4, 1,
         r"^error: exp/manifest\.json: firmware_decoder_int4 'decoder\.int4\.static\.onnx' does "
         r"not exist", absent=FW),
    Case("int4 --score: a weight of 8", _firmware(set_weight(-1, 8), "--score"), 1,
         OFF.format(r"-\d\.\.8"), keep=KEEP, absent=FW),
    Case("int4 --score: metadata missing", _firmware(metadata(None), "--score"), 1,
         META.format("missing"), absent=FW),
    Case("int4 --score: another model's 4-bit decoder", _another_models_int4, 1,
         r"^error: encoder\.int8\.static\.onnx \(784 -> 4\) does not pair with "
         r"decoder\.int4\.static\.onnx \(5 -> 99\)", absent=FW),
    # the manifest's name of the 4-bit decoder
    Case("manifest: firmware_decoder_int4 a number", _manifest_names(5), 1,
         r"exp/manifest\.json: firmware_decoder_int4 5 is not a file name", absent=FW),
    Case("manifest: firmware_decoder_int4 a list", _manifest_names([INT4]), 1,
         r"exp/manifest\.json: firmware_decoder_int4 \['decoder\.int4\.static\.onnx'\] is not a "
         r"file name", absent=FW),
    Case("manifest: firmware_decoder_int4 outside the export", _manifest_names(f"../{INT4}"), 1,
         r"firmware_decoder_int4 '\.\./decoder\.int4\.static\.onnx' is not a file name",
         absent=FW),
    Case("manifest: firmware_decoder_int4 a missing file", _manifest_names("gone.onnx"), 1,
         r"exp/manifest\.json: firmware_decoder_int4 'gone\.onnx' does not exist", absent=FW),
    Case("manifest: firmware_decoder a number (8-bit)", _manifest_names(
         7, "firmware_decoder", "8"), 1,
         r"exp/manifest\.json: firmware_decoder 7 is not a file name", absent=FW),
    Case("manifest: not an object", _manifest_not_an_object, 1,
         r"exp/manifest\.json: not an edgevae manifest \(not a JSON object\)", absent=FW),
    # crosscheck run reads every model of the export, the 4-bit decoder too
    Case("crosscheck: a truncated int4 decoder", _crosscheck(raw(lambda b: b[:-100])), 2,
         r"exp/decoder\.int4\.static\.onnx: not an ONNX model \(truncated or not protobuf\)",
         absent=("r.npz",)),
    Case("crosscheck: an int4 decoder that is not ONNX", _crosscheck(raw(lambda b: b"\0" * 64)),
         2, r"exp/decoder\.int4\.static\.onnx: ", absent=("r.npz",)),
    Case("crosscheck: manifest classes over the cap", _crosscheck_manifest(
         "classes", [str(i) for i in range(10_001)]), 2,
         r"exp/manifest\.json: classes must be a list of at most 10000 names", absent=("r.npz",)),
    Case("crosscheck: manifest latent_dim negative", _crosscheck_manifest("latent_dim", -1), 2,
         r"exp/manifest\.json: latent_dim must be in 1\.\.4096, got -1", absent=("r.npz",)),
    Case("crosscheck: manifest image_shape too large", _crosscheck_manifest(
         "image_shape", [100_000, 100_000]), 2,
         r"exp/manifest\.json: image_shape must be \[height, width\] in 1\.\.4096",
         absent=("r.npz",)),
    # --weight-bits and --qat-bits values
    *(Case(f"firmware --weight-bits {v!r}", lambda c, v=v: ["firmware", "--export-dir",
      c.copy("tiny_export", "exp"), "--out", "fw", "--weight-bits", v], 2,
      WEIGHT_BITS.format(v), absent=FW) for v in ("5", "0", "16", "-4", "four", "4.0", "")),
    Case("firmware --weight-bits without a value", lambda c: ["firmware", "--export-dir",
         c.copy("tiny_export", "exp"), "--out", "fw", "--weight-bits"], 2,
         r"Option '--weight-bits' requires an argument", absent=FW),
    *(Case(f"train --qat-bits {v!r}", lambda c, v=v: [*TRAIN, "--data", c.write(
      "d.npy", npy_bytes(images(40))), "--qat-bits", v], 2, QAT_BITS.format(v),
      absent=("r", "runs")) for v in ("3", "8", "1", "-4", "x", "4.0", "")),
    # a 4-bit QAT run's resume state
    Case("train --resume: QAT steps that are NaN", _qat_resume(nan_steps), 1,
         r"qat/state\.safetensors: corrupt resume state \(qat\.decoder\.out\)",
         keep=("qat/state.safetensors", "qat/config.json")),
    Case("train --resume: QAT steps that are integers", _qat_resume(int_steps), 1,
         r"qat/state\.safetensors: corrupt resume state \(qat\.decoder\.out\)"),
]  # fmt: skip


@pytest.fixture(scope="session")
def three_layer_int4(tmp_path_factory) -> Path:
    """A 5-37-22-99 decoder through the int4 recipe: an int8 layer, then two 4-bit layers."""
    root = tmp_path_factory.mktemp("int4")
    return make_int4_decoder(root, Variant("int4-3", hidden=(37, 22), latent=5, out=99, seed=3))


@pytest.fixture(scope="session")
def qat_run(tmp_path_factory) -> Path:
    """A 1-epoch 784-16-2 run with 4-bit QAT on 60 images."""
    base = tmp_path_factory.mktemp("qat")
    data = base / "d.npy"
    np.save(data, images(60, seed=4))
    edgevae.train(str(data), run_dir=base / "run", epochs=1, hidden=[16], latent_dim=2,
                  batch_size=10, threads=1, qat_bits=4)  # fmt: skip
    return base / "run"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_int4_input_refused(case: Case, tmp_path, monkeypatch, capfd, request) -> None:
    run_case(case, tmp_path, monkeypatch, capfd, request)


def test_the_table_is_distinct() -> None:
    distinct(CASES)


# ----------------------------------------------------------------------------- the API


def test_the_api_refuses_bad_bit_widths(tmp_path, three_layer_int4) -> None:
    """The same refusals from Python: typed errors naming the argument or the file."""
    from edgevae.firmware.deploy import write_firmware
    from edgevae.firmware.intmodel import load_int_model

    for bits in (3, 8, -4, True):
        with pytest.raises(UsageError, match=r"must be 0 \(off\) or 4") as info:
            edgevae.train(run_dir=tmp_path / "r", qat_bits=bits, epochs=1)
        assert info.value.param == "qat_bits"
    assert not (tmp_path / "r").exists()
    for bits in (5, 0, 16):
        with pytest.raises(UsageError, match=rf"must be 8 or 4, got {bits}") as info:
            write_firmware(three_layer_int4, tmp_path / "fw", command="t", weight_bits=bits)
        assert info.value.param == "weight_bits"
        with pytest.raises(ModelFileError, match=rf"weight bits must be 8 or 4, got {bits}"):
            load_int_model(three_layer_int4, bits)
    assert not (tmp_path / "fw").exists()
    model = onnx.load(str(three_layer_int4))
    set_weight(1, -9)(model)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(model.SerializeToString())
    with pytest.raises(ModelFileError, match=r"node 'node_gemm1' has weights -9\.\.7") as info:
        load_int_model(bad, 4)
    assert "--" not in str(info.value)  # the library names no CLI flag
    assert [layer.weight_bits for layer in load_int_model(bad, 8).layers] == [8, 8, 8]


def test_a_well_formed_int4_decoder_still_deploys(three_layer_int4) -> None:
    from edgevae.firmware.intmodel import load_int_model

    assert [layer.weight_bits for layer in load_int_model(three_layer_int4, 4).layers] == [8, 4, 4]
