"""The C anomaly score: the host program against the numpy reference bit for bit, the
generated header, `edgevae firmware --score`, sanitizers and the emulated targets.

Built with firmware_demo/Makefile into pytest's tmp dirs; tests that need a cross toolchain
or QEMU skip when it is missing, and fail instead under CI=true.
"""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
from support.firmware import (
    KERNEL,
    TARGETS,
    checksum_line,
    decode_with,
    make,
    need_tools,
    sample_latents,
)
from support.firmware_score import (
    PAIRS,
    Pair,
    make_pair,
    ort_encode_decode,
    score_images_for_tests,
    score_with,
    shared_pair,
    with_static_encoder,
)

from edgevae.firmware.codegen import generate_firmware
from edgevae.firmware.encoder import encode_int
from edgevae.firmware.intref import decode_int, demo_latents, fnv1a32
from edgevae.firmware.score import KINDS, load_score_model, score_images, score_parts
from edgevae.firmware.scoregen import generate_score_firmware

MCU = Pair("mcu", latent=8, hidden=(128,), seed=11)  # the mcu preset's shape, 784-128-8


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(name, kind) -> (export folder, weights dir, build dir), the host programs built for
    the score of that kind (default: excess, the default kind)."""
    need_tools("gcc", "make")
    root = tmp_path_factory.mktemp("score")
    cache: dict[tuple[str, str], tuple] = {}

    def get(
        name: str,
        pair: Pair | None = None,
        targets: tuple[str, ...] = ("host",),
        kind: str = "excess",
    ):
        if (name, kind) not in cache:
            export = shared_pair(tmp_path_factory, name) if pair is None else None
            export = export or make_pair(root / name / "export", pair)
            weights, build = root / name / kind / "gen", root / name / kind / "build"
            model = load_score_model(export, kind=kind)
            generate_score_firmware(model, weights, command=f"test {name} {kind}")
            make(weights, build, *targets)
            cache[name, kind] = (export, weights, build)
        return cache[name, kind]

    return get


def bits(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, np.float32).view(np.uint32)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_host_score_equals_numpy_bit_for_bit(built, name, kind):
    export, weights, build = built(name, kind=kind)
    model = load_score_model(export, kind=kind)
    header = (weights / "edgevae_weights.h").read_text()
    assert f"#define EDGEVAE_SCORE_KIND_EXCESS {int(kind == 'excess')} " in header
    pixels = score_images_for_tests(PAIRS[name].shape)
    parts = score_parts(model, pixels)
    got = score_with(build / "host" / "edgevae_score", pixels)
    assert np.array_equal(bits(got), bits(parts.score))
    rows = score_with(build / "host" / "edgevae_score", pixels, "--parts")
    latent = model.encoder.latent_dim
    mu, logvar = encode_int(model.encoder, pixels)
    assert np.array_equal(bits(rows[:, 0]), bits(parts.score))
    assert np.array_equal(bits(rows[:, 1]), bits(parts.recon))
    assert np.array_equal(bits(rows[:, 2]), bits(parts.kl))
    assert np.array_equal(bits(rows[:, 3 : 3 + latent]), bits(mu))
    assert np.array_equal(bits(rows[:, 3 + latent :]), bits(logvar))


def test_score_build_still_decodes_like_intref(built):
    export, _, build = built("firmware")
    model = load_score_model(export).decoder
    z = sample_latents(model.latent_dim, n=300)
    assert np.array_equal(decode_with(build / "host" / "edgevae_decode", z), decode_int(model, z))


def test_score_program_input_errors_and_info(built):
    _, _, build = built("deep-odd")
    program = str(build / "host" / "edgevae_score")
    partial = subprocess.run([program], input=bytes(99 * 2 + 5), capture_output=True)
    assert partial.returncode == 1 and len(partial.stdout.splitlines()) == 2
    assert b"input ends inside image 3 (5 of 99 bytes)" in partial.stderr
    empty = subprocess.run([program], input=b"", capture_output=True)
    assert empty.returncode == 0 and empty.stdout == b""
    info = subprocess.run([program, "--info"], capture_output=True, text=True)
    assert info.returncode == 0 and "99 bytes per image" in info.stdout
    assert "threshold: none" in info.stdout
    assert "\nscore: excess (elbo - the least -log p(x|z) of any decoder)\n" in info.stdout
    _, _, elbo = built("deep-odd", kind="elbo")
    info = subprocess.run(
        [str(elbo / "host" / "edgevae_score"), "--info"], capture_output=True, text=True
    )
    assert info.returncode == 0 and "\nscore: elbo\n" in info.stdout
    bad = subprocess.run([program, "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_header_threshold_and_decode_only_output(tmp_path, kind):
    export = make_pair(
        tmp_path / "t", PAIRS["deep-odd"], threshold={"score": kind, "firmware": 123.4}
    )
    model = load_score_model(export)
    assert model.kind == kind
    generate_score_firmware(model, tmp_path / "with", command="x")
    header = (tmp_path / "with" / "edgevae_weights.h").read_text()
    line = next(x for x in header.splitlines() if x.startswith("#define EDGEVAE_THRESHOLD_NATS"))
    value = float.fromhex(line.split()[2].rstrip("f"))
    assert (
        value == float(np.float32(123.4))
        and f"123.4 nats: the manifest's threshold (score {kind})" in line
    )
    assert "#define EDGEVAE_HAS_SCORE 1" in header
    assert f"#define EDGEVAE_SCORE_KIND_EXCESS {int(kind == 'excess')} " in header
    source = (tmp_path / "with" / "edgevae_weights.c").read_text()
    entropy = "const int32_t edgevae_entropy[256]"
    assert (entropy in source) == ("EDGEVAE_ENTROPY_SHIFT" in header) == (kind == "excess")
    assert f'#define EDGEVAE_ENCODER_SHA256 "{model.encoder.sha256}"' in header

    model.threshold, model.threshold_note = None, "no threshold in the manifest (x)"
    generate_score_firmware(model, tmp_path / "without", command="x")
    header = (tmp_path / "without" / "edgevae_weights.h").read_text()
    assert "EDGEVAE_THRESHOLD_NATS " not in header.replace("no EDGEVAE_THRESHOLD_NATS:", "")
    assert "/* no EDGEVAE_THRESHOLD_NATS: no threshold in the manifest (x) */" in header

    # without the score the files are the decoder's alone, and the score build starts with them
    generate_firmware(export / "decoder.int8.static.onnx", tmp_path / "plain", command="x")
    plain = (tmp_path / "plain" / "edgevae_weights.c").read_text()
    assert (
        "encoder" not in plain
        and "HAS_SCORE" not in (tmp_path / "plain" / "edgevae_weights.h").read_text()
    )
    scored = (tmp_path / "with" / "edgevae_weights.c").read_text()
    body = plain.split("*/\n", 1)[1]  # after the stamp, which names the encoder too
    assert scored.split("*/\n", 1)[1].startswith(body)


def test_header_threshold_reaches_the_program(tmp_path):
    need_tools("gcc", "make")
    export = make_pair(
        tmp_path / "t", PAIRS["deep-odd"], threshold={"score": "elbo", "firmware": 80.5}
    )
    generate_score_firmware(load_score_model(export), tmp_path / "gen", command="x")
    make(tmp_path / "gen", tmp_path / "b", str(tmp_path / "b" / "host" / "edgevae_score"))
    info = subprocess.run(
        [str(tmp_path / "b" / "host" / "edgevae_score"), "--info"], capture_output=True, text=True
    )
    assert "threshold: 80.5 nats" in info.stdout


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["gaussian", "deep-odd"])
def test_score_sources_are_strict_c99(built, tmp_path, name, kind):
    _, weights, _ = built(name, kind=kind)
    for source in (KERNEL / "edgevae_kernel.c", KERNEL / "host" / "edgevae_score.c"):
        done = subprocess.run(
            [
                "gcc",
                "-std=c99",
                "-pedantic",
                "-Wall",
                "-Wextra",
                "-Werror",
                f"-I{KERNEL}",
                f"-I{weights}",
                "-c",
                str(source),
                "-o",
                str(tmp_path / "strict.o"),
            ],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr


def test_sanitizers_find_nothing_in_the_score(built):
    for name, kind in (("deep-odd", "excess"), ("gaussian", "excess"), ("deep-odd", "elbo")):
        export, weights, build = built(name, kind=kind)
        make(weights, build, "asan", timeout=300)
        shape = PAIRS[name].shape
        rng = np.random.default_rng(4)
        pixels = np.concatenate(
            [
                score_images_for_tests(shape, n=600),
                rng.integers(0, 256, (400, shape[0] * shape[1])).astype(np.uint8),
            ]
        )
        got = score_with(build / "asan" / "edgevae_score", pixels)
        assert np.array_equal(bits(got), bits(score_images(export, pixels, kind)))


@pytest.mark.slow
def test_real_export_score_c(tiny_export, tmp_path):
    """The tiny trained run: C score == numpy reference, C mu/logvar == onnxruntime's."""
    need_tools("gcc", "make")
    from edgevae.data.core import load_images

    export = with_static_encoder(tiny_export, tmp_path / "export")
    model = load_score_model(export)
    generate_score_firmware(model, tmp_path / "gen", command="test")
    make(tmp_path / "gen", tmp_path / "build", str(tmp_path / "build" / "host" / "edgevae_score"))
    test, _ = load_images(None, split="test")
    pixels = np.rint(test[:300] * 255).astype(np.uint8)
    pixels = np.concatenate([pixels, 255 - pixels[:100]])
    rows = score_with(tmp_path / "build" / "host" / "edgevae_score", pixels, "--parts")
    assert np.array_equal(bits(rows[:, 0]), bits(score_images(model, pixels)))
    mu, logvar, _ = ort_encode_decode(export, pixels)
    latent = model.encoder.latent_dim
    assert np.array_equal(bits(rows[:, 3 : 3 + latent]), bits(mu))
    assert np.array_equal(bits(rows[:, 3 + latent :]), bits(logvar))


