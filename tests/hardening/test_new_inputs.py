"""The newer inputs and commands, refused like every other bad input (`support.table`): label
files that disagree with their images, a download cache holding a changed file, thresholds that
are malformed or belong to other models, corrupted held-out images, conditional exports with
malformed classes, labels outside a model's classes, and the commands score, threshold,
detect, anomaly-bench, analogies, crosscheck run|compare and firmware --score.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from support import table
from support.hardening import (
    gz,
    idx_bytes,
    idx_label_bytes,
    images,
    npy_bytes,
    npz_bytes,
    onnx_model,
)
from support.hardening import with_heldout as heldout
from support.table import (
    Case,
    Ctx,
    distinct,
    run_case,
)

from edgevae import fsio

TRAIN = ["train", "--no-export", "--threads", "1", "--run-dir", "r", "--epochs", "1"]
NO_RUN = ("runs", "r")

thresholded_export = table.thresholded_export  # the shared fixture, seen by this module


def _manifest(c: Ctx, rel: str, edit) -> None:
    """Rewrite the manifest of the export at `rel` with `edit(manifest)`."""
    path = c.tmp / rel / "manifest.json"
    man = json.loads(path.read_text())
    edit(man)
    path.write_text(json.dumps(man))


# ----------------------------------------------------------------------------- labels


def _npz(**arrays) -> callable:
    """train --conditional on lab.npz holding `arrays` (x: 40 images unless given)."""

    def setup(c: Ctx) -> list[str]:
        c.write("lab.npz", npz_bytes(**{"x": images(40), **arrays}))
        return [*TRAIN, "--data", "lab.npz", "--conditional"]

    return setup


def _idx_pair(c: Ctx, train_labels: bytes) -> list[str]:
    c.write("pair/train-images-idx3-ubyte", idx_bytes(images(20)))
    c.write("pair/t10k-images-idx3-ubyte", idx_bytes(images(5, seed=1)))
    c.write("pair/train-labels-idx1-ubyte", train_labels)
    c.write("pair/t10k-labels-idx1-ubyte", idx_label_bytes(np.arange(5) % 3))
    return [*TRAIN, "--data", "pair", "--conditional"]


def _classes(*wanted: str):
    def setup(c: Ctx) -> list[str]:
        c.write("lab.npz", npz_bytes(x=images(40), y=np.arange(40) % 3))
        return [*TRAIN, "--data", "lab.npz", "--classes", ",".join(wanted)]

    return setup


def _eval_unknown_classes(c: Ctx) -> list[str]:
    c.write("other.npz", npz_bytes(x=images(40), y=np.arange(40) % 2, classes=np.array(["x", "y"])))
    run = c.copy("tiny_cond_run", "cond")
    return ["eval", "--run-dir", run, "--data", "other.npz", "--k", "2", "--threads", "1"]


def _quantize_unknown_classes(c: Ctx) -> list[str]:
    c.write("other.npz", npz_bytes(x=images(40), y=np.arange(40) % 2, classes=np.array(["x", "y"])))
    exp, run = c.copy("tiny_cond_export", "cond"), c.copy("tiny_cond_run", "cond_run")
    return ["quantize", "--export-dir", exp, "--run-dir", run, "--data", "other.npz", "--recipe",
            "static-pc", "--calib", "20"]  # fmt: skip


# ------------------------------------------------------------------- the download cache

MNIST_IMAGES = "cache/mnist/train-images-idx3-ubyte.gz"


def _cache(c: Ctx, rel: str | None, data: bytes | None = None) -> list[str]:
    c.env("EDGEVAE_DATA_DIR", str(c.tmp / "cache"))
    if rel is not None and data is not None:
        c.write(rel, data)
    elif rel is not None:
        (c.tmp / rel).mkdir(parents=True)
    return ["encode", "--data", "mnist", "--out", "z.npy", "--export-dir", c.export()]


def _mirror(c: Ctx) -> list[str]:
    c.env("EDGEVAE_DATA_MIRROR", "ftp://mirror.example/mnist")
    return _cache(c, None)


# --------------------------------------------------------------------------- thresholds


def _detect(edit=None, *extra: str):
    """detect on a copy of the calibrated export, its threshold entry edited by `edit`."""

    def setup(c: Ctx) -> list[str]:
        exp = c.copy("thresholded_export", "exp")
        if edit is not None:
            _manifest(c, exp, lambda m: edit(m["threshold"]))
        return ["detect", "--export-dir", exp, "--out", "f.png", *extra]

    return setup


def _threshold_of_another_export(c: Ctx) -> list[str]:
    exp = c.export()
    heldout(c.tmp / exp)
    entry = json.loads((c.fixture("thresholded_export") / "manifest.json").read_text())
    _manifest(c, exp, lambda m: m.update(threshold=entry["threshold"]))
    return ["detect", "--export-dir", exp, "--out", "f.png"]


def _set(key, value):
    return lambda t: t.update({key: value})


def _no_threshold(c: Ctx) -> list[str]:
    heldout(c.tmp / c.export())
    return ["detect", "--export-dir", "exp", "--out", "f.png"]


def _score_csv_as_data(c: Ctx) -> list[str]:
    c.write("scores.csv", "index,score_nats\n0,101.5\n1,99.25\n")
    return _detect(None, "--data", "scores.csv")(c)


# ------------------------------------------------------------------- held-out images


def _heldout(mutate):
    """reconstruct from the export's held-out images after `mutate(ctx, export_dir)`."""

    def setup(c: Ctx) -> list[str]:
        exp = c.export()
        heldout(c.tmp / exp)
        mutate(c, c.tmp / exp)
        return ["reconstruct", "--export-dir", exp, "--out", "r.png"]

    return setup


