"""`edgevae firmware`: C weights for the microcontroller kernel in firmware_demo/."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..fsio import write_json
from .common import app, check_output_path, console

DEFAULT_OUT = Path("firmware_demo/generated")


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


@app.command(
    epilog=(
        "Example:\n\n  edgevae firmware --export-dir export --out firmware_demo/generated\n\n"
        "  make -C firmware_demo run-host run-m4"
    )
)
def firmware(
    export_dir: Path = typer.Option(
        Path("export"), help="Export dir (its manifest's firmware_decoder) or a QDQ .onnx file."
    ),
    out: Path = typer.Option(DEFAULT_OUT, help="Where edgevae_weights.h/.c are written."),
    json_path: Path = typer.Option(None, "--json", help="Also write the report as JSON."),
) -> None:
    """Write C weights (edgevae_weights.h/.c) for the int8 microcontroller decoder kernel.

    Refuses nodes the kernel cannot run; stamps version, command and model sha256.
    """
    from ..firmware.codegen import find_firmware_decoder, generate_firmware

    if json_path is not None:
        check_output_path(json_path, "--json")
    model_path = find_firmware_decoder(export_dir)
    command = f"edgevae firmware --export-dir {export_dir} --out {out}"
    report = generate_firmware(model_path, out, command=command)
    if json_path is not None:
        write_json(json_path, report.to_dict())

    layers = Table(title=f"{report.source} -> {out}/", title_justify="left")
    for column in ("layer", "shape", "scales", "activation", "input"):
        layers.add_column(column)
    for item in report.layers:
        layers.add_row(
            item["name"],
            f"{item['in']} -> {item['out']}",
            item["scale"],
            item["activation"],
            item["input"],
        )
    console.print(layers)

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
    fits = ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in report.fits.items())
    sizes.add_row("fits flash (model + 4 KiB kernel)", fits)
    console.print(sizes)
    console.print(report.suggestion)
    for note in report.notes:
        console.print(f"note: {note}")
    weights = "" if out == DEFAULT_OUT else f" WEIGHTS={out.resolve()}"
    console.print(f"next: make -C firmware_demo{weights} run-host")
