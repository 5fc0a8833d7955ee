"""`edgevae export` and `edgevae quantize`: fp32 ONNX from a run, int8 under a budget."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from .. import api
from ..errors import EdgeVAEError
from ..quant.recipes import RECIPES
from .common import app, check_dir_option, console, err_console

RecipeName = Enum("RecipeName", {n: n for n in ("auto", *RECIPES)}, type=str)  # type: ignore[misc]
BUDGET = typer.Option(0.1, help="Largest NLL increase (nats/image) the int8 pair may cost.")
CALIB = typer.Option(
    5000, min=1, max=1_000_000, help="Training images for calibration (decoder: as many z again)."
)


def print_parity(exported: api.Exported) -> None:
    table = Table(title="Validating ONNX fp32 against torch (max |difference|)")
    for col in ("model", "output", "max abs diff", "tolerance", ""):
        table.add_column(col)
    for name, diffs in exported.parity.items():
        for out, diff in diffs.items():
            ok = "[green]ok[/]" if diff <= 1e-4 else "[red]FAIL[/]"
            table.add_row(name, out, f"{diff:.2e}", "1e-04", ok)
    console.print(table)


def _x(c, key: str) -> str:
    """A speedup cell: '2.31' or, with the format's ceiling, '2.31 (68%)'."""
    v = c.speedup.get(key)
    if v is None:
        return "-"
    share = c.share.get(key)
    return f"{v:.2f}" + (f" ({share:.0%})" if share is not None and key.endswith("@256") else "")


def _status(c, report) -> str:
    if c.error:  # errors name files: escaped, a path like "[/x]" is not markup
        return f"[red]failed: {escape(c.error)}[/]"
    if c.label == report.chosen_label:
        return "[bold green]chosen[/]" + (" [yellow](forced)[/]" if report.forced else "")
    if c.dropped:
        return f"[yellow]{escape(c.dropped)}[/]" if not c.within_budget else escape(c.dropped)
    return "" if c.within_budget else "[yellow]over budget[/]"


def print_quant(report) -> None:
    ceil = report.ceiling.get("ceiling") or {}
    title = f"Quantization candidates (budget {report.budget_nats:g} nats/image)"
    table = Table(title=title)
    columns = ("recipe", "ΔNLL pair", "± se", "images", "Δ enc", "Δ dec", "dec x@1")
    for col in (*columns, "dec x@256", "enc x@1", "enc x@256", "dec KB", ""):
        table.add_column(col, justify="right" if col not in ("recipe", "") else "left")
    for c in report.candidates:
        nums = ("-",) * 5
        if c.error is None:
            nums = (
                f"{c.nll_delta:+.3f}",
                f"{c.nll_delta_se:.3f}",
                str(c.nll_images),
                "-"
                if c.encoder_nll_delta != c.encoder_nll_delta
                else f"{c.encoder_nll_delta:+.3f}",
                "-"
                if c.decoder_nll_delta != c.decoder_nll_delta
                else f"{c.decoder_nll_delta:+.3f}",
            )
        keys = ("decoder@1", "decoder@256", "encoder@1", "encoder@256")
        kb = f"{c.bytes['decoder'] / 1024:.0f}" if "decoder" in c.bytes else "-"
        table.add_row(escape(c.label), *nums, *(_x(c, k) for k in keys), kb, _status(c, report))
    console.print(table)
    shares = ", ".join(f"{f} {v:.2f}x" for f, v in ceil.items() if v)
    chosen = report.chosen_candidate
    console.print(
        f"chosen: [bold]{escape(chosen.label)}[/] ({RECIPES[report.chosen].description}); "
        f"int8 ceiling on this CPU (int8 GEMM GMAC/s over fp32's): {shares or 'not measured'}; "
        f"x@256 (n%) = speedup and its share of the recipe's ceiling; "
        f"firmware pair: {report.firmware_encoder} + {report.firmware_decoder} "
        f"(ΔNLL {report.firmware_pair_nll_delta:+.3f} nats; decoder alone "
        f"{report.firmware_nll_delta:+.3f}; with the 4-bit {report.firmware_decoder_int4} "
        f"{report.firmware_int4_pair_nll_delta:+.3f}); CPU: {escape(report.cpu['model'])} "
        f"[{report.cpu['kind']}]; {report.seconds:.1f} s",
        highlight=False,
    )
    if report.mixed:
        print_mixed(report.mixed)
    if report.explain:
        print_explain(report.explain, report.chosen)


def print_explain(items, recipe: str) -> None:
    """The nats each quantization costs alone (weights and activations of each node)."""
    table = Table(title=f"Cost of each quantized node alone ({recipe}; nats/image, paired IWAE)")
    for col in ("model", "node", "part", "tensor", "ΔNLL", "± se", "images"):
        table.add_column(col, justify="right" if col in ("ΔNLL", "± se", "images") else "left")
    for it in sorted(items, key=lambda i: -i.nll_delta):
        table.add_row(
            it.role, escape(it.node), it.part, escape(it.tensor),
            f"{it.nll_delta:+.4f}", f"{it.nll_delta_se:.4f}", str(it.images),
        )  # fmt: skip
    console.print(table)