def _replace_heldout(arr: np.ndarray):
    """heldout.npy replaced by `arr`, and the manifest's sha256 updated to match it."""

    def mutate(c: Ctx, exp) -> None:
        (exp / "heldout.npy").write_bytes(npy_bytes(arr))
        digest = fsio.sha256_file(exp / "heldout.npy")
        _manifest(c, exp.name, lambda m: m["heldout"].update(sha256=digest))

    return mutate


def _append_byte(c: Ctx, exp) -> None:
    with open(exp / "heldout.npy", "ab") as fh:
        fh.write(b"\0")


def _cond_labels(edit):
    def setup(c: Ctx) -> list[str]:
        exp = c.copy("tiny_cond_export", "cond")
        _manifest(c, exp, lambda m: edit(m["heldout"]))
        return ["reconstruct", "--export-dir", exp, "--precision", "fp32", "--out", "r.png"]

    return setup


# -------------------------------------------------------------- conditional exports


def _cond(edit=None, *args: str):
    """sample (or `args`) on a copy of the conditional export, its manifest edited."""

    def setup(c: Ctx) -> list[str]:
        exp = c.copy("tiny_cond_export", "cond")
        if edit is not None:
            _manifest(c, exp, edit)
        argv = list(args) or ["sample", "--out", "g.png"]
        return [*argv, "--export-dir", exp, "--precision", "fp32"]

    return setup


def _analogies_unconditional(c: Ctx) -> list[str]:
    heldout(c.tmp / c.export())
    return ["analogies", "--export-dir", "exp", "--out", "a.png"]


# ---------------------------------------------------------------------- the commands


def _crosscheck_inputs_of_another_export(c: Ctx) -> list[str]:
    c.export("exp5", latent=5)
    assert c.fixture("crosscheck_results").exists()
    shutil.copyfile(c.fixture("crosscheck_results"), c.tmp / "ref.npz")
    return ["crosscheck", "run", "--export-dir", "exp5", "--out", "new.npz", "--inputs",
            "ref.npz", "--no-sample"]  # fmt: skip


def _crosscheck_compare(make_candidate):
    def setup(c: Ctx) -> list[str]:
        shutil.copyfile(c.fixture("crosscheck_results"), c.tmp / "ref.npz")
        c.write("cand.npz", make_candidate(c))
        return ["crosscheck", "compare", "ref.npz", "cand.npz"]

    return setup


def _other_format(c: Ctx) -> bytes:
    arrays = dict(np.load(c.fixture("crosscheck_results")))
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({**meta, "format": "someone.else/2"}))
    return npz_bytes(**arrays)


def _firmware_score_of_a_changed_pair(c: Ctx) -> list[str]:
    exp = c.copy("thresholded_export", "exp")
    _manifest(c, exp, lambda m: m["threshold"]["models"].update(
        {"decoder.int8.static.onnx": "0" * 64}))  # fmt: skip
    return ["firmware", "--export-dir", exp, "--out", "fw", "--score"]


def _firmware_score_without_static_encoder(c: Ctx) -> list[str]:
    exp = c.copy("tiny_export", "exp")
    (c.tmp / exp / "encoder.int8.static.onnx").unlink()
    return ["firmware", "--export-dir", exp, "--out", "fw", "--score"]


