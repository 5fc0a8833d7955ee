"""`edgevae firmware` in one call: C weights, the packaged kernel next to them, the build command.

The C kernel (edgevae_kernel.c/.h, edgevae_types.h) and the host programs (host/edgevae_decode.c:
z vectors on stdin -> grey levels on stdout; host/edgevae_score.c: raw images on stdin -> one
anomaly score per line) ship inside the package, in kernel/ next to this module; the
repository's firmware_demo/ builds from the same files. `write_firmware` copies them next to
the generated weights (unless told not to), so the folder it writes builds a working program
with one `cc` command and nothing else installed.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from ..errors import EdgeVAEError, UsageError
from ..fsio import read_regular, write_bytes
from .codegen import SOURCE, FirmwareReport, find_firmware_decoder, generate_firmware
from .score import check_kind, load_score_model, manifest_threshold
from .scoregen import generate_score_firmware

KERNEL_FILES = ("edgevae_kernel.c", "edgevae_kernel.h", "edgevae_types.h")
HOST_SOURCE = "host/edgevae_decode.c"  # inside kernel/; copied flat, as edgevae_decode.c
SCORE_SOURCE = "host/edgevae_score.c"  # the score program, for weights with an encoder
PROGRAM = "edgevae_decode"
SCORE_PROGRAM = "edgevae_score"
CFLAGS = ("-std=c99", "-O2")
SOURCE_LIMIT = 1 << 20  # bytes: the largest kernel source is ~20 KB


def kernel_dir() -> Path:
    """The folder of the packaged C kernel: KERNEL_FILES, and the host program in host/."""
    path = Path(__file__).resolve().parent / "kernel"
    needed = (*KERNEL_FILES, HOST_SOURCE, SCORE_SOURCE)
    missing = [name for name in needed if not (path / name).is_file()]
    if missing:
        raise EdgeVAEError(
            f"{path}: the packaged C kernel lacks {', '.join(missing)} (reinstall edgevae)"
        )
    return path


def _folder(path: Path) -> str:
    """A folder as text that cc and the shell read as a path, never as an option."""
    text = str(path)
    return "./" + text if text.startswith("-") else text


def program_path(out_dir: Path, program: str = PROGRAM) -> str:
    """Where the build command puts a host program; always with a slash, so it runs as is."""
    return os.path.join(_folder(Path(out_dir)), program)


def build_argv(out_dir: Path, kernel: Path | None = None, program: str = PROGRAM) -> list[str]:
    """The `cc` command that builds a host program (edgevae_decode or edgevae_score) from
    `out_dir`.

    Without `kernel` every source is taken from `out_dir` (where write_firmware copies them);
    with it (e.g. kernel_dir()) only the weights come from `out_dir`.
    """
    out = _folder(Path(out_dir))
    src = out if kernel is None else _folder(Path(kernel))
    name = f"{program}.c"
    host = os.path.join(out, name) if kernel is None else os.path.join(src, "host", name)
    includes = ["-I", out] if kernel is None else ["-I", src, "-I", out]
    return [
        "cc",
        *CFLAGS,
        *includes,
        "-o",
        program_path(Path(out_dir), program),
        host,
        os.path.join(src, "edgevae_kernel.c"),
        os.path.join(out, SOURCE),
    ]


def run_command(out_dir: Path, latent_dim: int, conditional: bool = False) -> str:
    """A shell line that decodes the all-zero latent vector with the built host decoder
    (for a conditional decoder with label 0, the line's first number)."""
    zeros = " ".join(["0"] * (latent_dim + conditional))
    return f"printf '{zeros}\\n' | {shlex.quote(program_path(Path(out_dir)))}"


def score_run_command(out_dir: Path, image_dim: int) -> str:
    """A shell line that scores one all-black image with the built host score program."""
    program = shlex.quote(program_path(Path(out_dir), SCORE_PROGRAM))
    return f"head -c {image_dim} /dev/zero | {program}"


def _score_model(export_dir: Path, weight_bits: int, score_kind: str | None):
    """The score model of `score_kind` (None: the manifest threshold's kind, else excess) and
    where its kind came from: "asked", "threshold" or "default". Refuses a kind other than
    that of the manifest's firmware threshold."""
    from ..runtime import manifest

    man = manifest.read(export_dir)
    value, stored, _ = manifest_threshold(man)
    if score_kind is not None and value is not None and stored != score_kind:
        raise UsageError(
            f"{export_dir}/manifest.json holds a firmware threshold for the {stored} score, "
            f"not {score_kind}: calibrate a threshold for the {score_kind} score first, or "
            f"generate the {stored} score",
            param="score_kind",
        )
    model = load_score_model(export_dir, weight_bits, score_kind, check_threshold=True)
    entry = man.get("threshold")
    from_threshold = isinstance(entry, dict) and entry.get("score") == model.kind
    source = "asked" if score_kind is not None else "threshold" if from_threshold else "default"
    return model, source


def _check_c_size(export_dir: Path, score: bool, weight_bits: int) -> None:
    """Refuse before any work when the C text of the models (a few characters per weight
    byte, built in memory) would not fit in the memory limit; models the generator will
    refuse anyway are left to it."""
    from .. import limits
    from .score import find_firmware_encoder

    try:
        files = [find_firmware_decoder(export_dir, weight_bits)]
        if score:
            files.append(find_firmware_encoder(export_dir))
    except EdgeVAEError:
        return
    total = sum(p.stat().st_size for p in files)
    limits.check(24 * total, f"C source for {total:,} bytes of int8 models", "export_dir")


def write_firmware(
    export_dir: str | Path,
    out_dir: str | Path,
    *,
    sources: bool = True,
    command: str,
    score: bool = False,
    weight_bits: int = 8,
    score_kind: str | None = None,
) -> FirmwareReport:
    """Write C weights for the export's firmware decoder into `out_dir`, and with `sources` the
    packaged kernel and host decoder next to them.

    `export_dir` is an export folder (its manifest names the decoder) or a QDQ .onnx file;
    `command` is stamped into the generated files. With `score`, the weights also hold the
    export's int8 encoder (encoder.int8.static.onnx) and the anomaly score's tables, with the
    manifest's firmware threshold, and the host score program is copied too (an export folder
    is needed then). `score_kind` is the score the kernel computes, "excess" or "elbo"; None
    takes the kind of the manifest's threshold, else excess (the runtime's default). Asking
    for one kind when the manifest holds a firmware threshold of the other is a UsageError:
    the board would otherwise lose its threshold. `weight_bits` 4 deploys the int4 recipe's
    decoder (decoder.int4.static.onnx) with its 4-bit layers packed two weights per byte. The
    report adds the kernel's folder, the `cc` command that builds each host program and a
    line that runs it.
    """
    export_dir, out_dir = Path(export_dir), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} is a file, expected a folder", param="out_dir")
    if score and export_dir.is_file():
        raise UsageError(
            f"{export_dir} is a file; the score needs the export folder (encoder, decoder and "
            "manifest)",
            param="export_dir",
        )
    if weight_bits not in (8, 4):
        raise UsageError(f"must be 8 or 4, got {weight_bits}", param="weight_bits")
    if score_kind is not None:
        try:
            check_kind(score_kind)
        except UsageError as exc:
            raise UsageError(exc.detail, param="score_kind") from None
        if not score:
            raise UsageError(
                "chooses the anomaly score's kind, and the score is not being generated",
                param="score_kind",
            )
    _check_c_size(export_dir, score, weight_bits)
    kernel = kernel_dir()
    copies = {}
    if sources:
        for name in (*KERNEL_FILES, HOST_SOURCE, *((SCORE_SOURCE,) if score else ())):
            copies[Path(name).name] = read_regular(kernel / name, SOURCE_LIMIT)
    if score:
        model, kind_from = _score_model(export_dir, weight_bits, score_kind)
        report = generate_score_firmware(model, out_dir, command=command)
        report.score["kind_from"] = kind_from
    else:
        decoder = find_firmware_decoder(export_dir, weight_bits)
        report = generate_firmware(decoder, out_dir, command=command, weight_bits=weight_bits)
    for name, data in copies.items():
        write_bytes(out_dir / name, data)
        report.files.append(str(out_dir / name))
    report.kernel_dir = str(kernel)
    packaged = None if sources else kernel
    report.build_command = shlex.join(build_argv(out_dir, packaged))
    report.run_command = run_command(out_dir, report.latent_dim, bool(report.classes))
    if score:
        report.score_build_command = shlex.join(build_argv(out_dir, packaged, SCORE_PROGRAM))
        dim = report.image_shape[0] * report.image_shape[1]
        report.score_run_command = score_run_command(out_dir, dim)
    return report