def print_mixed(mixed: dict) -> None:
    """What mixed precision kept in float, and what that costs against all-int8."""
    if "label" not in mixed:
        console.print(f"[yellow]{escape(mixed.get('note', ''))}[/]", highlight=False)
        return
    kb = lambda b: sum(b.values()) / 1024  # noqa: E731
    s, s0 = mixed["speedup"], mixed["speedup_all_int8"]
    console.print(
        f"mixed precision: {escape(mixed['label'])}: ΔNLL {mixed['nll_delta']:+.3f} nats "
        f"(all int8 {mixed['nll_delta_all_int8']:+.3f}); {kb(mixed['bytes']):.0f} KB "
        f"(all int8 {kb(mixed['bytes_all_int8']):.0f} KB); decoder speedup at 256 "
        f"{s.get('decoder@256', 0):.2f}x (all int8 {s0.get('decoder@256', 0):.2f}x), at 1 "
        f"{s.get('decoder@1', 0):.2f}x (all int8 {s0.get('decoder@1', 0):.2f}x)",
        highlight=False,
    )


def quantize_with_output(export_dir: Path, **options) -> None:
    """api.quantize under a progress bar, then the candidates table. The bar starts with the
    first progress report, so that a bad option or export is one error line, not a bar."""
    from ..quant.search import BudgetError
    from .progress import stage_progress

    with stage_progress(err_console) as progress:
        try:
            report = api.quantize(export_dir, progress=progress, **options)
        except BudgetError as exc:
            raise EdgeVAEError(
                f"{exc} (raise --budget-nats, or pass --force to accept it)"
            ) from None
    print_quant(report)


def export_and_quantize(run_dir: Path, export_dir: Path, **options) -> None:
    """What `edgevae train` ends with: export, parity table, quantize, the next step."""
    print_parity(api.export(run_dir, export_dir))
    quantize_with_output(export_dir, run_dir=run_dir, **options)
    console.print(
        f"exported to {export_dir}/ (try: edgevae sample --n 16 --out grid.png)", markup=False
    )


@app.command(epilog="Example:\n\n  edgevae export --run-dir runs/mnist --export-dir export")
def export(
    run_dir: Path = typer.Option(Path("runs/default"), help="A run dir made by `edgevae train`."),
    export_dir: Path = typer.Option(Path("export"), help="Where the ONNX models go."),
    quantize: bool = typer.Option(True, help="Also quantize to int8 (see `edgevae quantize`)."),
    budget_nats: float = BUDGET,
    calib: int = CALIB,
) -> None:
    """Export encoder and decoder to ONNX fp32 (parity-checked), then quantize to int8."""
    from ..quant.search import check_options

    check_dir_option(export_dir, "--export-dir")
    if quantize:
        check_options("auto", budget_nats, calib, [])
    print_parity(api.export(run_dir, export_dir))
    if quantize:
        quantize_with_output(export_dir, run_dir=run_dir, budget_nats=budget_nats, calib=calib)


@app.command(
    epilog=(
        "Examples:\n\n  edgevae quantize                      # measure this CPU's candidates\n\n"
        "  edgevae quantize --recipe static-pc --budget-nats 0.2\n\n"
        "  edgevae quantize --explain            # which node costs the nats\n\n"
        "  edgevae quantize --also int4,fp16     # report opt-in formats too"
    )
)
def quantize(
    export_dir: Path = typer.Option(Path("export"), help="Export dir with the fp32 models."),
    recipe: RecipeName = typer.Option(
        RecipeName("auto"), help="auto (measure this CPU's candidates and pick) or one recipe."
    ),
    budget_nats: float = BUDGET,
    calib: int = CALIB,
    data: str = typer.Option(None, help="Calibration/held-out data (default: the run's data)."),
    run_dir: Path = typer.Option(
        None, help="The run the export came from (default: the one the manifest names)."
    ),
    seed: int = typer.Option(0, min=0, help="Seed for calibration sampling."),
    force: bool = typer.Option(False, help="Keep the closest recipe even if over budget."),
    also: str = typer.Option("", help="Extra recipes to measure, e.g. int4,fp16."),
    explain: bool = typer.Option(
        False, help="Also measure the nats each quantized node costs alone (a table)."
    ),
) -> None:
    """Quantize the exported models to int8, choosing the fastest recipe within the budget."""
    quantize_with_output(
        export_dir,
        recipe=recipe.value,
        budget_nats=budget_nats,
        calib=calib,
        data=data,
        run_dir=run_dir,
        seed=seed,
        force=force,
        also=[a.strip() for a in also.split(",") if a.strip()],
        explain=explain,
    )