def _firmware_float_model(c: Ctx) -> list[str]:
    c.model("dec.onnx", onnx_model("decoder"))
    return ["firmware", "--export-dir", "dec.onnx", "--out", "fw"]


def _precision(precision: str, edit=None, *extra: str):
    """sample at `precision` on a copy of the tiny export, changed by `edit(c, exp)` first."""

    def setup(c: Ctx) -> list[str]:
        exp = c.copy("tiny_export", "exp")
        if edit is not None:
            edit(c, exp)
        return ["sample", "--export-dir", exp, "--precision", precision, "--out", "g.png", *extra]

    return setup


def _without(name: str):
    return lambda c, exp: (c.tmp / exp / name).unlink()


def _firmware_names(key: str, value):
    return lambda c, exp: _manifest(c, exp, lambda m: m.update({key: value}))


def _detect_int4_after_requantize(c: Ctx) -> list[str]:
    """A threshold calibrated at int4, then the 4-bit decoder replaced by another one."""
    exp = c.copy("thresholded_export", "exp")
    _manifest(c, exp, lambda m: m["threshold"].update(
        precision="int4", models={"decoder.int4.static.onnx": "0" * 64}))  # fmt: skip
    return ["detect", "--export-dir", exp, "--out", "f.png"]


def _score(*args: str):
    def setup(c: Ctx) -> list[str]:
        heldout(c.tmp / c.export())
        return ["score", "--export-dir", "exp", *args]

    return setup


def _anomaly_bench(*args: str):
    return lambda c: ["anomaly-bench", "--export-dir", c.copy("tiny_export", "exp"), *args]


def _anomaly_bench_no_int4(c: Ctx) -> list[str]:
    argv = _anomaly_bench("--precisions", "int8,int4", "--limit", "10")(c)
    (c.tmp / "exp" / "decoder.int4.static.onnx").unlink()
    return argv


def _threshold(*args: str):
    return lambda c: ["threshold", "--export-dir", c.export(), *args]


EXP = ("exp/manifest.json", "exp/decoder.int8.onnx")
COND = ("cond/manifest.json", "cond/decoder.fp32.onnx")
CLASSES = r"classes must be 2 to 10000 distinct names"

