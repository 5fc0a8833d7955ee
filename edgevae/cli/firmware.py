"""`edgevae firmware`: C weights and the C kernel for the int8 microcontroller decoder (and,
with --score, the int8 encoder and the anomaly score)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from ..fsio import write_json
from ..runtime.score import BOARD_SCORES
from .common import app, check_output_path, console

if TYPE_CHECKING:
    from ..firmware.codegen import FirmwareReport

DEFAULT_OUT = Path("firmware")


class WeightBits(str, Enum):
    eight = "8"
    four = "4"


ScoreKind = Enum("ScoreKind", {k: k for k in BOARD_SCORES}, type=str)  # type: ignore[misc]


_KIND_FROM = {
    "asked": "as asked",
    "threshold": "the kind of the manifest's threshold",
    "default": "the default: the manifest holds no threshold of a kind the board computes",
}


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def _plain(text: str) -> None:
    """One line exactly as given: no markup, no highlighting, never wrapped (copy-pastable)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _layers_table(source: str, rows: list[dict], out_dir: Path) -> Table:
    layers = Table(title=f"{source} -> {out_dir}/", title_justify="left")
    for column in ("layer", "shape", "weights", "scales", "activation", "input"):
        layers.add_column(column)
    for item in rows:
        layers.add_row(
            item["name"],
            f"{item['in']} -> {item['out']}",
            f"{item['weight_bits']}-bit",
            item["scale"],
            item["activation"],
            item["input"],
        )
    return layers


def _sizes_table(report: FirmwareReport) -> Table:
    sizes = Table(show_header=False, title="memory", title_justify="left")
    sizes.add_column("what")
    sizes.add_column("bytes", justify="right")
    sizes.add_row(
        "flash: model (weights, biases, scales, tables)",
        f"{report.flash_bytes} ({_kib(report.flash_bytes)})",
    )
    sizes.add_row(
        "RAM: activation buffers (+ ~200 B stack)", f"{report.ram_bytes} ({_kib(report.ram_bytes)})"
    )
    sizes.add_row("MACs per image", str(report.macs))
    if report.score is not None:
        sizes.add_row("MACs per score (encoder + decoder)", str(report.score["macs"]))
    fits = ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in report.fits.items())
    sizes.add_row(f"fits flash (model + {report.kernel_budget // 1024} KiB kernel)", fits)
    return sizes


def _print_score(report: FirmwareReport) -> None:
    """The score build's kind and threshold, and its host program's build and run lines."""
    score = report.score
    kind = score["kind"]
    _plain(
        f"score: {kind} (EDGEVAE_SCORE_KIND_EXCESS {int(kind == 'excess')}; "
        f"{_KIND_FROM[score['kind_from']]})"
    )
    if score["threshold_nats"] is not None:
        _plain(
            f"EDGEVAE_THRESHOLD_NATS = {score['threshold_nats']!r} (the manifest's, score {kind})"
        )
    else:
        _plain(f"no EDGEVAE_THRESHOLD_NATS: {score['threshold_note']}")
        if score["kind_from"] != "threshold":
            _plain(f"  `edgevae threshold --score {kind}` stores one; then run this command again")
    _plain("and the host score program (raw images on stdin), scoring one all-black image:")
    _plain(f"  {report.score_build_command}")
    _plain(f"  {report.score_run_command}")