# ------------------------------------------------------------------------ emulated targets


def demo_score_checksum(export, kind: str = "excess") -> str:
    """What the demo prints: FNV-1a over the float32 scores of the decoded demo images and
    their negatives."""
    model = load_score_model(export, kind=kind)
    pixels = decode_int(model.decoder, demo_latents(16, model.decoder.latent_dim))
    scores = score_images(model, np.concatenate([pixels, 255 - pixels]))
    return f"score checksum: 0x{fnv1a32(scores.astype('<f4').tobytes()):08x}"


def score_checksum_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("score checksum: 0x")]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize(
    ("target", "kind"),
    [*((t, "excess") for t in ("run-host", *sorted(TARGETS))), ("run-m4", "elbo")],
)
def test_every_target_prints_the_numpy_score_checksum(built, target, kind):
    need_tools("make", *TARGETS.get(target, ()))
    export, weights, build = built("firmware", kind=kind)
    out = make(weights, build, target, timeout=300).stdout
    assert score_checksum_line(out) == demo_score_checksum(export, kind)
    assert re.search(rf"^{kind} scores: decoded images, mean ", out, re.M), out
    decoded = decode_int(load_score_model(export).decoder, demo_latents(16, 8))
    assert checksum_line(out) == f"checksum: 0x{fnv1a32(decoded.tobytes()):08x}"
    if target in ("run-m4", "run-m33"):
        assert re.search(r"^score stack: \d+ bytes", out, re.M), out