CASES = [
    # label files that disagree with their images
    Case("npz: fewer labels than images", _npz(y=np.arange(30) % 3), 1,
         r"lab\.npz\[y\]: shape \(30,\), expected \(40,\): one label per image; labels are needed "
         r"here", absent=NO_RUN),
    Case("npz: a negative label", _npz(y=np.arange(40) - 1), 1,
         r"lab\.npz\[y\]: negative label -1; labels are needed here", absent=NO_RUN),
    Case("npz: fractional labels", _npz(y=np.arange(40) / 2), 1,
         r"lab\.npz\[y\]: labels that are not whole numbers", absent=NO_RUN),
    Case("npz: a label past the class names", _npz(y=np.arange(40) % 5,
         classes=np.array(["a", "b"])), 1,
         r"lab\.npz\[classes\]: 2 names for 5 classes \(unique, non-empty\); labels are needed",
         absent=NO_RUN),
    Case("npz: more class names than the cap", _npz(y=np.arange(40) % 3,
         classes=np.array([f"c{i}" for i in range(10_001)])), 1,
         r"lab\.npz\[classes\]: 10001 names, over the 10000-class limit", absent=NO_RUN),
    Case("idx: label count differs from the images", lambda c: _idx_pair(
         c, idx_label_bytes(np.arange(18) % 3)), 1,
         r"train-labels-idx1-ubyte: holds 18 labels but the images file has 20 images; labels "
         r"are needed here", absent=NO_RUN),
    Case("idx: a label file that is an images file", lambda c: _idx_pair(
         c, idx_label_bytes(np.arange(20) % 3, magic=2051)), 1,
         r"train-labels-idx1-ubyte: not an IDX label file \(magic 2051, expected 2049\)",
         absent=NO_RUN),
    Case("--classes: a position out of range", _classes("7"), 2,
         r"--classes: class position 7 is out of range: the data has 3 classes \(0-2\)",
         absent=NO_RUN),
    Case("--classes: a name not in the data", _classes("Bag"), 2,
         r"--classes: no class 'Bag'; the classes are: 0, 1, 2", absent=NO_RUN),
    Case("--classes on unlabelled data", lambda c: [*TRAIN, "--data", c.write("u.npy",
         npy_bytes(images(40))), "--classes", "1"], 1,
         r"u\.npy: a single \.npy array has no labels; use \.npz with y; labels are needed here",
         absent=NO_RUN),
    Case("eval: data whose classes the model does not know", _eval_unknown_classes, 2,
         r"--data: the data has classes \['x', 'y'\] that the model does not know"),
    Case("quantize: data whose classes the model does not know", _quantize_unknown_classes, 2,
         r"--data: the data has classes \['x', 'y'\] that the model does not know",
         keep=("cond/manifest.json", "cond/decoder.fp32.onnx")),
    # the download cache
    Case("cache: a file changed after verification", lambda c: _cache(
         c, MNIST_IMAGES, gz(idx_bytes(images(10)))), 1,
         r"cache/mnist/train-images-idx3-ubyte\.gz: does not match mnist's "
         r"train-images-idx3-ubyte\.gz \(content is sha256 [0-9a-f]{16}\.\.\., expected sha256 "
         r"ba891046e6505d7a\.\.\.\); delete it to download it again", keep=(MNIST_IMAGES,),
         absent=("z.npy",)),
    Case("cache: a decompressed file changed", lambda c: _cache(
         c, "cache/mnist/t10k-labels-idx1-ubyte", idx_label_bytes(np.arange(10) % 10)), 1,
         r"t10k-labels-idx1-ubyte: does not match mnist's t10k-labels-idx1-ubyte\.gz",
         keep=("cache/mnist/t10k-labels-idx1-ubyte",)),
    Case("cache: a folder where a file should be", lambda c: _cache(c, MNIST_IMAGES), 1,
         r"train-images-idx3-ubyte\.gz: not a regular file; remove it or put "
         r"train-images-idx3-ubyte\.gz there"),
    Case("cache: a mirror that is not http", _mirror, 1,
         r"EDGEVAE_DATA_MIRROR='ftp://mirror\.example/mnist': expected an http:// or https:// "
         r"URL", absent=("cache",)),
    # thresholds
    Case("threshold: a value that is not a number", _detect(_set("value", "high")), 1,
         r"exp/manifest\.json: malformed threshold entry", absent=("f.png",)),
    Case("threshold: an unknown score kind", _detect(_set("score", "loss")), 1,
         r"malformed threshold entry"),
    Case("threshold: iwae without k", _detect(lambda t: t.update(score="iwae", k=None)), 1,
         r"malformed threshold entry"),
    Case("threshold: an unknown field", _detect(_set("calibrated_by", "me")), 1,
         r"malformed threshold entry"),
    Case("threshold: the models changed since", _detect(
         lambda t: t["models"].update({"decoder.int8.onnx": "0" * 64})), 1,
         r"exp/manifest\.json: the threshold was calibrated with another decoder\.int8\.onnx "
         r"\(sha256 000000000000\.\.\.\): the models changed since, or the threshold comes from "
         r"another export; calibrate it again", absent=("f.png",)),
    Case("threshold: copied from another export", _threshold_of_another_export, 1,
         r"the threshold was calibrated with another (en|de)coder\.int8\.onnx"),
    Case("threshold: of the fp32 models, detect with int8", _detect(
         _set("precision", "fp32"), "--precision", "int8"), 2,
         r"--precision: the threshold was calibrated for the fp32 models, not int8"),
    Case("threshold: none stored", _no_threshold, 1,
         r"exp/manifest\.json: no anomaly threshold; calibrate one first"),
    Case("a score CSV given as images", _score_csv_as_data, 1,
         r"scores\.csv: unrecognised content; accepted kinds: ", absent=("f.png",)),
    # held-out images
    Case("heldout.npy changed after export", _heldout(_append_byte), 1,
         r"exp/heldout\.npy: sha256 differs from the manifest \(changed after export\)",
         absent=("r.png",)),
    Case("heldout.npy of another shape", _heldout(_replace_heldout(images(20, 2, 5).reshape(20,
         10))), 1, r"exp/heldout\.npy: shape \[20, 10\], expected \[N, 784\]"),
    Case("heldout.npy of another dtype", _heldout(_replace_heldout(np.zeros((20, 784),
         np.int16))), 1, r"exp/heldout\.npy: dtype int16 is not supported; expected uint8 or "
         r"float32 pixels"),
    Case("heldout.npy with pixels outside [0, 1]", _heldout(_replace_heldout(np.full((20, 784),
         2.0, np.float32))), 1, r"exp/heldout\.npy: pixels outside \[0, 1\]"),
    Case("heldout.npy missing", _heldout(lambda c, exp: (exp / "heldout.npy").unlink()), 1,
         r"exp/heldout\.npy: "),
    Case("heldout labels: not one per image", _cond_labels(
         lambda h: h.update(labels=h["labels"][:-1])), 1,
         r"cond/manifest\.json: heldout\.labels must be 500 class positions in 0\.\.9, one per "
         r"held-out image", absent=("r.png",)),
    Case("heldout labels: past the class names", _cond_labels(
         lambda h: h["labels"].__setitem__(0, 12)), 1, r"heldout\.labels must be 500"),
    Case("heldout labels: classes the model does not have", _cond_labels(
         lambda h: h.update(classes=[f"k{i}" for i in range(10)])), 1,
         r"the held-out labels name classes the model does not have: k0, k1"),
    # conditional exports with malformed classes, labels outside them
    Case("classes: one name", _cond(lambda m: m.update(classes=["7"])), 1, CLASSES, keep=COND),
    Case("classes: a name twice", _cond(lambda m: m.update(classes=["1"] * 10)), 1, CLASSES),
    Case("classes: not a list", _cond(lambda m: m.update(classes="0123456789")), 1, CLASSES),
    Case("classes: fewer than the model's y", _cond(lambda m: m.update(classes=["a", "b", "c"])),
         1, r"cond/decoder\.fp32\.onnx: input y has shape .*10\], but the manifest lists 3 "
         r"classes", absent=("g.png",)),
    Case("classes: dropped from a conditional export", _cond(lambda m: m.pop("classes")), 1,
         r"cond/decoder\.fp32\.onnx: "),
    Case("sample --label outside the classes", _cond(None, "sample", "--label", "11"), 2,
         r"--label: '11' is not one of the model's classes \(0, 1, 2, .*9\)"),
    Case("manifold --label outside the classes", _cond(None, "manifold", "--label", "seven"), 2,
         r"--label: 'seven' is not one of the model's classes", absent=("manifold.png",)),
    Case("manifold of a conditional model without --label", _cond(None, "manifold"), 2,
         r"--label: this model is conditional: give a label \(0, 1"),
    Case("sample --label on an unconditional model", lambda c: ["sample", "--export-dir",
         c.export(), "--label", "3"], 2, r"--label: this model is not conditional"),
    Case("analogies --data with classes the model does not know", lambda c: [*_cond(
         None, "analogies", "--out", "a.png")(c), "--data", c.write("other.npz", npz_bytes(
         x=images(40), y=np.arange(40) % 2, classes=np.array(["x", "y"])))], 2,
         r"--data: the data has classes \['x', 'y'\] that the model does not know \(0, 1, ",
         absent=("a.png",)),
    Case("analogies of an unconditional model", _analogies_unconditional, 2,
         r"^error: exp: analogies need a conditional model", absent=("a.png",)),
    # the newer commands
    Case("score --out not a csv", _score("--out", "s.txt"), 2,
         r"--out: s\.txt should end in \.csv"),
    Case("score --data missing", _score("--data", "nope.npy"), 1,
         r"nope\.npy: no such file or directory", absent=("scores.csv",)),
    Case("score --k 0", _score("--score", "iwae", "--k", "0"), 2,
         r"'--k': 0 is not in the range 1<=x<=100000"),
    Case("threshold --fpr 0", _threshold("--fpr", "0"), 2, r"--fpr: must be in \(0, 1\), got 0\.0",
         keep=EXP),
    Case("threshold --fpr 1.5", _threshold("--fpr", "1.5"), 2, r"--fpr: must be in \(0, 1\)"),
    Case("detect --max-images 0", _detect(None, "--max-images", "0"), 2,
         r"'--max-images': 0 is not in the range 1<=x<=10000"),
    Case("anomaly-bench: an anomaly set that does not exist", _anomaly_bench(
         "--anomalous", "invert,bogus", "--limit", "10"), 1, r"bogus: no such file or directory"),
    Case("anomaly-bench --precisions: none named", _anomaly_bench("--precisions", " , "), 2,
         r"--precisions: name at least one precision", absent=("a.json",)),
    Case("anomaly-bench --precisions: int4 without the 4-bit decoder", _anomaly_bench_no_int4, 1,
         r"exp/decoder\.int4\.static\.onnx: no such model file"),
    Case("anomaly-bench: too few normal images to split", lambda c: _anomaly_bench(
         "--normal", c.write("one.npy", npy_bytes(images(1))))(c), 1,
         r"one\.npy: only 1 images: too few to split"),
    Case("crosscheck run: inputs of another export", _crosscheck_inputs_of_another_export, 2,
         r"exp5/decoder\.fp32\.onnx: input z takes \[N >= 4, 5\], the inputs have shape \[\d+, 4\] "
         r"\(inputs of another export\?\)", absent=("new.npz", "new.json")),
    Case("crosscheck run: inputs from a .npy", lambda c: ["crosscheck", "run", "--export-dir",
         c.export(), "--out", "new.npz", "--inputs", c.write("x.npy", npy_bytes(images(4))),
         "--no-sample"], 2,
         r"x\.npy: not a crosscheck results file \(one array, not an \.npz archive\)"),
    Case("crosscheck compare: a candidate that is missing", lambda c: [
         *_crosscheck_compare(lambda c: b"")(c)[:3], "nope.npz"], 2, r"nope\.npz: no such file"),
    Case("crosscheck compare: a corrupt candidate", _crosscheck_compare(
         lambda c: b"PK\x03\x04" + bytes(40)), 2, r"cand\.npz: not a crosscheck results file"),
    Case("crosscheck compare: another format", _crosscheck_compare(_other_format), 2,
         r"cand\.npz: format 'someone\.else/2', expected 'edgevae\.crosscheck/1'"),
    Case("firmware --score without the static encoder", _firmware_score_without_static_encoder, 1,
         r"exp: no encoder\.int8\.static\.onnx; the firmware score needs the statically "
         r"quantized encoder", absent=("fw",)),
    Case("firmware --score: its pair changed since", _firmware_score_of_a_changed_pair, 1,
         r"exp/manifest\.json: the threshold was calibrated with another "
         r"decoder\.int8\.static\.onnx", absent=("fw",)),
    # the firmware's models through the runtime (--precision firmware|int4)
    Case("--precision int4 without the 4-bit decoder", _precision(
         "int4", _without("decoder.int4.static.onnx")), 1,
         r"exp/decoder\.int4\.static\.onnx: no such model file", absent=("g.png",)),
    Case("--precision firmware: the manifest names a missing decoder", _precision(
         "firmware", _firmware_names("firmware_decoder", "board.onnx")), 1,
         r"exp/board\.onnx: no such model file", absent=("g.png",)),
    Case("--precision firmware: the manifest's name is a path", _precision(
         "firmware", _firmware_names("firmware_encoder", "../encoder.int8.onnx")), 1,
         r"exp/manifest\.json: firmware_encoder '\.\./encoder\.int8\.onnx' is not a file name",
         absent=("g.png",)),
    Case("detect: an int4 threshold of another 4-bit decoder", _detect_int4_after_requantize, 1,
         r"the threshold was calibrated with another decoder\.int4\.static\.onnx",
         absent=("f.png",)),
    Case("firmware of a float model", _firmware_float_model, 1,
         r"dec\.onnx: node 'dec\.out' \(op Gemm\) is not quantized to int8", absent=("fw",)),
    Case("firmware --out is a file", lambda c: ["firmware", "--export-dir", c.export(), "--out",
         c.write("fw", "a file")], 2, r"Invalid value for '--out': Directory 'fw' is a file"),
]  # fmt: skip


@pytest.fixture(scope="session")
def crosscheck_results(tiny_export, tmp_path_factory):
    """A results file of `edgevae crosscheck run` on the tiny export."""
    from edgevae.crosscheck.run import run_and_save

    out = tmp_path_factory.mktemp("crosscheck") / "ref.npz"
    run_and_save(tiny_export, out, sample=False)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_new_input_refused(case: Case, tmp_path, monkeypatch, capfd, request) -> None:
    run_case(case, tmp_path, monkeypatch, capfd, request)


def test_the_table_is_distinct() -> None:
    distinct(CASES)


def test_a_threshold_records_the_models_it_scored(thresholded_export) -> None:
    entry = json.loads((thresholded_export / "manifest.json").read_text())
    models, files = entry["threshold"]["models"], entry["files"]
    assert {"encoder.int8.onnx", "decoder.int8.onnx"} <= set(models)
    if entry["threshold"]["firmware"] is not None:
        assert {entry["firmware_encoder"], entry["firmware_decoder"]} <= set(models)
    assert all(files[name]["sha256"] == digest for name, digest in models.items())
