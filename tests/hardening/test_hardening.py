"""Every bad input is refused the same way: one line naming the thing and what is wrong, exit
code 2 (usage) or 1 (runtime), no traceback (unless --debug), nothing lost, nothing created,
nothing unpickled, and no onnxruntime session for a model that fails vetting.

`test_bad_input` is ONE table: each Case builds its files under tmp_path (the working
directory), runs `edgevae.cli.main(argv)` in-process with stderr captured at the fd level (so
onnxruntime's own C++ log lines would count), and checks exit code, message, and the whole
file tree before and after. The fuzz tests below feed mutated valid files to each reader that
test_data.py / test_onnxcheck.py do not fuzz already, and accept only clean errors.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from support.hardening import (
    DIM,
    LATENT,
    amat_bytes,
    edgevae,
    fix_png_crcs,
    gz,
    idx_bytes,
    images,
    jpeg_bytes,
    manifest_dict,
    mat_bytes,
    mini_export,
    npy_bytes,
    npz_bytes,
    one_error_line,
    onnx_model,
    payload_is_live,
    pickle_npz,
    png_bytes,
    png_header_only,
    snapshot,
)

from edgevae.cli import main
from edgevae.config import ModelConfig, TrainConfig
from edgevae.data import npy as npyfile
from edgevae.data.core import load_images
from edgevae.errors import DataError, EdgeVAEError, ModelFileError
from edgevae.runtime import manifest
from edgevae.runtime.model import Model
from edgevae.runtime.session import open_session, run_session
from edgevae.training import checkpoint, runconfig

# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A real 2-epoch run (784-16-2) and the state of a run with another config (784-8-2)."""
    from edgevae.training.loop import train

    base = tmp_path_factory.mktemp("runs")
    data = base / "blobs.npy"
    np.save(data, images(60, seed=3))
    tcfg = dict(batch_size=10, threads=1, data=str(data))
    train(ModelConfig(784, (28, 28), hidden=[16], latent_dim=2), TrainConfig(epochs=2, **tcfg),
          base / "run")  # fmt: skip
    train(ModelConfig(784, (28, 28), hidden=[8], latent_dim=2), TrainConfig(epochs=1, **tcfg),
          base / "other")  # fmt: skip
    return {"run": base / "run", "other": base / "other", "data": data}