def test_armv7_programs_equal_numpy(built):
    """The stdin programs as a 32-bit Raspberry Pi OS would run them (qemu-arm, Cortex-A7)."""
    need_tools("make", *TARGETS["run-armv7"])
    export, weights, build = built("gaussian")
    make(weights, build, "armv7-tools", timeout=300)
    qemu = ("qemu-arm-static", "-cpu", "cortex-a7")
    model = load_score_model(export)
    pixels = score_images_for_tests((28, 20), n=120)
    got = score_with(build / "armv7" / "edgevae_score", pixels, prefix=qemu)
    assert np.array_equal(bits(got), bits(score_parts(model, pixels).score))
    z = sample_latents(model.decoder.latent_dim, n=100)
    result = subprocess.run(
        [*qemu, str(build / "armv7" / "edgevae_decode")],
        input="".join(" ".join(repr(float(v)) for v in row) + "\n" for row in z),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    got = np.array(result.stdout.split(), np.int64).reshape(len(z), -1)
    assert np.array_equal(got, decode_int(model.decoder, z))


def test_arm_state_builds_match(built, tmp_path):
    """ARM (not Thumb) state, as a Pi Zero / Pi 1 compiler defaults to: the SMLAD loop loads
    activations with two LDRs there. Run as ARMv7 under qemu; ARMv6 is compiled only (the
    cross libc is ARMv7)."""
    need_tools("make", *TARGETS["run-armv7"])
    export, weights, _ = built("firmware")
    flags = "ARMV7_FLAGS=-march=armv7-a -mfpu=vfpv3-d16 -mfloat-abi=hard -marm"
    out = make(weights, tmp_path / "arm", "run-armv7", extra=(flags,), timeout=300).stdout
    assert "kernel arm-dsp" in out
    assert score_checksum_line(out) == demo_score_checksum(export)
    subprocess.run(
        [
            "arm-linux-gnueabihf-gcc",
            "-std=c99",
            "-O2",
            "-Wall",
            "-Werror",
            "-marm",
            "-march=armv6",
            "-mfpu=vfp",
            f"-I{KERNEL}",
            f"-I{weights}",
            "-c",
            str(KERNEL / "edgevae_kernel.c"),
            "-o",
            str(tmp_path / "armv6.o"),
        ],
        check=True,
        capture_output=True,
    )


def test_mcu_sized_score_fits_and_counts(built):
    """784-128-8 (the mcu preset's shape): encoder + decoder + kernel within 256 KB of flash
    and 8 KB of RAM on Cortex-M4, at <= 1.5 instructions per MAC for the whole score."""
    need_tools("make", "arm-none-eabi-gcc", "qemu-system-arm", "aarch64-linux-gnu-gcc")
    need_tools("arm-linux-gnueabihf-gcc")
    _, weights, build = built("mcu", MCU)
    out = make(weights, build, "icount", timeout=300).stdout
    per_mac = re.findall(r"instructions per score, (\d+) MACs, ([\d.]+) instructions/MAC", out)
    assert len(per_mac) == 2, out
    (macs, dsp), (_, portable) = per_mac
    assert int(macs) == 784 * 128 + 2 * 128 * 8 + 8 * 128 + 128 * 784
    print(f"Cortex-M4 score, 784-128-8: {dsp} instructions/MAC (SMLAD), {portable} (portable)")
    assert float(dsp) <= 1.5 < float(portable)
    assert len(set(re.findall(r"score checksum: 0x[0-9a-f]{8}", out))) == 1
    sizes = make(weights, build, "size", timeout=300).stdout
    row = next(line for line in sizes.splitlines() if line.startswith("cortex-m4"))
    code = int(re.search(r"kernel code +(\d+) B", row).group(1))
    model = int(re.search(r"model +(\d+) B", row).group(1))
    ram = int(re.search(r"kernel RAM +(\d+) B", row).group(1))
    stack = int(re.search(r"score stack (\d+) B", row).group(1))
    assert code + model <= 256 * 1024 and ram + stack <= 8 * 1024, row


# ------------------------------------------------------------------------------------ CLI


def test_cli_firmware_score(built, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import edgevae.cli  # noqa: F401  (registers every command)
    from edgevae.cli.common import app

    need_tools("cc")
    export, _, _ = built("deep-odd")
    monkeypatch.chdir(tmp_path)
    args = ["firmware", "--export-dir", str(export), "--out", "fw", "--score"]
    result = CliRunner().invoke(app, [*args, "--json", "r.json"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert (
        report["score"]["likelihood"] == "bernoulli" and report["score"]["threshold_nats"] is None
    )
    assert report["score"]["kind"] == "excess" and report["score"]["kind_from"] == "default"
    model = load_score_model(export)
    assert report["score"]["macs"] == model.encoder.macs + model.decoder.macs == 4697 + 4587
    lines = result.output.splitlines()
    for key in ("build_command", "run_command", "score_build_command", "score_run_command"):
        assert f"  {report[key]}" in lines
    assert "no EDGEVAE_THRESHOLD_NATS: no threshold in the manifest" in result.output
    assert "score: excess (EDGEVAE_SCORE_KIND_EXCESS 1; the default: " in result.output
    assert "`edgevae threshold --score excess` stores one" in result.output
    assert "--score" in (tmp_path / "fw" / "edgevae_weights.h").read_text()
    assert (tmp_path / "fw" / "edgevae_score.c").read_bytes() == (
        KERNEL / "host" / "edgevae_score.c"
    ).read_bytes()
    for key in ("build_command", "score_build_command"):
        subprocess.run(["sh", "-c", report[key]], check=True, timeout=120)
    line = subprocess.run(
        ["sh", "-c", report["score_run_command"]], capture_output=True, text=True, check=True
    ).stdout
    zero = score_images(export, np.zeros((1, 99), np.uint8))
    assert bits(np.float32(float(line))) == bits(zero[0])

    only = CliRunner().invoke(app, [*args[:3], "--out", "w", "--score", "--weights-only"])
    assert only.exit_code == 0, only.output
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == [
        "edgevae_weights.c",
        "edgevae_weights.h",
    ]
    plain = CliRunner().invoke(app, [*args[:3], "--out", "p", "--json", "p.json"])
    assert plain.exit_code == 0 and "score" not in json.loads((tmp_path / "p.json").read_text())
    assert not (tmp_path / "p" / "edgevae_score.c").exists()
    assert "edgevae_score" not in plain.output


def test_cli_firmware_score_takes_the_kind_of_the_threshold(tmp_path, monkeypatch):
    """--score generates the stored threshold's kind with its EDGEVAE_THRESHOLD_NATS;
    --score-kind chooses (and implies --score); the other kind of a stored firmware threshold
    is refused in one line, naming the option."""
    from typer.testing import CliRunner

    import edgevae.cli  # noqa: F401  (registers every command)
    from edgevae.cli import main
    from edgevae.cli.common import app

    monkeypatch.chdir(tmp_path)
    export = make_pair(
        tmp_path / "t", PAIRS["deep-odd"], threshold={"score": "elbo", "firmware": 80.5}
    )
    args = ["firmware", "--export-dir", str(export), "--weights-only"]
    for out, extra in (("a", ["--score"]), ("b", ["--score-kind", "elbo"])):
        result = CliRunner().invoke(app, [*args, "--out", out, *extra, "--json", f"{out}.json"])
        assert result.exit_code == 0, result.output
        score = json.loads((tmp_path / f"{out}.json").read_text())["score"]
        assert score["kind"] == "elbo" and score["threshold_nats"] == 80.5
        assert score["kind_from"] == ("threshold" if out == "a" else "asked")
        header = (tmp_path / out / "edgevae_weights.h").read_text()
        assert "#define EDGEVAE_SCORE_KIND_EXCESS 0 " in header
        assert "#define EDGEVAE_THRESHOLD_NATS 0x1.4200000000000p+6f " in header
        assert "EDGEVAE_THRESHOLD_NATS = 80.5 (the manifest's, score elbo)" in result.output
        assert "score: elbo (EDGEVAE_SCORE_KIND_EXCESS 0; " in result.output
    assert "--score --score-kind elbo" in (tmp_path / "b" / "edgevae_weights.h").read_text()

    before = sorted(p.name for p in tmp_path.iterdir())
    code = main([*args, "--out", "c", "--score-kind", "excess"])
    assert code == 2 and sorted(p.name for p in tmp_path.iterdir()) == before
    from edgevae.errors import UsageError
    from edgevae.firmware.deploy import write_firmware

    with pytest.raises(UsageError, match="threshold for the elbo score, not excess") as info:
        write_firmware(export, tmp_path / "c", command="x", score=True, score_kind="excess")
    assert info.value.param == "score_kind" and "--" not in str(info.value)
    with pytest.raises(UsageError) as info:
        write_firmware(export, tmp_path / "c", command="x", score_kind="elbo")
    assert info.value.param == "score_kind"

    # a threshold of a kind the board does not compute: the default kind, no threshold
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["threshold"] = {"score": "iwae", "firmware": None}
    (export / "manifest.json").write_text(json.dumps(manifest))
    for extra in ([], ["--score-kind", "elbo"]):
        result = CliRunner().invoke(app, [*args, "--out", "d", "--score", *extra])
        assert result.exit_code == 0, result.output
        assert "which a board does not compute (it computes excess or elbo)" in result.output
        assert "EDGEVAE_THRESHOLD_NATS " not in (tmp_path / "d" / "edgevae_weights.h").read_text()


def test_cli_score_kind_mismatch_is_one_line(tmp_path, capsys):
    from edgevae.cli import main

    export = make_pair(
        tmp_path / "t", PAIRS["deep-odd"], threshold={"score": "excess", "firmware": 9.5}
    )
    code = main(["firmware", "--export-dir", str(export), "--out", str(tmp_path / "o"),
                 "--score-kind", "elbo"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0, err
    assert "--score-kind: " in err and "threshold for the excess score, not elbo" in err
    assert not (tmp_path / "o").exists()


def test_cli_score_errors_name_the_flag(built, tmp_path):
    from edgevae.cli.common import _error_line
    from edgevae.cli.firmware import firmware
    from edgevae.errors import UsageError
    from edgevae.firmware.deploy import write_firmware

    export, _, _ = built("deep-odd")
    with pytest.raises(UsageError) as info:
        write_firmware(export / "decoder.int8.static.onnx", tmp_path / "x", command="x", score=True)
    assert info.value.param == "export_dir" and "--" not in str(info.value)
    assert _error_line(info.value, firmware)[0].startswith("--export-dir: ")