@app.command(
    epilog=(
        "Example (the folder then builds a stdin -> stdout host decoder with one cc line):\n\n"
        "  edgevae firmware --export-dir export --out firmware\n\n"
        "  cc -std=c99 -O2 -I firmware -o firmware/edgevae_decode firmware/edgevae_decode.c "
        "firmware/edgevae_kernel.c firmware/edgevae_weights.c\n\n"
        "With the int8 encoder and the anomaly score (edgevae_score), and its host program "
        "(raw images on stdin, one score per line):\n\n"
        "  edgevae threshold --export-dir export\n\n"
        "  edgevae firmware --export-dir export --out firmware --score\n\n"
        "The board computes the score kind of the manifest's threshold (`edgevae threshold "
        "--score excess` or `--score elbo` stores one for the board too), or excess, the "
        "default, when there is none; --score-kind chooses, and a kind other than the stored "
        "threshold's is refused.\n\n"
        "4-bit weights (half the flash; after `edgevae train --resume --qat-bits 4`):\n\n"
        "  edgevae firmware --export-dir export --out firmware --weight-bits 4\n\n"
        "In a clone, for firmware_demo/'s QEMU targets:\n\n"
        "  edgevae firmware --weights-only --out firmware_demo/generated\n\n"
        "  make -C firmware_demo run-host run-m4"
    )
)
def firmware(
    export_dir: Path = typer.Option(
        Path("export"), help="Export dir (its manifest's firmware_decoder) or a QDQ .onnx file."
    ),
    out_dir: Path = typer.Option(
        DEFAULT_OUT,
        "--out",
        file_okay=False,
        help="Folder for edgevae_weights.h/.c and (unless --weights-only) the kernel sources.",
    ),
    weights_only: bool = typer.Option(
        False,
        "--weights-only",
        help="Write only the weights; the printed cc line takes the kernel from the package.",
    ),
    score: bool = typer.Option(
        False,
        "--score",
        help="Also the int8 encoder (encoder.int8.static.onnx) and the anomaly score "
        "(edgevae_encode, edgevae_score), the manifest's threshold as EDGEVAE_THRESHOLD_NATS, "
        "and the host score program.",
    ),
    score_kind: ScoreKind = typer.Option(
        None,
        help="The score the board computes (implies --score): excess (elbo minus the least "
        "-log p(x|z) any decoder reaches; the runtime's default) or elbo. Default: the kind of "
        "the manifest's threshold, else excess. A kind other than that of the manifest's "
        "firmware threshold is refused.",
        show_default=False,
    ),
    weight_bits: WeightBits = typer.Option(
        WeightBits.eight,
        help="4: the 4-bit decoder (decoder.int4.static.onnx, written by `edgevae quantize`): "
        "every layer but the first packs two weights per byte. Accurate after quantization-"
        "aware fine-tuning (`edgevae train --resume --qat-bits 4`).",
    ),
    print_kernel_dir: bool = typer.Option(
        False, "--print-kernel-dir", help="Print the folder of the packaged C kernel and exit."
    ),
    json_path: Path = typer.Option(
        None, "--json", dir_okay=False, help="Also write the report as JSON."
    ),
) -> None:
    """Write C weights (edgevae_weights.h/.c) and the C kernel for the int8 decoder.

    Refuses nodes the kernel cannot run; stamps version, command and model sha256. Prints the
    cc command that builds a host decoder (z on stdin, pixels on stdout; a conditional
    decoder reads the label first) from the folder; with --score also the encoder, the
    anomaly score and the host score program's cc command (unconditional models only).
    """
    from ..firmware.deploy import kernel_dir, write_firmware

    if print_kernel_dir:
        _plain(str(kernel_dir()))
        return
    if json_path is not None:
        check_output_path(json_path, "--json")
    command = f"edgevae firmware --export-dir {export_dir} --out {out_dir}"
    command += " --weights-only" if weights_only else ""
    score = score or score_kind is not None
    command += " --score" if score else ""
    command += f" --score-kind {score_kind.value}" if score_kind is not None else ""
    command += " --weight-bits 4" if weight_bits is WeightBits.four else ""
    report = write_firmware(
        export_dir,
        out_dir,
        sources=not weights_only,
        command=command,
        score=score,
        weight_bits=int(weight_bits.value),
        score_kind=None if score_kind is None else score_kind.value,
    )
    if json_path is not None:
        write_json(json_path, report.to_dict())

    _render(report, out_dir, weights_only)


def _render(report: FirmwareReport, out_dir: Path, weights_only: bool) -> None:
    """The layer tables, sizes and fit, notes, and the build and run lines."""
    console.print(_layers_table(report.source, report.layers, out_dir))
    if report.score is not None:
        console.print(
            _layers_table(report.score["encoder"], report.score["encoder_layers"], out_dir)
        )
    console.print(_sizes_table(report))
    console.print(report.suggestion)
    if not report.fits["256 KB" if report.score is not None else "128 KB"]:
        console.print("  e.g. edgevae train --preset mcu, or a smaller --hidden")
        if report.weight_bits == 8:
            console.print("  or 4-bit weights: edgevae firmware --weight-bits 4")
    if report.classes:
        _plain(
            f"conditional decoder: edgevae_decode_label(z, label, pixels), labels "
            f"0..{len(report.classes) - 1} ({', '.join(report.classes)})"
        )
    for note in report.notes:
        console.print(f"note: {note}")
    if weights_only:
        _plain(f"kernel sources (packaged): {report.kernel_dir}")
    what = "the label and latent vector 0" if report.classes else "one latent vector"
    _plain(f"next, build the host decoder and decode {what}:")
    _plain(f"  {report.build_command}")
    _plain(f"  {report.run_command}")
    if report.score is not None:
        _print_score(report)
