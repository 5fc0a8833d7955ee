"""4-bit weights: the firmware-int4 recipe's decoder, the packed layout, and the C kernel's
4-bit path against the numpy reference and onnxruntime on every target.

The recipe keeps each 4-bit layer in int8 tensors (values -8..7), so onnxruntime runs the
same integer arithmetic as the kernel: the three agree on every pixel.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from support.firmware import (
    TARGETS,
    WIDE,
    Variant,
    checksum_line,
    decode_with,
    make,
    need_tools,
    ort_pixels,
    sample_latents,
)
from support.firmware_int4 import make_int4_decoder

from edgevae.errors import ModelFileError
from edgevae.firmware.codegen import generate_firmware, interleave_nibbles
from edgevae.firmware.intref import decode_int, demo_latents, fnv1a32, load_int_model
from edgevae.quant.int4 import QMAX, QMIN, quantize_weights

VARIANTS = {
    v.name: v
    for v in (
        Variant("int4"),  # 8-64-784: an int8 first layer, a 4-bit output layer
        Variant("int4-odd", hidden=(37, 22), latent=5, out=99, seed=3),  # padding everywhere
        Variant("int4-mnist", latent=20, hidden=(96,), mnist_like=True, seed=1),
    )
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> (int4 model path, weights dir, build dir) with the host decoder built."""
    need_tools("gcc", "make")
    root = tmp_path_factory.mktemp("fw4")
    cache: dict[str, tuple] = {}

    def get(name: str, variant: Variant | None = None):
        if name not in cache:
            path = make_int4_decoder(root / name / "model", variant or VARIANTS[name])
            weights, build = root / name / "gen", root / name / "build"
            generate_firmware(path, weights, command=f"test {name}", weight_bits=4)
            make(weights, build, str(build / "host" / "edgevae_decode"))
            cache[name] = (path, weights, build)
        return cache[name]

    return get


