"""`edgevae firmware`'s folder: weights plus the packaged kernel, built by the printed cc line."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.firmware import (
    FIRMWARE,
    KERNEL,
    decode_with,
    need_tools,
    sample_latents,
    shared_decoder,
)

from edgevae.errors import UsageError
from edgevae.firmware.codegen import FORMAT
from edgevae.firmware.deploy import (
    HOST_SOURCE,
    KERNEL_FILES,
    SCORE_SOURCE,
    build_argv,
    program_path,
    run_command,
    write_firmware,
)
from edgevae.firmware.intref import decode_int, load_int_model


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    return shared_decoder(tmp_path_factory, "firmware")


def _sh(command: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["sh", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{command}\n{result.stderr}"
    return result


def _check_built_decoder(report, decoder: Path, cwd: Path) -> None:
    """The printed run line prints one image; the program equals intref bit for bit."""
    model = load_int_model(decoder)
    line = _sh(report.run_command, cwd).stdout
    assert line.count("\n") == 1 and len(line.split()) == model.output_dim
    expected = decode_int(model, np.zeros((1, model.latent_dim), np.float32))
    assert np.array_equal(np.array(line.split(), np.int64), expected[0])
    z = sample_latents(model.latent_dim, n=200)
    got = decode_with(cwd / program_path(Path(report.files[0]).parent), z)
    assert np.array_equal(got, decode_int(model, z))


def test_folder_builds_with_the_printed_command(decoder, tmp_path, monkeypatch):
    need_tools("cc")
    monkeypatch.chdir(tmp_path)
    report = write_firmware(decoder.parent, Path("fw"), command="test")
    names = sorted(Path(f).name for f in report.files)
    expected = [*KERNEL_FILES, "edgevae_decode.c", "edgevae_weights.c", "edgevae_weights.h"]
    assert names == sorted(expected)
    for name in (*KERNEL_FILES, HOST_SOURCE):  # verbatim copies of the packaged sources
        assert (tmp_path / "fw" / Path(name).name).read_bytes() == (KERNEL / name).read_bytes()
    assert report.build_command.startswith("cc ") and str(KERNEL) not in report.build_command
    assert report.kernel_dir == str(KERNEL)
    _sh(report.build_command, tmp_path)
    _check_built_decoder(report, decoder, tmp_path)


def test_weights_only_builds_from_the_packaged_kernel(decoder, tmp_path, monkeypatch):
    need_tools("cc")
    monkeypatch.chdir(tmp_path)
    report = write_firmware(decoder, Path("weights dir"), sources=False, command="test")
    assert sorted(p.name for p in (tmp_path / "weights dir").iterdir()) == [
        "edgevae_weights.c",
        "edgevae_weights.h",
    ]
    assert f"-I {KERNEL} " in report.build_command and "'weights dir/" in report.build_command
    _sh(report.build_command, tmp_path)
    _check_built_decoder(report, decoder, tmp_path)


def test_commands_quote_and_anchor_paths():
    assert program_path(Path(".")) == "./edgevae_decode"  # runs from the current folder
    argv = build_argv(Path("-o dd"))  # a folder that looks like an option stays a path
    assert argv[:5] == ["cc", "-std=c99", "-O2", "-I", "./-o dd"]
    assert "./-o dd/edgevae_weights.c" in argv
    assert run_command(Path("a b"), 3) == "printf '0 0 0\\n' | 'a b/edgevae_decode'"


def test_out_dir_that_is_a_file_is_a_usage_error(decoder, tmp_path):
    from edgevae.cli.common import _error_line
    from edgevae.cli.firmware import firmware

    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError) as info:
        write_firmware(decoder, tmp_path / "f", command="x")
    assert info.value.param == "out_dir" and "--" not in str(info.value)
    assert _error_line(info.value, firmware)[0].startswith("--out: ")


def test_firmware_demo_keeps_no_copy_of_the_kernel():
    names = {Path(name).name for name in (*KERNEL_FILES, HOST_SOURCE, SCORE_SOURCE)}
    tracked = [
        p
        for p in FIRMWARE.rglob("*")
        if p.relative_to(FIRMWARE).parts[0] not in ("build", "generated")
    ]
    assert not [p for p in tracked if p.name in names]


def test_codegen_format_matches_the_kernel_header():
    header = (KERNEL / "edgevae_types.h").read_text()
    assert re.search(r"^#define EDGEVAE_TYPES_FORMAT (\d+)$", header, re.M).group(1) == str(FORMAT)


def test_cli_firmware_command(tmp_path, decoder):
    from typer.testing import CliRunner

    import edgevae.cli  # noqa: F401  (registers every command, edgevae.cli.firmware included)
    from edgevae.cli.common import app

    export = decoder.parent
    out = tmp_path / "gen"
    args = ["firmware", "--export-dir", str(export), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "per-channel" in result.output and "128 KB" in result.output
    assert "edgevae train --preset mcu" not in result.output  # this one fits 128 KB
    assert all((out / name).exists() for name in ("edgevae_weights.h", "edgevae_kernel.c"))
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["sha256"] == hashlib.sha256(decoder.read_bytes()).hexdigest()
    assert f"--export-dir {export}" in (out / "edgevae_weights.h").read_text()
    lines = result.output.splitlines()
    assert f"  {report['build_command']}" in lines and f"  {report['run_command']}" in lines

    weights_only = CliRunner().invoke(app, [*args, "--weights-only"])
    assert weights_only.exit_code == 0, weights_only.output
    assert f"kernel sources (packaged): {KERNEL}" in weights_only.output
    assert "--weights-only" in (out / "edgevae_weights.h").read_text()

    where = CliRunner().invoke(app, ["firmware", "--print-kernel-dir"])
    assert where.exit_code == 0 and where.output == f"{KERNEL}\n"

    help_text = CliRunner().invoke(app, ["firmware", "--help"]).output
    assert "edgevae firmware --export-dir export" in help_text

    bad = CliRunner().invoke(app, ["firmware", "--export-dir", str(tmp_path / "nope")])
    assert bad.exit_code != 0


def test_firmware_command_imports_neither_torch_nor_onnx(decoder, tmp_path):
    code = (
        "import json, sys\n"
        "import edgevae.firmware.deploy, edgevae.firmware.intref\n"
        "from edgevae.cli import main\n"
        f"rc = main(['firmware', '--export-dir', {str(decoder)!r}, '--out', {str(tmp_path)!r}])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'onnx', 'onnxscript', 'safetensors'))\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(done.stdout.splitlines()[-1]) == {"rc": 0, "heavy": []}
