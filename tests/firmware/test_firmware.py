"""The C kernel: host build vs the numpy reference, sanitizers, and the emulated targets.

Everything is built with firmware_demo/Makefile (from the package's kernel sources) into
tmp_path (WEIGHTS= and BUILD=). Tests
that need a cross toolchain or QEMU skip when it is missing, and fail instead under CI=true.
"""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
from support.firmware import (
    FIRMWARE,
    KERNEL,
    TARGETS,
    WIDE,
    Variant,
    checksum_line,
    decode_with,
    make,
    make_decoder,
    need_tools,
    ort_pixels,
    sample_latents,
    shared_decoder,
)

from edgevae.firmware.codegen import generate_firmware
from edgevae.firmware.fixedpoint import requantize, split_scale
from edgevae.firmware.intref import decode_int, demo_latents, fnv1a32, load_int_model

HOST_VARIANTS = (
    "firmware",
    "mnist-like",
    "relu-fused",
    "per-tensor",
    "s8",
    "tanh",
    "odd",
    "sigmoid-q",
    "full-range",
    "matmul-add",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> (model path, weights dir, build dir) with the host decoder built."""
    need_tools("gcc", "make")
    root = tmp_path_factory.mktemp("fw")
    cache: dict[str, tuple] = {}

    def get(name: str, variant: Variant | None = None):
        if name not in cache:
            if variant is None:
                path = shared_decoder(tmp_path_factory, name)
            else:
                path = make_decoder(root / name / "model", variant)
            weights, build = root / name / "gen", root / name / "build"
            generate_firmware(path, weights, command=f"test {name}")
            make(weights, build, str(build / "host" / "edgevae_decode"))
            cache[name] = (path, weights, build)
        return cache[name]

    return get


@pytest.mark.parametrize("name", HOST_VARIANTS)
def test_host_build_equals_intref_bit_for_bit(built, name):
    path, _, build = built(name)
    model = load_int_model(path)
    z = sample_latents(model.latent_dim)
    assert len(z) >= 1000
    got = decode_with(build / "host" / "edgevae_decode", z)
    assert np.array_equal(got, decode_int(model, z))


def test_host_build_is_strict_c99(built):
    _, weights, build = built("firmware")
    sources = (KERNEL / "edgevae_kernel.c", KERNEL / "host" / "edgevae_decode.c")
    for source in (*sources, FIRMWARE / "demo" / "demo.c"):
        subprocess.run(
            [
                "gcc",
                "-std=c99",
                "-pedantic",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-DEDGEVAE_HOSTED",
                f"-I{KERNEL}",
                f"-I{weights}",
                "-c",
                str(source),
                "-o",
                str(build / "strict.o"),
            ],
            check=True,
            capture_output=True,
        )
    subprocess.run(
        [
            "gcc",
            "-std=c99",
            "-pedantic",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{KERNEL}",
            "-c",
            str(weights / "edgevae_weights.c"),
            "-o",
            str(build / "strict.o"),
        ],
        check=True,
        capture_output=True,
    )


def test_demo_checksum_matches_intref(built):
    path, weights, build = built("firmware")
    model = load_int_model(path)
    out = make(weights, build, "run-host").stdout
    expected = fnv1a32(decode_int(model, demo_latents(16, model.latent_dim)).tobytes())
    assert checksum_line(out) == f"checksum: 0x{expected:08x}"
    pgm = (build / "host" / "demo.pgm").read_bytes()
    assert pgm.startswith(b"P5\n112 112\n255\n") and len(pgm) == 15 + 112 * 112


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1 2 3", "line 3: expected 8 numbers, got 3"),
        ("1 2 3 4 5 6 7 8 9", "line 3: expected 8 numbers, got more"),
        ("1 2 3 4 5 6 7 x8", "line 3: not a number"),
        ("1 2 3 4 5 6 7 nan", "line 3: non-finite value"),
        ("1 2 3 4 5 6 7 -inf", "line 3: non-finite value"),
        ("1 2 3 4 5 6 7 1e39", "line 3: number out of"),
        ("1,2,3,4,5,6,7,8,", None),
        ("  1\t2 3 4 5 6 7 8  ", None),
    ],
)
def test_bad_lines_stop_with_a_message(built, line, message):
    _, _, build = built("firmware")
    text = "0 0 0 0 0 0 0 0\n\n" + line + "\n"
    result = subprocess.run(
        [str(build / "host" / "edgevae_decode")],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if message is None:
        assert result.returncode == 0 and len(result.stdout.splitlines()) == 2
    else:
        assert result.returncode == 1
        assert message in result.stderr
        assert len(result.stdout.splitlines()) == 1  # the good line before it was decoded


def test_sanitizers_find_nothing(built):
    path, weights, build = built("odd")  # small and padded everywhere: fast under ASan
    make(weights, build, "asan", timeout=180)
    model = load_int_model(path)
    rng = np.random.default_rng(11)
    z = np.concatenate(
        [
            sample_latents(model.latent_dim, n=6000, seed=12),  # incl. zeros, -0.0, +-1e3
            rng.uniform(-1e3, 1e3, (2000, model.latent_dim)),
            rng.standard_normal((1000, model.latent_dim)) * 1e3,
        ]
    ).astype(np.float32)
    assert len(z) >= 10_000
    got = decode_with(build / "asan" / "edgevae_decode", z, timeout=300)
    assert np.array_equal(got, decode_int(model, z))


HARNESS = r"""
#include <stdio.h>
#include "edgevae_kernel.c"
int main(void) {
    long acc; unsigned long mult; unsigned shift;
    while (scanf("%ld %lu %u", &acc, &mult, &shift) == 3)
        printf("%ld %ld\n",
               (long)ev_requantize((int32_t)acc, (uint32_t)mult | (shift - 16u) << 24),
               (long)ev_requantize_exact((int32_t)acc, (uint32_t)mult, shift));
    return 0;
}
"""


def test_requantization_fast_path_equals_exact_path_and_intref(built, tmp_path):
    """The kernel's 32-bit path defers to the exact one near ties; probe exactly there."""
    _, weights, _ = built("firmware")
    (tmp_path / "harness.c").write_text(HARNESS)
    exe = tmp_path / "harness"
    subprocess.run(
        [
            "gcc",
            "-std=c99",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{KERNEL}",
            f"-I{weights}",
            str(tmp_path / "harness.c"),
            str(weights / "edgevae_weights.c"),
            "-o",
            str(exe),
        ],
        check=True,
    )
    rng = np.random.default_rng(5)
    scales = np.exp(rng.uniform(np.log(2.0**-23), np.log(100.0), 3000)).astype(np.float32)
    mult, shift = np.array([split_scale(float(s)) for s in scales]).T
    keep = (shift >= 17) & (shift <= 47)
    mult, shift = mult[keep], shift[keep]
    # accumulators whose product lands within a few units of a rounding tie
    k = rng.integers(-400, 400, mult.size)
    tie = np.rint((k + 0.5) * 2.0 ** shift.astype(np.float64) / mult).astype(np.int64)
    acc = np.concatenate(
        [
            tie + rng.integers(-2, 3, tie.size),
            rng.integers(-(2**31) + 1, 2**31, mult.size),
            rng.integers(-(2**24), 2**24, mult.size),
        ]
    )
    acc = np.clip(acc, -(2**31) + 1, 2**31 - 1)
    m, s = np.tile(mult, 3), np.tile(shift, 3)
    text = "".join(f"{a} {b} {c}\n" for a, b, c in zip(acc, m, s, strict=True))
    out = subprocess.run([str(exe)], input=text, capture_output=True, text=True, check=True)
    got = np.array(out.stdout.split(), dtype=np.int64).reshape(-1, 2)
    ref = requantize(acc, m.astype(np.uint64), s.astype(np.uint64))
    assert np.array_equal(got[:, 0], got[:, 1])
    assert np.array_equal(got[:, 0], ref)


@pytest.mark.slow
def test_real_export_end_to_end(tiny_export, tmp_path):
    """The tiny trained run from conftest: export -> firmware -> C equals intref and ORT."""
    need_tools("gcc", "make")
    from edgevae.firmware.codegen import find_firmware_decoder

    path = find_firmware_decoder(tiny_export)
    generate_firmware(path, tmp_path / "gen", command="test")
    make(tmp_path / "gen", tmp_path / "build", str(tmp_path / "build" / "host" / "edgevae_decode"))
    model = load_int_model(path)
    z = sample_latents(model.latent_dim, n=1000)
    got = decode_with(tmp_path / "build" / "host" / "edgevae_decode", z)
    assert np.array_equal(got, decode_int(model, z))
    assert np.abs(got - ort_pixels(path, z)).max() <= 1


# ------------------------------------------------------------------------ emulated targets


@pytest.fixture(scope="module")
def host_checksums(built):
    path, weights, build = built("firmware")
    model = load_int_model(path)
    normal = checksum_line(make(weights, build / "normal", "run-host").stdout)
    wide = checksum_line(make(weights, build / "wide", "run-host", extra=WIDE).stdout)
    expected = fnv1a32(decode_int(model, demo_latents(32, model.latent_dim, wide=True)).tobytes())
    assert wide == f"checksum: 0x{expected:08x}"
    return normal, wide


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_emulated_target_prints_the_host_checksum(built, host_checksums, target):
    need_tools("make", *TARGETS[target])
    _, weights, build = built("firmware")
    normal, wide = host_checksums
    out = make(weights, build / "normal", target).stdout
    assert checksum_line(out) == normal
    if target not in ("run-aarch64", "run-armv7"):
        assert re.search(r"^stack: \d+ bytes", out, re.M), out
    # extreme and signed-zero latents through the SMLAD path too
    assert checksum_line(make(weights, build / "wide", target, extra=WIDE).stdout) == wide


def test_cortex_m4_instructions_per_mac(built):
    need_tools("make", "arm-none-eabi-gcc", "qemu-system-arm")
    _, weights, build = built("default", Variant("default", latent=20, hidden=(400,)))
    out = make(weights, build, "icount", timeout=300).stdout
    per_mac = [float(x) for x in re.findall(r"([\d.]+) instructions/MAC", out)]
    assert len(per_mac) == 2, out
    dsp, portable = per_mac
    print(f"Cortex-M4 20-400-784: {dsp} instructions/MAC (SMLAD), {portable} (portable C)")
    assert dsp <= 1.5 < portable
    assert len(set(re.findall(r"checksum: 0x[0-9a-f]{8}", out))) == 1


def test_missing_weights_are_reported(tmp_path):
    need_tools("make")
    result = subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(FIRMWARE),
            f"WEIGHTS={tmp_path}/none",
            f"BUILD={tmp_path}/b",
            "host",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "run 'edgevae firmware" in result.stderr


def test_size_report(built):
    need_tools("make", "arm-none-eabi-gcc", "qemu-system-arm", "aarch64-linux-gnu-gcc")
    need_tools("arm-linux-gnueabihf-gcc")
    _, weights, build = built("firmware")
    out = make(weights, build / "normal", "size", timeout=300).stdout
    rows = {line.split()[0]: line for line in out.splitlines() if "kernel code" in line}
    assert set(rows) == {"host", "aarch64", "armv7", "cortex-m4", "cortex-m33"}, out
    assert "score stack" not in out  # decoder-only weights
    for name in ("cortex-m4", "cortex-m33"):
        code = int(re.search(r"kernel code +(\d+) B", rows[name]).group(1))
        ram = int(re.search(r"kernel RAM +(\d+) B", rows[name]).group(1))
        stack = int(re.search(r"stack +(\d+) B \(measured\)", rows[name]).group(1))
        assert code <= 4096 and ram + stack <= 4096, rows[name]


FAULT_MAIN = r"""
#include <stdio.h>
int main(int argc, char **argv) {
    (void)argc; (void)argv;
#ifdef DO_FAULT
    return *(volatile int *)0xE0100000u; /* unmapped: BusFault */
#else
    printf("returning 7\n");
    return 7;
#endif
}
"""


@pytest.mark.parametrize(
    ("board", "cpu", "script"),
    [
        ("mps2-an386", ["-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16"], "mps2_an386.ld"),
        ("mps2-an505", ["-mcpu=cortex-m33", "-mfpu=fpv5-sp-d16"], "mps2_an505.ld"),
    ],
)
def test_bare_metal_exit_status_and_faults(tmp_path, board, cpu, script):
    need_tools("arm-none-eabi-gcc", "qemu-system-arm")
    (tmp_path / "main.c").write_text(FAULT_MAIN)
    for flag, status, text in (("-DNO_FAULT", 7, "returning 7"), ("-DDO_FAULT", 3, "BusFault")):
        elf = tmp_path / f"t{flag}.elf"
        subprocess.run(
            [
                "arm-none-eabi-gcc",
                "-std=c99",
                "-O2",
                "-mthumb",
                "-mfloat-abi=hard",
                *cpu,
                flag,
                "--specs=nano.specs",
                "--specs=rdimon.specs",
                "-nostartfiles",
                "-T",
                str(FIRMWARE / "baremetal" / script),
                str(FIRMWARE / "baremetal" / "startup.c"),
                str(tmp_path / "main.c"),
                "-o",
                str(elf),
            ],
            check=True,
            capture_output=True,
        )
        run = subprocess.run(
            [
                "qemu-system-arm",
                "-M",
                board,
                "-nographic",
                "-monitor",
                "none",
                "-serial",
                "null",
                "-semihosting-config",
                "enable=on,target=native",
                "-kernel",
                str(elf),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == status and text in run.stdout + run.stderr