def unpack_nibbles(words: np.ndarray, out_dim: int, in_dim: int) -> np.ndarray:
    """The layout of edgevae_types.h read back: two words per 4 rows x 4 columns, nibble i
    of a word holding (row, column) as listed there, as w + 8."""
    out_p, in_p = -(-out_dim // 4) * 4, -(-in_dim // 4) * 4
    w = np.zeros((out_p, in_p), np.int64)
    cells = [(0, 0), (0, 2), (1, 0), (1, 2), (0, 1), (0, 3), (1, 1), (1, 3)]
    it = iter(words.tolist())
    for b in range(out_p // 4):
        for c in range(in_p // 4):
            for pair in range(2):
                word = next(it)
                for i, (r, k) in enumerate(cells):
                    w[4 * b + 2 * pair + r, 4 * c + k] = ((word >> (4 * i)) & 0xF) - 8
    return w[:out_dim, :in_dim]


def test_nibble_layout_round_trips():
    rng = np.random.default_rng(0)
    for shape in ((4, 4), (7, 5), (784, 128), (1, 1)):
        w = rng.integers(QMIN, QMAX + 1, shape)
        words = interleave_nibbles(w)
        assert words.dtype == np.uint32 and words.size == -(-shape[0] // 4) * -(-shape[1] // 4) * 2
        assert np.array_equal(unpack_nibbles(words, *shape), w)


def test_quantize_weights_keeps_a_grid_and_rounds_the_rest():
    rng = np.random.default_rng(1)
    q = rng.integers(QMIN, QMAX + 1, (50, 40)).astype(np.int8)
    q[:, 0] = -8  # the finest grid holding the row is the original one
    s = rng.uniform(1e-3, 1.0, 50).astype(np.float32)
    snapped = (q.astype(np.float32) * s[:, None]).astype(np.float32)
    q2, s2 = quantize_weights(snapped)
    assert np.array_equal(q2, q)
    assert np.array_equal((q2.astype(np.float32) * s2[:, None]).astype(np.float32), snapped)
    w = rng.standard_normal((30, 64)).astype(np.float32)
    w[3] = 0.0  # an all-zero row
    q3, s3 = quantize_weights(w)
    assert q3.min() >= QMIN and q3.max() <= QMAX and np.all(s3 > 0) and not q3[3].any()
    err = np.abs(q3 * s3[:, None] - w)
    # least-squares clipping: within half a step, except the clipped extremes
    assert (err <= s3[:, None] / 2 + 1e-6).mean() > 0.95


def test_recipe_output_is_4_bit_after_the_first_layer(built):
    import onnx
    from onnx import numpy_helper

    path, _, _ = built("int4-odd")
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["edgevae.recipe"] == "firmware-int4" and meta["edgevae.weight_bits"] == "4"
    int_model = load_int_model(path, 4)
    assert [layer.weight_bits for layer in int_model.layers] == [8, 4, 4]
    assert np.abs(int_model.layers[0].weight).max() > 8
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weights = [v for k, v in inits.items() if k.endswith("weight_quantized")]
    assert len(weights) == 3 and all(w.dtype == np.int8 for w in weights)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_c_equals_intref_equals_onnxruntime(built, name):
    path, _, build = built(name)
    model = load_int_model(path, 4)
    z = sample_latents(model.latent_dim)
    ref = decode_int(model, z)
    assert np.array_equal(decode_with(build / "host" / "edgevae_decode", z), ref)
    assert np.array_equal(ort_pixels(path, z), ref)
    # the same file as int8 weights: the same integers, so the same pixels
    assert np.array_equal(decode_int(load_int_model(path), z), ref)


def test_flash_halves_for_the_4_bit_layers(built, tmp_path):
    path, _, _ = built("int4-mnist")
    four = generate_firmware(path, tmp_path / "4", command="t", weight_bits=4)
    eight = generate_firmware(path, tmp_path / "8", command="t")
    assert [layer["weight_bits"] for layer in four.layers] == [8, 4]
    assert four.weight_bytes == 20 * 96 + 96 * 784 // 2
    assert eight.weight_bytes == 20 * 96 + 96 * 784
    assert four.flash_bytes == eight.flash_bytes - 96 * 784 // 2
    assert four.weight_bits == 4 and eight.weight_bits == 8
    header = (tmp_path / "4" / "edgevae_weights.h").read_text()
    assert "#define EDGEVAE_HAS_4BIT_WEIGHTS 1" in header
    assert "EDGEVAE_HAS_4BIT_WEIGHTS" not in (tmp_path / "8" / "edgevae_weights.h").read_text()


def test_4_bit_asked_of_an_int8_model_is_refused(tmp_path):
    from support.firmware import make_decoder

    path = make_decoder(tmp_path, Variant("firmware"))
    with pytest.raises(ModelFileError, match=r"no layer has 4-bit weights .*int4 recipe"):
        load_int_model(path, 4)


def test_demo_checksum_matches_intref(built):
    path, weights, build = built("int4")
    model = load_int_model(path, 4)
    expected = fnv1a32(decode_int(model, demo_latents(16, model.latent_dim)).tobytes())
    assert checksum_line(make(weights, build, "run-host").stdout) == f"checksum: 0x{expected:08x}"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_target_prints_the_host_checksum(built, target):
    need_tools("make", *TARGETS[target])
    path, weights, build = built("int4-odd")
    model = load_int_model(path, 4)
    for extra, count, wide in (((), 16, False), (WIDE, 32, True)):
        z = demo_latents(count, model.latent_dim, wide=wide)
        expected = f"checksum: 0x{fnv1a32(decode_int(model, z).tobytes()):08x}"
        sub = build / ("wide" if wide else "normal")
        assert checksum_line(make(weights, sub, target, extra=extra).stdout) == expected


def test_sanitizers_find_nothing(built):
    path, weights, build = built("int4-odd")
    make(weights, build, "asan", timeout=180)
    model = load_int_model(path, 4)
    z = sample_latents(model.latent_dim, n=3000, seed=12)
    assert np.array_equal(decode_with(build / "asan" / "edgevae_decode", z), decode_int(model, z))


def test_cortex_m4_instructions_per_mac(built):
    """The default preset's shape, 20-400-784, 4-bit after the first layer: <= 1.7 / MAC."""
    need_tools("make", "arm-none-eabi-gcc", "qemu-system-arm")
    _, weights, build = built("default", Variant("default", latent=20, hidden=(400,)))
    out = make(weights, build, "icount", timeout=300).stdout
    per_mac = [float(x) for x in re.findall(r"([\d.]+) instructions/MAC", out)]
    assert len(per_mac) == 2, out
    dsp, portable = per_mac
    print(f"Cortex-M4 20-400-784, 4-bit: {dsp} instructions/MAC (SMLAD), {portable} (portable C)")
    assert dsp <= 1.7 < portable
    assert len(set(re.findall(r"checksum: 0x[0-9a-f]{8}", out))) == 1


def test_cli_weight_bits_4(built, tmp_path, capsys):
    import json
    import shutil

    from edgevae.cli import main

    path, _, _ = built("int4")
    export = tmp_path / "export"
    export.mkdir()
    shutil.copy(path, export / path.name)
    out, report = tmp_path / "fw", tmp_path / "fw.json"
    args = ["firmware", "--export-dir", str(export), "--out", str(out), "--json", str(report)]
    assert main([*args, "--weight-bits", "4"]) == 0
    text = capsys.readouterr().out
    assert "4-bit" in text and "8-bit" in text and "cc -std=c99" in text
    data = json.loads(report.read_text())
    assert data["weight_bits"] == 4 and [r["weight_bits"] for r in data["layers"]] == [8, 4]
    assert "--weight-bits 4" in (out / "edgevae_weights.h").read_text()  # the stamped command
    (export / path.name).unlink()
    assert main([*args, "--weight-bits", "4"]) == 1
    assert "no decoder.int4.static.onnx" in capsys.readouterr().err
    assert main([*args, "--weight-bits", "5"]) == 2
    assert "--weight-bits" in capsys.readouterr().err


def test_arm_state_and_strict_c99(built, tmp_path):
    """ARM (not Thumb) state, where the 4-bit loop loads its weights with two LDRs: the same
    checksum under qemu-arm; every source compiles as strict C99 with 4-bit weights."""
    import subprocess

    from support.firmware import FIRMWARE, KERNEL

    path, weights, build = built("int4-odd")
    for source in (KERNEL / "edgevae_kernel.c", FIRMWARE / "demo" / "demo.c"):
        subprocess.run(
            ["gcc", "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-DEDGEVAE_HOSTED"]
            + [f"-I{KERNEL}", f"-I{weights}", "-c", str(source), "-o", str(tmp_path / "s.o")],
            check=True,
            capture_output=True,
        )
    need_tools("make", *TARGETS["run-armv7"])
    model = load_int_model(path, 4)
    expected = fnv1a32(decode_int(model, demo_latents(16, model.latent_dim)).tobytes())
    flags = "ARMV7_FLAGS=-march=armv7-a -mfpu=vfpv3-d16 -mfloat-abi=hard -marm"
    out = make(weights, tmp_path / "arm", "run-armv7", extra=(flags,), timeout=300).stdout
    assert "kernel arm-dsp" in out and checksum_line(out) == f"checksum: 0x{expected:08x}"
