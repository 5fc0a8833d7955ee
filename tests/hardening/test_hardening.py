"""Every bad input is refused the same way: one line naming the thing and what is wrong, exit
code 2 (usage) or 1 (runtime), no traceback (unless --debug), nothing lost, nothing created,
nothing unpickled, and no onnxruntime session for a model that fails vetting.

`test_bad_input` is ONE table of data files, options, model files, checkpoints and outputs
(`support.table` runs each case: exit code, the one error line, the file tree before and
after). test_limits.py holds the table of sizes that would exhaust memory, test_new_inputs.py
the one of labels, caches, thresholds, held-out images and the newer commands, and
test_fuzz_readers.py the fuzzing of every reader.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from support import table
from support.hardening import (
    LATENT,
    amat_bytes,
    gz,
    idx_bytes,
    images,
    jpeg_bytes,
    manifest_dict,
    npy_bytes,
    onnx_model,
    payload_is_live,
    pickle_npz,
    png_bytes,
    png_header_only,
)
from support.table import (
    Case,
    Ctx,
    distinct,
    run_case,
)

from edgevae.training import checkpoint, runconfig

# ------------------------------------------------------------------------ setups: data

runs = table.runs  # the shared fixture, visible to this module's tests


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
         r"many: 40 images of 4096x4096 pixels would take 2\.5 GiB, more than the 2\.0 GiB "
         r"limit; refused before decoding"),
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
def test_bad_input(case: Case, tmp_path, monkeypatch, capfd, request) -> None:
    run_case(case, tmp_path, monkeypatch, capfd, request)


def test_the_table_is_large_and_distinct() -> None:
    assert len(CASES) >= 30
    distinct(CASES)
