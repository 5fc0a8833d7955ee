"""`edgevae firmware` in one call: C weights, the packaged kernel next to them, the build command.

The C kernel (edgevae_kernel.c/.h, edgevae_types.h) and the host decoder program
(host/edgevae_decode.c: z vectors on stdin -> grey levels on stdout) ship inside the package,
in kernel/ next to this module; the repository's firmware_demo/ builds from the same files.
`write_firmware` copies them next to the generated weights (unless told not to), so the folder
it writes builds a working decoder with one `cc` command and nothing else installed.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from ..errors import EdgeVAEError, UsageError
from ..fsio import read_regular, write_bytes
from .codegen import SOURCE, FirmwareReport, find_firmware_decoder, generate_firmware

KERNEL_FILES = ("edgevae_kernel.c", "edgevae_kernel.h", "edgevae_types.h")
HOST_SOURCE = "host/edgevae_decode.c"  # inside kernel/; copied flat, as edgevae_decode.c
PROGRAM = "edgevae_decode"
CFLAGS = ("-std=c99", "-O2")
SOURCE_LIMIT = 1 << 20  # bytes: the largest kernel source is ~20 KB


def kernel_dir() -> Path:
    """The folder of the packaged C kernel: KERNEL_FILES, and the host program in host/."""
    path = Path(__file__).resolve().parent / "kernel"
    missing = [name for name in (*KERNEL_FILES, HOST_SOURCE) if not (path / name).is_file()]
    if missing:
        raise EdgeVAEError(
            f"{path}: the packaged C kernel lacks {', '.join(missing)} (reinstall edgevae)"
        )
    return path


def _folder(path: Path) -> str:
    """A folder as text that cc and the shell read as a path, never as an option."""
    text = str(path)
    return "./" + text if text.startswith("-") else text


def program_path(out_dir: Path) -> str:
    """Where the build command puts the host decoder; always with a slash, so it runs as is."""
    return os.path.join(_folder(Path(out_dir)), PROGRAM)


def build_argv(out_dir: Path, kernel: Path | None = None) -> list[str]:
    """The `cc` command that builds the host decoder from `out_dir`.

    Without `kernel` every source is taken from `out_dir` (where write_firmware copies them);
    with it (e.g. kernel_dir()) only the weights come from `out_dir`.
    """
    out = _folder(Path(out_dir))
    src = out if kernel is None else _folder(Path(kernel))
    host = (
        os.path.join(out, "edgevae_decode.c") if kernel is None else os.path.join(src, HOST_SOURCE)
    )
    includes = ["-I", out] if kernel is None else ["-I", src, "-I", out]
    return [
        "cc",
        *CFLAGS,
        *includes,
        "-o",
        program_path(Path(out_dir)),
        host,
        os.path.join(src, "edgevae_kernel.c"),
        os.path.join(out, SOURCE),
    ]


def run_command(out_dir: Path, latent_dim: int) -> str:
    """A shell line that decodes the all-zero latent vector with the built host decoder."""
    zeros = " ".join(["0"] * latent_dim)
    return f"printf '{zeros}\\n' | {shlex.quote(program_path(Path(out_dir)))}"


def write_firmware(
    export_dir: Path, out_dir: Path, *, sources: bool = True, command: str
) -> FirmwareReport:
    """Write C weights for the export's firmware decoder into `out_dir`, and with `sources` the
    packaged kernel and host decoder next to them.

    `export_dir` is an export folder (its manifest names the decoder) or a QDQ .onnx file;
    `command` is stamped into the generated files. The report adds the kernel's folder, the
    `cc` command that builds the host decoder and a line that runs it.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} is a file, expected a folder", param="out_dir")
    kernel = kernel_dir()
    copies = {}
    if sources:
        for name in (*KERNEL_FILES, HOST_SOURCE):
            copies[Path(name).name] = read_regular(kernel / name, SOURCE_LIMIT)
    report = generate_firmware(find_firmware_decoder(export_dir), out_dir, command=command)
    for name, data in copies.items():
        write_bytes(out_dir / name, data)
        report.files.append(str(out_dir / name))
    report.kernel_dir = str(kernel)
    report.build_command = shlex.join(build_argv(out_dir, None if sources else kernel))
    report.run_command = run_command(out_dir, report.latent_dim)
    return report
