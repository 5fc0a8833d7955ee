"""Sizes that would exhaust memory: refused up front, or done in bounded chunks.

Every option and input that sets a count or a size is worked out before anything is
allocated (`edgevae.limits`). The table runs each case through `main()` with a small
EDGEVAE_MEMORY_LIMIT (so no test needs a big machine): exit 2 and one line naming the flag,
what it would need and the limit, nothing written (data files: exit 1, naming the file). The
API raises the same `UsageError` with the argument's name. Large counts that are legitimate
(importance samples, many rows) run in chunks: real child processes report their peak
memory, which stays far below what one unchunked array would take.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.hardening import images, mini_export, npy_bytes, npz_bytes, png_header_only
from support.hardening import with_heldout as heldout
from support.table import Case, Ctx, distinct, run_case

import edgevae
from edgevae import limits
from edgevae.errors import DataError, UsageError

NEED = r"would need \d+\.\d [KMGT]iB, more than the memory limit of "
BY_ENV = r"\(set by EDGEVAE_MEMORY_LIMIT\)$"
NO_RUN = ("runs", "r")
TRAIN = ["train", "--no-export", "--threads", "1", "--run-dir", "r"]

# ------------------------------------------------------------------------------- setups


def _sample(*args: str):
    return lambda c: ["sample", "--export-dir", c.export(), "--out", "g.png", *args]


def _cond(c: Ctx, *args: str) -> list[str]:
    return [*args, "--export-dir", c.copy("tiny_cond_export", "cond"), "--precision", "fp32"]


def _interpolate(c: Ctx) -> list[str]:
    heldout(c.tmp / c.export())
    return ["interpolate", "--export-dir", "exp", "--steps", "10000", "--out", "i.png"]


def _reconstruct(c: Ctx) -> list[str]:
    heldout(c.tmp / c.export(), n=500)
    return ["reconstruct", "--export-dir", "exp", "--n", "500", "--out", "r.png"]


def _decode(suffix: str):
    def setup(c: Ctx) -> list[str]:
        c.write("z.npy", npy_bytes(np.zeros((50_000, 4), np.float32)))
        return ["decode", "--z", "z.npy", "--export-dir", c.export(), "--out", f"d{suffix}"]

    return setup


def _wide_data(c: Ctx) -> list[str]:
    c.write("wide.npy", npy_bytes(images(60, 256, 256)))
    return [*TRAIN, "--data", "wide.npy", "--hidden", "16", "--latent-dim", "2",
            "--batch-size", "60"]  # fmt: skip


def _many_classes(c: Ctx) -> list[str]:
    y = (np.arange(200) * 50).astype(np.int64)  # labels up to 9950: 9951 classes
    c.write("many.npz", npz_bytes(x=images(200), y=y))
    return [*TRAIN, "--data", "many.npz", "--conditional", "--hidden", "4", "--latent-dim", "2",
            "--batch-size", "10"]  # fmt: skip


def _huge_label(c: Ctx) -> list[str]:
    y = np.arange(40, dtype=np.int64)
    y[7] = 10**12  # one class name per class would be made: 10^12 of them
    c.write("huge.npz", npz_bytes(x=images(40), y=y))
    return [*TRAIN, "--data", "huge.npz", "--conditional"]


def _quantize_calib(c: Ctx) -> list[str]:
    exp, run = c.copy("tiny_export", "exp"), c.copy("tiny_run", "run")
    return ["quantize", "--export-dir", exp, "--run-dir", run, "--recipe", "static-pc",
            "--calib", "1000000"]  # fmt: skip


def _float32_data(c: Ctx) -> list[str]:
    c.write("big.npy", npy_bytes(images(20_000)))
    return ["encode", "--data", "big.npy", "--out", "z.npy", "--export-dir", c.export()]


def _png_folder(c: Ctx) -> list[str]:
    for i in range(40):
        c.write(f"wide/{i:02d}.png", png_header_only(256, 256))
    return ["encode", "--data", "wide", "--out", "z.npy", "--export-dir", c.export()]


def _firmware(*args: str):
    return lambda c: ["firmware", "--export-dir", c.copy("tiny_export", "exp"), "--out", "fw",
                      *args]  # fmt: skip


def _crosscheck(c: Ctx) -> list[str]:
    exp = c.copy("tiny_export", "exp")
    return ["crosscheck", "run", "--export-dir", exp, "--out", "r.npz", "--no-sample"]


def _hostile_model(c: Ctx) -> list[str]:
    """The tiny export with a 6 MiB int8 decoder of empty attributes (2 bytes each)."""
    exp = c.copy("tiny_export", "exp")
    c.write(f"{exp}/decoder.int8.onnx", _empty_attributes(3 << 20))
    return ["sample", "--export-dir", exp, "--out", "g.png"]


EXP = ("exp/manifest.json", "exp/decoder.int8.onnx", "exp/encoder.int8.onnx")

CASES = [
    # images to make
    Case("sample --n", _sample("--n", "100000"), 2,
         rf"^error: --n: 100000 samples: 100000 images of 28x28 and their 9512x9482-pixel grid "
         rf"{NEED}64\.0 MiB {BY_ENV}", absent=("g.png",), limit="64M"),
    Case("sample --label all: n x classes", lambda c: _cond(c, "sample", "--n", "1000"), 2,
         rf"--n: 1000 samples per class: 10000 images of 28x28 .*{NEED}16\.0 MiB",
         absent=("grid.png",), limit="16M"),
    Case("manifold --steps", lambda c: ["manifold", "--export-dir", c.export(), "--steps", "1000"],
         2, rf"--steps: a 1000x1000 manifold: 1000000 images of 28x28 .*{NEED}256\.0 MiB",
         absent=("manifold.png",), limit="256M"),
    Case("interpolate --steps", _interpolate, 2,
         rf"--steps: a path of 10000 steps: 10000 images of 28x28 .*{NEED}16\.0 MiB",
         absent=("i.png",), limit="16M"),
    Case("analogies --n x classes", lambda c: _cond(c, "analogies", "--n", "1000"), 2,
         rf"--n: 500 rows of 11 images: 5500 images of 28x28 .*{NEED}8\.0 MiB",
         absent=("analogies.png",), limit="8M"),
    Case("reconstruct --n", _reconstruct, 2,
         rf"--n: 500 reconstructions: 1000 images of 28x28 .*{NEED}2\.0 MiB", absent=("r.png",),
         limit="2M"),
    Case("decode --z into a grid", _decode(".png"), 2,
         rf"--z: decoding 50000 latent vectors: 50000 images of 28x28 .*{NEED}64\.0 MiB",
         absent=("d.png",), limit="64M"),
    Case("decode --z into means", _decode(".npy"), 2,
         rf"--z: decoding 50000 latent vectors into 28x28 means {NEED}64\.0 MiB",
         absent=("d.npy",), limit="64M"),
    Case("parity --n", lambda c: ["parity", "--export-dir", c.export(), "--n", "1000000"], 2,
         rf"--n: 1000000 latent vectors through every decoder \(28x28 images\) {NEED}1\.0 GiB",
         absent=("parity.png",), limit="1G"),
    Case("bench --batch-sizes", lambda c: ["bench", "--export-dir", c.export(), "--no-torch",
         "--batch-sizes", "1,1000000"], 2,
         rf"--batch-sizes: timing a batch of 1000000 \(28x28 images\) {NEED}256\.0 MiB",
         limit="256M"),
    # model sizes and batches
    Case("train --hidden", lambda c: [*TRAIN, "--hidden", "1000000000"], 2,
         rf"--hidden: training a model with hidden layers 1000000000 and 20 latent dims "
         rf"\(64,000,000,041 parameters, 7 copies\) {NEED}1\.0 GiB", absent=NO_RUN, limit="1G"),
    Case("train --latent-dim", lambda c: [*TRAIN, "--latent-dim", "100000000"], 2,
         r"--latent-dim: training a model with hidden layers 400 and 100000000 latent dims",
         absent=NO_RUN, limit="1G"),
    Case("train --batch-size on wide images", _wide_data, 2,
         rf"--batch-size: training on batches of 48 images {NEED}64\.0 MiB", absent=NO_RUN,
         limit="64M"),
    Case("train --conditional: one-hot labels of 9951 classes", _many_classes, 2,
         rf"--data: training on 200 images with their copies {NEED}8\.0 MiB", absent=NO_RUN,
         limit="8M"),
    # calibration images, firmware
    Case("quantize --calib", _quantize_calib, 2,
         rf"--calib: calibrating on 4000 images of 28x28 {NEED}64\.0 MiB", keep=EXP,
         limit="64M"),
    Case("firmware: the C text of the models", _firmware(), 2,
         rf"--export-dir: C source for [\d,]+ bytes of int8 models {NEED}64\.0 KiB",
         absent=("fw",), limit="64K"),
    Case("firmware --weight-bits 4: the C text of the 4-bit decoder", _firmware(
         "--weight-bits", "4"), 2,
         rf"--export-dir: C source for [\d,]+ bytes of int8 models {NEED}64\.0 KiB",
         absent=("fw",), limit="64K"),
    # 4-bit QAT and the cross-CPU check
    Case("train --qat-bits 4: the fake-quantized layers", lambda c: [
         *TRAIN, "--hidden", "2000,2000", "--qat-bits", "4"], 2,
         rf"--hidden: training a model with hidden layers 2000,2000 and 20 latent dims "
         rf"\(8,132,041 parameters, 7 copies and 4-bit QAT's\) {NEED}256\.0 MiB", absent=NO_RUN,
         limit="256M"),
    Case("crosscheck run: the models' inputs and outputs", _crosscheck, 2,
         rf"exp: crosschecking \d+ models of 784 pixels, 4 latent dims {NEED}1\.0 MiB",
         absent=("r.npz", "r.json"), limit="1M"),
    # model files: what protobuf could take to parse them
    Case("a model file of empty messages", _hostile_model, 1,
         rf"exp/decoder\.int8\.onnx: parsing this 6\.0 MiB model \(protobuf's worst case\) "
         rf"{NEED}256\.0 MiB", keep=("exp/decoder.int8.onnx",), absent=("g.png",),
         limit="256M"),
    # data files and class counts
    Case("8-bit data as float32", _float32_data, 1,
         rf"big\.npy: 20000 images of 28x28 as float32 {NEED}32\.0 MiB {BY_ENV}",
         absent=("z.npy",), limit="32M"),
    Case("png folder", _png_folder, 1,
         rf"wide: 40 images of 256x256 pixels {NEED}4\.0 MiB", absent=("z.npy",), limit="4M"),
    Case("labels naming 10^12 classes", _huge_label, 1,
         r"huge\.npz: label 1000000000000 is over the limit of 10000 classes; labels are needed",
         absent=NO_RUN),
    # the limit itself
    Case("EDGEVAE_MEMORY_LIMIT malformed", _sample("--n", "4"), 2,
         r"^error: EDGEVAE_MEMORY_LIMIT='lots': expected a size such as 2G, 512M",
         absent=("g.png",), limit="lots"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_size_refused(case: Case, tmp_path, monkeypatch, capfd, request) -> None:
    run_case(case, tmp_path, monkeypatch, capfd, request)


def test_the_table_is_distinct() -> None:
    distinct(CASES)


# --------------------------------------------------------------------------- the API


@pytest.fixture
def model(tmp_path, monkeypatch):
    monkeypatch.setenv(limits.ENV, "64M")
    return edgevae.load(mini_export(tmp_path / "exp"), "fp32")


@pytest.mark.parametrize(
    "call, param",
    [
        (lambda m: m.sample(10**9), "n"),
        (lambda m: m.manifold(100_000), "steps"),
        (lambda m: m.interpolate(images(1), images(1, seed=1), steps=10**8), "steps"),
        (lambda m: m.decode(np.zeros((2_000_000, 4), np.float32)), "z"),
        (lambda m: m.encode(np.zeros((2_000_000, 784), np.uint8)), "x"),
    ],
    ids=["sample", "manifold", "interpolate", "decode", "encode"],
)
def test_the_model_refuses_outputs_over_the_limit(model, call, param) -> None:
    with pytest.raises(UsageError, match="more than the memory limit of 64.0 MiB") as info:
        call(model)
    assert info.value.param == param


def test_conditional_outputs_count_every_class(tiny_cond_export, monkeypatch) -> None:
    monkeypatch.setenv(limits.ENV, "4M")
    m = edgevae.load(tiny_cond_export, "fp32")
    with pytest.raises(UsageError, match=r"200 samples of each of 10 classes") as info:
        m.sample(200, label="all")
    assert info.value.param == "n"
    with pytest.raises(UsageError, match=r"200 images decoded as each of 10 classes") as info:
        m.analogies(images(200), [0] * 200)
    assert info.value.param == "x"
    assert m.sample(2, label="all").shape == (20, 28, 28)  # small counts still work


def test_train_refuses_before_making_the_run_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(limits.ENV, "1G")
    for kwargs, param in (({"hidden": [10**9]}, "hidden"), ({"latent_dim": 10**8}, "latent_dim")):
        with pytest.raises(UsageError, match="more than the memory limit") as info:
            edgevae.train(run_dir=tmp_path / "r", **kwargs)
        assert info.value.param == param
    wide = tmp_path / "wide.npy"
    wide.write_bytes(npy_bytes(images(60, 256, 256)))
    monkeypatch.setenv(limits.ENV, "64M")
    with pytest.raises(UsageError, match="batches of 48 images") as info:
        edgevae.train(str(wide), run_dir=tmp_path / "r", hidden=[16], latent_dim=2, batch_size=60)
    assert info.value.param == "batch_size"
    assert not (tmp_path / "r").exists()


def test_qat_counts_its_fake_quantized_layers(tmp_path, monkeypatch) -> None:
    """2000,2000 hidden units fit in 256 MiB without 4-bit QAT, not with it."""
    from edgevae.config import ModelConfig, TrainConfig
    from edgevae.training.options import check_memory

    monkeypatch.setenv(limits.ENV, "256M")
    model = ModelConfig(784, (28, 28), hidden=[2000, 2000], latent_dim=20)
    check_memory(model, TrainConfig())
    with pytest.raises(UsageError, match=r"7 copies and 4-bit QAT's\) would need") as info:
        check_memory(model, TrainConfig(qat_bits=4))
    assert info.value.param == "hidden"
    with pytest.raises(UsageError, match=r"4-bit QAT's") as info:
        edgevae.train(run_dir=tmp_path / "r", hidden=[2000, 2000], qat_bits=4)
    assert not (tmp_path / "r").exists()


def test_quantize_refuses_calibration_over_the_limit(tiny_run, tiny_export, tmp_path, monkeypatch):
    import shutil

    exp = tmp_path / "exp"
    shutil.copytree(tiny_export, exp)
    before = (exp / "manifest.json").read_bytes()
    monkeypatch.setenv(limits.ENV, "64M")
    with pytest.raises(UsageError, match="calibrating on 4000 images") as info:
        edgevae.quantize(exp, run_dir=tiny_run, calib=10**6, recipe="static-pc")
    assert info.value.param == "calib"
    assert (exp / "manifest.json").read_bytes() == before


def test_data_as_float32_is_checked_before_conversion(tmp_path, monkeypatch) -> None:
    from edgevae.data.core import load_dataset, load_images

    path = tmp_path / "big.npy"
    path.write_bytes(npy_bytes(images(20_000)))
    monkeypatch.setenv(limits.ENV, "32M")
    for read in (lambda: load_dataset(str(path)), lambda: load_images(str(path), split="all")):
        with pytest.raises(DataError, match=r"big\.npy: 20000 images of 28x28 as float32"):
            read()
    monkeypatch.setenv(limits.ENV, "256M")
    assert load_dataset(str(path)).train.dtype == np.float32


# ------------------------------------------------------------------- chunks, not refusals


def test_chunked_results_equal_unchunked(model, monkeypatch) -> None:
    """A chunk size set by the limit changes how the work is cut, not the numbers."""
    monkeypatch.delenv(limits.ENV)
    x = images(3)
    z = np.random.default_rng(0).standard_normal((30_000, 4)).astype(np.float32)
    whole, bounds = model.decode(z), model.evaluate(x, k=30_000, seed=1)
    monkeypatch.setenv(limits.ENV, "256M")  # chunks of 10,700 rows
    assert limits.chunk_rows(784) < 30_000 < limits.MAX_CHUNK_ROWS
    np.testing.assert_array_equal(model.decode(z), whole)
    chunked = model.evaluate(x, k=30_000, seed=1)
    for name, value in bounds.to_dict().items():
        assert getattr(chunked, name) == pytest.approx(value, rel=1e-12, abs=1e-9), name


# The child's own peak: VmHWM of its memory map (ru_maxrss would include the pytest worker's
# resident memory at fork time, which Linux carries across exec).
CHILD = """
import json, re, sys
from edgevae.cli import main
code = main(sys.argv[1:])
peak = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)
print(json.dumps({"code": code, "maxrss_kb": int(peak)}))
"""


def _peak(args: list[str], cwd: Path, limit: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", limits.ENV: limit}
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "stderr": proc.stderr}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's VmHWM")
def test_many_importance_samples_run_in_chunks(tiny_export, tiny_run, tmp_path) -> None:
    """score --k 100000 and eval --k 200000 on one image: unchunked, the float64 logits alone
    would take 0.6 and 1.3 GB (and their temporaries several times that); in chunks the
    whole process stays under 1 GB (onnxruntime and torch themselves included)."""
    (tmp_path / "one.npy").write_bytes(npy_bytes(images(1)))
    score = ["score", "--export-dir", str(tiny_export), "--data", "one.npy", "--split", "all",
             "--score", "iwae", "--k", "100000", "--out", "s.csv"]  # fmt: skip
    got = _peak(score, tmp_path, "512M")
    print("score --k 100000:", got)
    assert got["code"] == 0 and got["maxrss_kb"] < 1_000_000, got
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 2
    ev = ["eval", "--run-dir", str(tiny_run), "--k", "200000", "--limit", "1", "--threads", "1"]
    got = _peak(ev, tmp_path, "512M")
    print("eval --k 200000:", got)
    assert got["code"] == 0 and got["maxrss_kb"] < 1_000_000, got


def _empty_attributes(n: int) -> bytes:
    """ONNX bytes of one node with `n` empty attributes (2 bytes each on the wire)."""

    def field(num: int, payload: bytes) -> bytes:
        out, v = bytearray([num << 3 | 2]), len(payload)
        while v > 0x7F:
            out.append(v & 0x7F | 0x80)
            v >>= 7
        return bytes(out) + bytes([v]) + payload

    return field(7, field(1, field(5, b"") * n))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's VmHWM")
def test_a_model_of_empty_messages_is_refused_before_it_is_parsed(tiny_export, tmp_path) -> None:
    """A 6 MiB decoder of empty attributes would take ~600 MB inside protobuf (~100 bytes per
    byte); under a 256 MiB limit `sample` refuses it in one line before parsing, and the whole
    process stays near its usual size."""
    export = shutil.copytree(tiny_export, tmp_path / "export")
    (export / "decoder.int8.onnx").write_bytes(_empty_attributes(3 << 20))
    args = ["sample", "--export-dir", str(export), "--n", "4", "--out", "g.png"]
    got = _peak(args, tmp_path, "256M")
    print("hostile decoder:", got)
    assert got["code"] == 1 and got["maxrss_kb"] < 250_000, got
    line = got["stderr"].strip().splitlines()[-1]
    assert "decoder.int8.onnx: parsing this 6.0 MiB model (protobuf's worst case)" in line
    assert "more than the memory limit of 256.0 MiB" in line and not (tmp_path / "g.png").exists()


# ----------------------------------------------------------------------- the limit itself


@pytest.mark.parametrize(
    "text, size",
    [("2G", 2 << 30), ("512M", 512 << 20), ("1.5G", 3 << 29), ("64KiB", 64 << 10),
     ("1000000", 1_000_000), (" 3 gb ", 3 << 30), ("1T", 1 << 40)],
)  # fmt: skip
def test_parse_size(text, size) -> None:
    assert limits.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1G", "0", "2X", "1e9", "G"])
def test_parse_size_refuses(text) -> None:
    with pytest.raises(UsageError, match="EDGEVAE_MEMORY_LIMIT="):
        limits.parse_size(text)


def test_human() -> None:
    assert [limits.human(n) for n in (0, 1023, 1024, 3 << 29, 2.9 * (1 << 40))] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 GiB", "2.9 TiB"
    ]  # fmt: skip


def test_the_limit_is_half_the_available_memory(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(limits.ENV, raising=False)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  1000 kB\nMemAvailable:    2048 kB\n")
    assert limits._meminfo_available(meminfo) == 2048 * 1024
    assert limits._meminfo_available(tmp_path / "nope") is None
    cg = tmp_path / "cg"
    cg.mkdir()
    (cg / "memory.max").write_text("max\n")
    (cg / "memory.current").write_text("100\n")
    assert limits._cgroup_room(cg) is None
    (cg / "memory.max").write_text("1000\n")
    assert limits._cgroup_room(cg) == 900
    monkeypatch.setattr(limits, "available_bytes", lambda: 10 << 30)
    assert limits.memory_limit() == 5 << 30
    monkeypatch.setattr(limits, "available_bytes", lambda: None)
    assert limits.memory_limit() == limits.FALLBACK_BYTES
    monkeypatch.setenv(limits.ENV, "3G")
    assert limits.memory_limit() == 3 << 30


def test_this_machine_reports_its_available_memory() -> None:
    if not Path("/proc/meminfo").exists():
        pytest.skip("no /proc/meminfo")
    assert limits.available_bytes() > 0


def test_check_names_the_argument_need_and_limit(monkeypatch) -> None:
    monkeypatch.setenv(limits.ENV, "1M")
    limits.check(1 << 20, "exactly the limit", "n")
    with pytest.raises(UsageError) as info:
        limits.check((1 << 20) + 1, "one byte more", "n")
    assert str(info.value) == (
        "n: one byte more would need 1.0 MiB, more than the memory limit of 1.0 MiB "
        "(set by EDGEVAE_MEMORY_LIMIT)"
    )
    with pytest.raises(DataError, match=r"^f\.npy: 5 images would need"):
        limits.check(2 << 20, "f.npy: 5 images", error=DataError)


def test_chunk_rows(monkeypatch) -> None:
    monkeypatch.setenv(limits.ENV, "4G")
    assert limits.chunk_rows(784) == limits.MAX_CHUNK_ROWS
    assert limits.chunk_rows(4096 * 4096) == 4
    assert limits.chunk_rows(10**12) == 1


def test_the_class_caps_agree() -> None:
    from edgevae.data.labels import MAX_CLASSES
    from edgevae.runtime import manifest

    assert MAX_CLASSES == manifest.MAX_CLASSES