@dataclass
class Ctx:
    """What a Case's setup gets: the working dir (tmp_path) and helpers to fill it."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    runs: dict[str, Path]
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def write(self, rel: str, data: bytes | str) -> str:
        path = self.tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode()
        path.write_bytes(data)
        return rel

    def export(self, rel: str = "exp", **kwargs) -> str:
        mini_export(self.tmp / rel, **kwargs)
        return rel

    def model(self, rel: str, proto: onnx.ModelProto) -> None:
        self.write(rel, proto.SerializeToString())

    def run(self, rel: str = "run") -> str:
        shutil.copytree(self.runs["run"], self.tmp / rel, ignore=shutil.ignore_patterns(".lock"))
        return rel

    def forbid_sessions(self) -> None:
        """Any onnxruntime session fails the test: vetting must refuse the model first."""

        def no_session(*args, **kwargs):
            raise AssertionError("an onnxruntime session was created for a refused model")

        self.monkeypatch.setattr(onnxruntime, "InferenceSession", no_session)


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Ctx], list[str]]  # builds files under tmp_path, returns argv
    code: int  # expected exit code
    message: str  # regex the one stderr line must match
    keep: tuple[str, ...] = ()  # files that must exist before and be byte-identical after
    absent: tuple[str, ...] = ()  # paths that must not exist afterwards
    debug: bool = False  # run `python -m edgevae` in a child: a traceback is expected instead


# Files a failing command may create: the lock of a run dir it tried to train in.
ALLOWED_NEW = re.compile(r"(^|/)\.lock$")

# ------------------------------------------------------------------------ setups: data


def _encode(c: Ctx, data: str) -> list[str]:
    return ["encode", "--data", data, "--out", "z.npy", "--export-dir", c.export()]


def _idx_truncated(c: Ctx) -> list[str]:
    c.write("cut.idx", idx_bytes(images(10, 4, 4))[:-60])
    return _encode(c, "cut.idx")


def _idx_header_larger_gz(c: Ctx) -> list[str]:
    c.write("big.idx.gz", gz(idx_bytes(images(2), count=60000)))
    return _encode(c, "big.idx.gz")


def _amat_bad_value(c: Ctx) -> list[str]:
    bits = np.random.default_rng(0).integers(0, 2, (3, 16))
    text = amat_bytes(bits).decode().splitlines()
    text[1] = "2" + text[1][1:]
    c.write("bad.amat", "\n".join(text) + "\n")
    return _encode(c, "bad.amat")


def _npz_pickle(c: Ctx) -> list[str]:
    assert payload_is_live(c.tmp)  # the payload does run when numpy may unpickle it
    c.write("evil.npz", pickle_npz(c.tmp / "PWNED"))
    return _encode(c, "evil.npz")


def _npy_nan(c: Ctx) -> list[str]:
    c.write("nan.npy", npy_bytes(np.full((10, 4, 4), np.nan, np.float32)))
    return _encode(c, "nan.npy")


def _png_folder(c: Ctx, rel: str, **files: bytes) -> str:
    for name, data in files.items():
        c.write(f"{rel}/{name}", data)
    return rel


def _png_bomb(c: Ctx) -> list[str]:
    return _encode(c, _png_folder(c, "bomb", **{"bomb.png": png_header_only(100_000, 100_000)}))


def _png_side_over_cap(c: Ctx) -> list[str]:
    return _encode(c, _png_folder(c, "wide", **{"wide.png": png_header_only(5000, 20)}))


def _png_folder_total(c: Ctx) -> list[str]:
    # Each header is within the per-image cap; 40 of them as float32 are 2.7 GB. Header-only
    # files would fail to decode, so the message proves nothing was decoded.
    files = {f"f{i:02d}.png": png_header_only(4096, 4096) for i in range(40)}
    return _encode(c, _png_folder(c, "many", **files))


def _png_zero_byte(c: Ctx) -> list[str]:
    return _encode(c, _png_folder(c, "zero", **{"a.png": png_bytes(images(1)[0]), "z.png": b""}))


def _hidden_only(c: Ctx) -> list[str]:
    pngs = {".a.png": png_bytes(images(1)[0]), ".b.png": png_bytes(images(1, seed=1)[0])}
    return _encode(c, _png_folder(c, "hidden", **pngs))


def _symlink_png_outside(c: Ctx) -> list[str]:
    c.write("outside/secret.png", png_bytes(images(1)[0]))
    (c.tmp / "linked").mkdir()
    (c.tmp / "linked" / "img.png").symlink_to(c.tmp / "outside" / "secret.png")
    return _encode(c, "linked")


def _symlink_idx_outside(c: Ctx) -> list[str]:
    (c.tmp / "pair").mkdir()
    for name, n in (("train-images-idx3-ubyte", 20), ("t10k-images-idx3-ubyte", 5)):
        c.write(f"elsewhere/{name}", idx_bytes(images(n)))
        (c.tmp / "pair" / name).symlink_to(c.tmp / "elsewhere" / name)
    return _encode(c, "pair")


def _jpeg_named_png(c: Ctx) -> list[str]:
    return _encode(c, _png_folder(c, "fake", **{"x.png": jpeg_bytes(images(1)[0])}))


def _unknown_kind(c: Ctx) -> list[str]:
    c.write("data.bin", b"\x07\x01" + np.random.default_rng(1).bytes(500))
    return _encode(c, "data.bin")


def _fifo(c: Ctx) -> list[str]:
    os.mkfifo(c.tmp / "pipe")  # opening it to read would block forever
    return _encode(c, "pipe")


def _forced_kind_mismatch(c: Ctx) -> list[str]:
    c.write("imgs.npy", npy_bytes(images(10)))
    return _encode(c, "idx:imgs.npy")


# --------------------------------------------------------------------- setups: options

NO_EXPORT = ["--no-export", "--threads", "1"]


def _train(*args: str) -> Callable[[Ctx], list[str]]:
    return lambda c: ["train", *args, *NO_EXPORT]


def _sample(*args: str) -> Callable[[Ctx], list[str]]:
    return lambda c: ["sample", "--export-dir", c.export(), "--out", "g.png", *args]


def _interpolate_one_step(c: Ctx) -> list[str]:
    return ["interpolate", "--export-dir", c.export(), "--steps", "1", "--out", "i.png"]


def _eval_k0(c: Ctx) -> list[str]:
    return ["eval", "--run-dir", c.run(), "--k", "0", "--threads", "1"]


def _export_budget0(c: Ctx) -> list[str]:
    return ["export", "--run-dir", c.run(), "--export-dir", "exp2", "--budget-nats", "0"]


def _quantize_bogus_recipe(c: Ctx) -> list[str]:
    return ["quantize", "--export-dir", c.export(), "--recipe", "bogus"]


# ------------------------------------------------------------------ setups: model files


def _missing_export(c: Ctx) -> list[str]:
    return ["sample", "--export-dir", "nope", "--out", "g.png"]


def _manifest_text(text: str) -> Callable[[Ctx], list[str]]:
    def setup(c: Ctx) -> list[str]:
        exp = c.export()
        c.write(f"{exp}/manifest.json", text)
        return ["sample", "--export-dir", exp, "--out", "g.png"]

    return setup


def _decoder(mutate: Callable[[onnx.ModelProto], None], forbid: bool = True):
    """sample with decoder.int8.onnx replaced by a mutated one; no session allowed if forbid."""

    def setup(c: Ctx) -> list[str]:
        exp = c.export()
        proto = onnx_model("decoder")
        mutate(proto)
        c.model(f"{exp}/decoder.int8.onnx", proto)
        if forbid:
            c.forbid_sessions()
        return ["sample", "--export-dir", exp, "--out", "g.png", "--n", "4"]

    return setup


def _truncated_onnx(c: Ctx) -> list[str]:
    exp = c.export()
    data = onnx_model("decoder").SerializeToString()
    c.write(f"{exp}/decoder.int8.onnx", data[: len(data) // 2])
    c.forbid_sessions()
    return ["sample", "--export-dir", exp, "--out", "g.png"]


def _external(location: str) -> Callable[[onnx.ModelProto], None]:
    def mutate(m: onnx.ModelProto) -> None:
        from onnx.external_data_helper import set_external_data

        t = m.graph.initializer[0]
        set_external_data(t, location, offset=0, length=len(t.raw_data))
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL

    return mutate


def _external_outside(c: Ctx) -> list[str]:
    # The weights it points at exist (a loader following the reference would succeed): the
    # refusal must come from vetting, before any session could open them.
    c.write("secret/weights.bin", np.ones(64, np.float32).tobytes())
    return _decoder(_external("../secret/weights.bin"))(c)


def _external_inside(c: Ctx) -> list[str]:
    c.write("exp/weights.bin", np.ones(64, np.float32).tobytes())
    return _decoder(_external("weights.bin"))(c)


def _custom_domain(m: onnx.ModelProto) -> None:
    m.graph.node[0].domain = "evil.custom"
    m.opset_import.append(helper.make_opsetid("evil.custom", 1))


def _huge_initializer(m: onnx.ModelProto) -> None:
    t = TensorProto(name="huge", data_type=TensorProto.FLOAT, dims=[10_000, 10_000])
    m.graph.initializer.append(t)  # claims 1e8 floats (400 MB) and holds none


def _local_function(m: onnx.ModelProto) -> None:
    body = [helper.make_node("Softmax", ["a"], ["b"])]
    fn = helper.make_function("evil.fn", "Smuggle", ["a"], ["b"], body,
                              [helper.make_opsetid("", 20)])  # fmt: skip
    m.functions.append(fn)


def _wrong_contract(m: onnx.ModelProto) -> None:
    del m.metadata_props[:]  # no role stamp: only the I/O contract can tell
    m.graph.input[0].name = "w"
    m.graph.node[0].input[0] = "w"


def _encoder_as_decoder(c: Ctx) -> list[str]:
    exp = c.export()
    shutil.copyfile(c.tmp / exp / "encoder.int8.onnx", c.tmp / exp / "decoder.int8.onnx")
    c.forbid_sessions()
    return ["sample", "--export-dir", exp, "--out", "g.png"]


def _latent_mismatch(c: Ctx) -> list[str]:
    exp = c.export()
    c.write(f"{exp}/manifest.json", json.dumps(manifest_dict(latent=LATENT + 1)))
    return ["sample", "--export-dir", exp, "--out", "g.png"]


def _reshaped_by_batch(m: onnx.ModelProto) -> None:
    """x_mean = Sigmoid(Reshape(logits, [-1, 392 * batch])): declares [batch, 784]; what it
    computes depends on the batch size, so no static check can see it (4 rows -> [2, 1568])."""
    g = m.graph
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
            numpy_helper.from_array(np.array([0], np.int64), "zero"),
            numpy_helper.from_array(np.array([392], np.int64), "k392"),
        ]
    )
    sigmoid = g.node.pop()
    g.node.extend(
        [
            helper.make_node("Shape", ["z"], ["zs"], name="w.shape"),
            helper.make_node("Gather", ["zs", "zero"], ["batch"], name="w.gather", axis=0),
            helper.make_node("Mul", ["batch", "k392"], ["width"], name="w.mul"),
            helper.make_node("Concat", ["minus1", "width"], ["newshape"], name="w.concat", axis=0),
            helper.make_node("Reshape", ["logits", "newshape"], ["wide"], name="w.reshape"),
        ]
    )
    sigmoid.input[0] = "wide"
    g.node.append(sigmoid)


def _set(**fields) -> Callable[[onnx.ModelProto], None]:
    def mutate(m: onnx.ModelProto) -> None:
        if "ir" in fields:
            m.ir_version = fields["ir"]
        if "opset" in fields:
            m.opset_import[0].version = fields["opset"]

    return mutate


def _fails_while_running(c: Ctx) -> list[str]:
    exp = c.export()
    c.model(f"{exp}/decoder.int8.onnx", onnx_model("decoder", fails_at_run=True))
    c.write("old.png", png_bytes(images(1)[0]))  # a previous result that must survive
    return ["sample", "--export-dir", exp, "--out", "old.png", "--n", "4"]


# ------------------------------------------------------------------- setups: checkpoints

RESUME = ["train", "--run-dir", "run", "--resume", *NO_EXPORT]


def _truncated_weights(c: Ctx) -> list[str]:
    run, exp = c.run(), c.export()
    path = c.tmp / run / runconfig.MODEL
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return ["export", "--run-dir", run, "--export-dir", exp]


def _state_from_other_config(c: Ctx) -> list[str]:
    run = c.run()
    shutil.copyfile(c.runs["other"] / runconfig.STATE, c.tmp / run / runconfig.STATE)
    return [*RESUME, "--epochs", "3"]


def _state_truncated(c: Ctx) -> list[str]:
    path = c.tmp / c.run() / runconfig.STATE
    path.write_bytes(path.read_bytes()[:-100])
    return [*RESUME, "--epochs", "3"]


def _config_corrupt(c: Ctx) -> list[str]:
    c.write(f"{c.run()}/config.json", '{"model": {"input_dim": 784, "hidd')
    return [*RESUME, "--epochs", "3"]


def _config_absurd_model(c: Ctx) -> list[str]:
    path = c.tmp / c.run() / runconfig.CONFIG
    cfg = json.loads(path.read_text())
    cfg["model"]["hidden"] = [1_000_000_000]  # would allocate ~6 TB of weights
    path.write_text(json.dumps(cfg))
    return ["eval", "--run-dir", "run", "--k", "2", "--threads", "1"]


def _resume_finished(c: Ctx) -> list[str]:
    c.run()
    return [*RESUME, "--epochs", "2"]


def _run_dir_locked(c: Ctx) -> list[str]:
    lock = checkpoint.RunLock(c.tmp / c.run())
    lock.__enter__()  # as if another training were writing here
    c.cleanups.append(lambda: lock.__exit__(None, None, None))
    return [*RESUME, "--epochs", "3"]


# ----------------------------------------------------------------------- setups: outputs


def _out_parent_is_file(c: Ctx) -> list[str]:
    c.write("afile", "not a directory")
    c.write("imgs.npy", npy_bytes(images(10)))
    return ["encode", "--data", "imgs.npy", "--out", "afile/z.npy", "--export-dir", c.export()]


def _export_dir_is_a_file(c: Ctx) -> list[str]:
    c.write("exported", "a file where the export dir should go")
    return ["export", "--run-dir", c.run(), "--export-dir", "exported"]


def _quantize_missing_export(c: Ctx) -> list[str]:
    return ["quantize", "--export-dir", "nope", "--recipe", "static-pc"]


def _debug_traceback(c: Ctx) -> list[str]:
    return ["--debug", "sample", "--export-dir", "nope", "--out", "g.png"]


# -------------------------------------------------------------------------------- table

EXP = ("exp/manifest.json", "exp/decoder.int8.onnx", "exp/encoder.int8.onnx")
RUN = ("run/config.json", "run/model.safetensors", "run/state.safetensors", "run/metrics.jsonl")
NO_RUN_FILES = ("runs", "run/.lock")

CASES = [
    # data files
    Case("idx truncated", _idx_truncated, 1,
         r"cut\.idx: truncated: header declares 10 images of 4x4 \(160 bytes\) but 100 bytes",
         keep=("cut.idx",), absent=("z.npy",)),
    Case("idx header larger than data (gzip)", _idx_header_larger_gz, 1,
         r"big\.idx\.gz: truncated: header declares 60000 images of 28x28 .* only 1568 bytes",
         absent=("z.npy",)),
    Case("amat bad value", _amat_bad_value, 1, r"bad\.amat: line 2: value '2\S*' is not 0 or 1",
         absent=("z.npy",)),
    Case("npz object array with a pickle payload", _npz_pickle, 1,
         r"evil\.npz\[x_train\]: holds Python objects \(dtype object\), which would need pickle",
         keep=("evil.npz",), absent=("PWNED", "z.npy")),
    Case("npy with NaN", _npy_nan, 1, r"nan\.npy: 160 values are NaN or infinite",
         absent=("z.npy",)),
    Case("png decompression bomb header", _png_bomb, 1,
         r"bomb/bomb\.png: image too large \(over 16777216 pixels\); refused"),
    Case("png side over the pixel cap", _png_side_over_cap, 1,
         r"wide\.png: image of 5000x20 pixels exceeds the 4096x4096 limit; refused before "
         r"decoding"),
    Case("png folder over the memory cap", _png_folder_total, 1,
         r"many: 40 images of 4096x4096 pixels would take 2684354560 bytes, more than the "
         r"\d+-byte limit; refused before decoding"),
    Case("zero-byte png", _png_zero_byte, 1, r"zero/z\.png: empty file \(0 bytes\)",
         keep=("zero/z.png",)),
    Case("hidden files only", _hidden_only, 1,
         r"hidden: no recognised data set in the folder \(ignored: 2 hidden files\)"),
    Case("png symlink leading outside the folder", _symlink_png_outside, 1,
         r"linked: no recognised data set in the folder \(ignored: img\.png \(a symlink "
         r"leading outside the folder\)\)", keep=("outside/secret.png",)),
    Case("idx pair symlinked from outside the folder", _symlink_idx_outside, 1,
         r"pair: no recognised data set in the folder \(ignored: t10k-images-idx3-ubyte \(a "
         r"symlink leading outside the folder\), train-images-idx3-ubyte"),
    Case("jpeg named .png", _jpeg_named_png, 1, r"fake/x\.png: not a PNG image"),
    Case("unknown file kind", _unknown_kind, 1, r"data\.bin: unrecognised content"),
    Case("fifo as data", _fifo, 1, r"pipe: not a regular file \(a FIFO, device or socket\)"),
    Case("forced kind contradicts content", _forced_kind_mismatch, 1,
         r"imgs\.npy: forced kind 'idx' but the content looks like 'npy'"),
    # options
    Case("epochs 0", _train("--epochs", "0"), 2, r"'--epochs': 0 is not in the range 1<=x<=1000000",
         absent=NO_RUN_FILES),
    Case("lr nan", _train("--lr", "nan"), 2, r"--lr: must be a finite number > 0, got nan",
         absent=NO_RUN_FILES),
    Case("latent 0", _train("--latent-dim", "0"), 2, r"'--latent-dim': 0 is not in the range x>=1",
         absent=NO_RUN_FILES),
    Case("batch -1", _train("--batch-size=-1"), 2, r"'--batch-size': -1 is not in the range x>=1",
         absent=NO_RUN_FILES),
    Case("hidden not a number", _train("--hidden", "x"), 2,
         r"--hidden: expected comma-separated integers, got 'x'", absent=NO_RUN_FILES),
    Case("epochs not a number", _train("--epochs", "abc"), 2,
         r"Invalid value for '--epochs'.*\(see 'edgevae train -h'\)", absent=NO_RUN_FILES),
    Case("resume with overwrite", _train("--resume", "--overwrite"), 2,
         r"--resume: cannot be combined with overwrite", absent=NO_RUN_FILES),
    Case("unknown option", _sample("--frobnicate"), 2, r"No such option: --frobnicate",
         absent=("g.png",)),
    Case("sample n 0", _sample("--n", "0"), 2, r"'--n': 0 is not in the range 1<=x<=100000",
         absent=("g.png",)),
    Case("interpolate steps 1", _interpolate_one_step, 2,
         r"'--steps': 1 is not in the range 2<=x<=10000", absent=("i.png",)),
    Case("precision bogus", _sample("--precision", "bogus"), 2,
         r"'--precision': 'bogus' is not one of 'int8', 'fp32'", absent=("g.png",)),
    Case("eval k 0", _eval_k0, 2, r"Invalid value for '--k': 0 is not in the range 1<=x<=1000000"),
    Case("export budget 0", _export_budget0, 2, r"--budget-nats: must be > 0, got 0\.0",
         absent=("exp2",)),
    Case("quantize recipe bogus", _quantize_bogus_recipe, 2,
         r"Invalid value for '--recipe': 'bogus' is not one of 'auto', ", keep=EXP),
    # model files
    Case("missing export dir", _missing_export, 1,
         r"nope: no such export directory", absent=("nope", "g.png")),
    Case("corrupt manifest", _manifest_text('{"latent_dim": 4, "image_'), 1,
         r"exp/manifest\.json: unreadable or not JSON", absent=("g.png",)),
    Case("manifest field of the wrong type", _manifest_text(
         json.dumps({**manifest_dict(), "latent_dim": "four"})), 1,
         r"exp/manifest\.json: latent_dim must be an integer in 1\.\.4096, got 'four'"),
    Case("manifest nested too deeply", _manifest_text("[" * 100_000), 1,
         r"exp/manifest\.json: unreadable or not JSON \(nested too deeply\)"),
    Case("truncated onnx", _truncated_onnx, 1,
         r"exp/decoder\.int8\.onnx: truncated or not an ONNX model", absent=("g.png",)),
    Case("external data outside the export dir", _external_outside, 1,
         r"exp/decoder\.int8\.onnx: tensor 'dec\.0\.weight' is stored as external data; "
         r"edgevae loads single-file models only", keep=("secret/weights.bin",)),
    Case("external data inside the export dir", _external_inside, 1,
         r"is stored as external data", keep=("exp/weights.bin",)),
    Case("custom domain", _decoder(_custom_domain), 1,
         r"node 'dec\.0' uses custom domain 'evil\.custom'"),
    Case("oversized initializer", _decoder(_huge_initializer), 1,
         r"decoder\.int8\.onnx: an initializer has 100000000 elements"),
    Case("local function smuggling ops", _decoder(_local_function), 1,
         r"defines the local function 'Smuggle'; edgevae models have none"),
    Case("wrong io contract", _decoder(_wrong_contract), 1,
         r"I/O \['w'\]->\['x_mean', 'logits'\] is not the decoder contract"),
    Case("encoder given as decoder", _encoder_as_decoder, 1,
         r"decoder\.int8\.onnx: this is an encoder model, expected the decoder"),
    Case("latent mismatch", _latent_mismatch, 1,
         r"decoder\.int8\.onnx: input shape \['batch', 4\] does not match the manifest "
         r"\(5 features\)", absent=("g.png",)),
    Case("ir too new", _decoder(_set(ir=99), forbid=False), 1,
         r"model IR version 99 is newer than onnxruntime \d+\.\d+\S* supports \(\d+\)"),
    Case("opset too new", _decoder(_set(opset=99), forbid=False), 1,
         r"opset 99 is not supported by onnxruntime \d+\.\d+\S* \(newest for ai\.onnx: \d+\)"),
    Case("decoder computes another shape than it declares", _decoder(_reshaped_by_batch,
         forbid=False), 1, r"output x_mean came back as float32 \[2, 1568\], expected float32 "
         r"\[4, 784\]", absent=("g.png",)),
    Case("decoder fails while running: old output kept", _fails_while_running, 1,
         r"decoder\.int8\.onnx: node 'dec\.reshape' \(Reshape\) failed while running: .*"
         r"cannot be reshaped", keep=("old.png",)),
    # checkpoints
    Case("truncated model.safetensors: export keeps the old export", _truncated_weights, 1,
         r"run/model\.safetensors: truncated or not a safetensors file", keep=EXP),
    Case("state from another config", _state_from_other_config, 1,
         r"run/state\.safetensors: mismatched with run/config\.json: "
         r"model\.encoder\.body\.0\.weight has shape \(8, 784\), the config implies \(16, 784\)",
         keep=RUN),
    Case("truncated state", _state_truncated, 1,
         r"run/state\.safetensors: truncated or not a safetensors file", keep=RUN),
    Case("corrupt config.json", _config_corrupt, 1, r"run/config\.json: corrupt run config",
         keep=RUN),
    Case("config.json declaring an absurd model", _config_absurd_model, 1,
         r"run/config\.json: corrupt run config \(a model of about \d+ parameters is "
         r"implausibly large\)", keep=RUN),
    Case("resume a finished run with the same epochs", _resume_finished, 2,
         r"--epochs: run has already trained 2 epochs; ask for more than 2 in total", keep=RUN),
    Case("run dir locked by another training", _run_dir_locked, 1,
         r"run: another training is writing to this run dir", keep=RUN),
    # outputs
    Case("output parent is a file", _out_parent_is_file, 2, r"--out: afile is not a directory",
         keep=("afile",)),
    Case("export dir is a file", _export_dir_is_a_file, 2,
         r"--export-dir: exported is not a directory", keep=("exported",)),
    Case("quantize a missing export (no progress bar first)", _quantize_missing_export, 1,
         r"^error: nope: no such export directory", absent=("nope",)),
    # --debug
    Case("--debug shows the traceback", _debug_traceback, 1,
         r"ModelFileError: nope: no such export directory", absent=("g.png",), debug=True),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path, monkeypatch, capfd, runs) -> None:
    monkeypatch.chdir(tmp_path)
    ctx = Ctx(tmp_path, monkeypatch, runs)
    try:
        argv = case.setup(ctx)
        for rel in case.keep:
            assert (tmp_path / rel).is_file(), f"setup did not create {rel}"
        before = snapshot(tmp_path)
        capfd.readouterr()
        if case.debug:
            proc = edgevae(argv, tmp_path)
            code, err = proc.returncode, proc.stderr
            assert "Traceback (most recent call last)" in err, err
            assert re.search(case.message, err), err
        else:
            code = main(argv)
            _, err = capfd.readouterr()
            line = one_error_line(err)
            assert re.search(case.message, line), line
        assert code == case.code, err
    finally:
        for cleanup in ctx.cleanups:
            cleanup()
    after = snapshot(tmp_path)
    changed = sorted(k for k in before if after.get(k) != before[k])
    created = sorted(k for k in after if k not in before and not ALLOWED_NEW.search(k))
    assert not changed, f"files lost or modified: {changed}"
    assert not created, f"files created by a failing command: {created}"
    for rel in case.absent:
        assert not (tmp_path / rel).exists(), rel


def test_the_table_is_large_and_distinct() -> None:
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


# ------------------------------------------------------------------------------- fuzzing

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# (byte edits at fractions of the span, optional cut fraction, appended bytes)
MUTATION = st.tuples(
    st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)), max_size=6),
    st.one_of(st.none(), st.floats(0.0, 1.0)),
    st.binary(max_size=12),
)

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip


def mutate(data: bytes, mutation, span: int | None = None) -> bytes:
    """Apply a MUTATION; `span` aims the byte edits at the first `span` bytes (the header)."""
    edits, cut, extra = mutation
    out = bytearray(data)
    reach = len(out) if span is None else min(span, len(out))
    for frac, value in edits:
        out[int(frac * reach)] = value
    if cut is not None:
        out = out[: int(cut * len(out))]
    return bytes(out) + extra


def _reason(exc: Exception) -> str:
    """A coarse label of an error for --hypothesis-show-statistics (which check fired)."""
    text = str(exc).split(": ", 1)[-1]
    return "refused: " + re.sub(r"[\d'\[(].*", "", text)[:40]


def _only_clean_data_errors(spec: str) -> None:
    try:
        x, _ = load_images(spec, split="all")
    except DataError as exc:
        assert "\n" not in str(exc)
        event(_reason(exc))
        return
    event("read")
    assert x.dtype == np.float32 and x.ndim == 2 and 0 <= x.min() <= x.max() <= 1


AMAT_SEED = amat_bytes(np.random.default_rng(5).integers(0, 2, (6, 16)))


AMAT_MUTATION = st.tuples(
    st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.sampled_from(b"01 \t\r\n")),
             max_size=6),
    st.one_of(st.none(), st.floats(0.0, 1.0)),
    st.binary(max_size=12) | st.sampled_from([b"", b"\n", b"0 1\n", b"\n\n1 1 1 1\n"]),
)  # fmt: skip


@FUZZ
@given(mutation=MUTATION | AMAT_MUTATION, gzipped=st.booleans())
def test_fuzz_amat(tmp_path, mutation, gzipped) -> None:
    # AMAT_MUTATION keeps to 0/1/whitespace, so rows change length rather than values
    data = mutate(AMAT_SEED, mutation)
    path = tmp_path / "fuzz.amat"
    path.write_bytes(gz(data) if gzipped else data)
    _only_clean_data_errors(f"amat:{path}")


FREY = np.random.default_rng(6).integers(0, 256, (560, 3), dtype=np.uint8)
MAT_SEEDS = [mat_bytes(FREY), mat_bytes(FREY, compressed=True)]


@FUZZ
@given(which=st.integers(0, 1), mutation=MUTATION, header=st.booleans())
def test_fuzz_frey_mat(tmp_path, which, mutation, header) -> None:
    # header: edits land in the 128-byte file header and the element tags after it
    data = mutate(MAT_SEEDS[which], mutation, span=256 if header else None)
    path = tmp_path / "fuzz.mat"
    path.write_bytes(data)
    _only_clean_data_errors(f"frey:{path}")


NPZ_SEEDS = [
    npz_bytes(x_train=images(6, 4, 4), x_test=images(2, 4, 4, seed=1)),
    npz_bytes(train=images(6, 4, 4).astype(np.float32) / 255),
]


NPZ_MEMBERS = {"x_train": npy_bytes(images(6, 4, 4)), "x_test": npy_bytes(images(2, 4, 4))}


@FUZZ
@given(which=st.integers(0, 2), mutation=MUTATION, header=st.booleans())
def test_fuzz_npz(tmp_path, which, mutation, header) -> None:
    # header: edits land near the zip's local header and member .npy header
    if which < 2:
        data = mutate(NPZ_SEEDS[which], mutation, span=160 if header else None)
    else:  # a mutated x_train.npy in a well-formed zip (CRCs right): reaches the .npy parser
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("x_train.npy", mutate(NPZ_MEMBERS["x_train"], mutation, span=128))
            zf.writestr("x_test.npy", NPZ_MEMBERS["x_test"])
        data = buf.getvalue()
    path = tmp_path / "fuzz.npz"
    path.write_bytes(data)
    _only_clean_data_errors(f"npz:{path}")


PNG_SEEDS = [png_bytes(images(1, 6, 6)[0]), png_bytes(images(1, 6, 6, seed=2)[0], mode="RGB")]


@FUZZ
@given(which=st.integers(0, 1), mutation=MUTATION, fix_crc=st.booleans())
def test_fuzz_png(tmp_path, which, mutation, fix_crc) -> None:
    # fix_crc: the chunk CRCs are recomputed, so mutated sizes/modes reach Pillow's checks
    folder = tmp_path / "pngs"
    folder.mkdir(exist_ok=True)
    data = mutate(PNG_SEEDS[which], mutation, span=64)
    (folder / "a.png").write_bytes(PNG_SEEDS[1 - which])
    (folder / "b.png").write_bytes(fix_png_crcs(data) if fix_crc else data)
    _only_clean_data_errors(f"png:{folder}")


LATENT_SEEDS = [
    npy_bytes(np.random.default_rng(7).standard_normal((3, 4)).astype(np.float32)),
    npy_bytes(np.arange(8, dtype=np.int16).reshape(2, 4)),
]


@FUZZ
@given(which=st.integers(0, 1), mutation=MUTATION)
def test_fuzz_latent_npy(tmp_path, which, mutation) -> None:
    """The reader behind `decode --z`."""
    path = tmp_path / "z.npy"
    path.write_bytes(mutate(LATENT_SEEDS[which], mutation, span=128))
    try:
        z = npyfile.read_npy(path)
    except DataError as exc:
        assert "\n" not in str(exc)
        event(_reason(exc))
        return
    event("read")
    assert z.dtype == np.float32 and z.ndim == 2 and np.isfinite(z).all()


@pytest.fixture(scope="module")
def fuzz_export(tmp_path_factory) -> Path:
    return mini_export(tmp_path_factory.mktemp("fuzz") / "exp")


MANIFEST_KEYS = ["latent_dim", "image_shape", "likelihood", "gaussian_logvar", "schema"]


@FUZZ
@given(
    mutation=MUTATION,
    key=st.sampled_from(MANIFEST_KEYS),
    value=JSON_VALUES | st.integers(-3, 800),
    as_bytes=st.booleans(),
)
def test_fuzz_manifest(fuzz_export, mutation, key, value, as_bytes) -> None:
    """manifest.read and the runtime that trusts it: ModelFileError/UsageError, or samples."""
    man = {**manifest_dict(), key: value}
    text = json.dumps(manifest_dict()).encode()
    data = mutate(text, mutation) if as_bytes else json.dumps(man).encode()
    (fuzz_export / "manifest.json").write_bytes(data)
    try:
        read = manifest.read(fuzz_export)
        model = Model(fuzz_export, "fp32")
        pictures = model.sample(2, seed=0)
    except EdgeVAEError as exc:
        assert "\n" not in str(exc)
        event(_reason(exc))
        return
    event("sampled")
    assert pictures.shape == (2, *read["image_shape"])


def _safetensors_parts(data: bytes) -> tuple[dict, bytes]:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _safetensors_join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + body


@pytest.fixture(scope="module")
def fuzz_run(runs, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("fuzz") / "run"
    shutil.copytree(runs["run"], dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


@FUZZ
@given(
    name=st.sampled_from([runconfig.MODEL, runconfig.STATE]),
    mutation=MUTATION,
    how=st.sampled_from(["bytes", "tensor", "state"]),
    index=st.integers(0, 100),
    field_name=st.sampled_from(["dtype", "shape", "data_offsets", "epoch", "batch", "partial",
                                "lr_schedule", "samples_seen"]),
    value=JSON_VALUES | st.lists(st.integers(-2, 2000), max_size=3),
)  # fmt: skip
def test_fuzz_safetensors(fuzz_run, name, mutation, how, index, field_name, value) -> None:
    """checkpoint.read_safetensors (+ the resume-state check and load_model_weights)."""
    original = (fuzz_run / name).read_bytes()
    header, body = _safetensors_parts(original)
    if how == "bytes":
        data = mutate(original, mutation, span=8 + int.from_bytes(original[:8], "little"))
    elif how == "tensor":  # one tensor entry's dtype, shape or offsets
        names = sorted(k for k in header if k != "__metadata__")
        entry = header[names[index % len(names)]]
        entry[field_name if field_name in entry else "shape"] = value
        data = _safetensors_join(header, body)
    else:  # the resume JSON inside the metadata
        meta = header.setdefault("__metadata__", {})
        state = json.loads(meta.get("state", "{}"))
        state[field_name] = value
        meta["state"] = json.dumps(state)
        data = _safetensors_join(header, body)
    path = fuzz_run / name
    try:
        path.write_bytes(data)
        checkpoint.read_safetensors(path)
        if name == runconfig.MODEL:
            cfg = ModelConfig.from_dict(runconfig.load_config(fuzz_run)["model"])
            checkpoint.load_model_weights(fuzz_run, cfg)
        event("accepted")
    except ModelFileError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path))
        event(_reason(exc))
    finally:
        path.write_bytes(original)


CONFIG_FIELDS = ["model.hidden", "model.latent_dim", "model.input_dim", "model.image_shape",
                 "model.activation", "model.likelihood", "train.epochs", "train.batch_size",
                 "train.lr", "train.data", "model", "train"]  # fmt: skip


PLAUSIBLE = st.integers(1, 40) | st.lists(st.integers(1, 40), min_size=1, max_size=2)


@FUZZ
@given(
    where=st.sampled_from(CONFIG_FIELDS),
    value=JSON_VALUES | st.lists(st.integers(-2, 10**6), max_size=3) | PLAUSIBLE,
    mutation=MUTATION,
    as_bytes=st.booleans(),
)
def test_fuzz_run_config(fuzz_run, monkeypatch, where, value, mutation, as_bytes) -> None:
    """runconfig.load_config, then the weights checked against whatever it accepted."""
    monkeypatch.setattr(runconfig, "MAX_PARAMETERS", 2_000_000)  # keep accepted models small
    path = fuzz_run / runconfig.CONFIG
    original = path.read_bytes()
    cfg = json.loads(original)
    if as_bytes:
        data = mutate(original, mutation)
    else:
        section, _, key = where.partition(".")
        if key:
            cfg[section][key] = value
        else:
            cfg[section] = value
        data = json.dumps(cfg).encode()
    try:
        path.write_bytes(data)
        loaded = runconfig.load_config(fuzz_run)
        checkpoint.load_model_weights(fuzz_run, ModelConfig.from_dict(loaded["model"]))
        event("accepted")
    except ModelFileError as exc:
        assert "\n" not in str(exc)
        event(_reason(exc))
    finally:
        path.write_bytes(original)


ONNX_SEED = onnx_model("decoder", hidden=3).SerializeToString()
OPS = ["Gemm", "MatMul", "Relu", "Sigmoid", "Identity", "Reshape", "Softmax", "Loop", "", "Add"]


def _proto_mutation(what: str, index: int, number: int, op: str) -> bytes:
    """A well-formed model with one field changed (what reaches onnxruntime after vetting)."""
    m = onnx.ModelProto()
    m.ParseFromString(ONNX_SEED)
    g = m.graph
    if what == "dim":
        t = g.initializer[index % len(g.initializer)]
        t.dims[index % len(t.dims)] = number
    elif what == "op":
        g.node[index % len(g.node)].op_type = op
    elif what == "node_input":
        node = g.node[index % len(g.node)]
        node.input[index % len(node.input)] = ["z", "h", "dec.0.bias", "", "nope"][number % 5]
    elif what == "io_dim":
        vi = g.input[0] if index % 2 else g.output[index % len(g.output)]
        vi.type.tensor_type.shape.dim[1].dim_value = number
    elif what == "versions":
        m.ir_version, m.opset_import[0].version = number % 16, number % 30
    elif what == "dtype":
        g.initializer[index % len(g.initializer)].data_type = number % 24
    return m.SerializeToString()


@FUZZ
@given(
    mutation=MUTATION,
    how=st.sampled_from(["bytes", "header", "dim", "op", "node_input", "io_dim", "versions",
                         "dtype"]),
    index=st.integers(0, 50),
    number=st.integers(0, 2**20),
    op=st.sampled_from(OPS),
)  # fmt: skip
def test_fuzz_onnx_through_the_runtime(tmp_path, mutation, how, index, number, op) -> None:
    """vet + onnxruntime + run: a mutated model is refused, or it loads and runs, nothing else
    (test_onnxcheck.py fuzzes read_info/vet alone)."""
    path = tmp_path / "decoder.fp32.onnx"
    if how in ("bytes", "header"):  # header: edits avoid the weight bytes
        path.write_bytes(mutate(ONNX_SEED, mutation, span=160 if how == "header" else None))
    else:
        path.write_bytes(_proto_mutation(how, index, number, op))
    try:
        sess = open_session(path, "decoder")
        z = np.zeros((2, LATENT), np.float32)
        (out,) = run_session(sess, path, ["x_mean"], {"z": z}, width=DIM)
    except ModelFileError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path))
        event(_reason(exc))
        return
    event("ran")
    assert out.shape == (2, DIM) and out.dtype == np.float32
