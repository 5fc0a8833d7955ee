"""`edgevae export` and `edgevae quantize`: fp32 ONNX from a run, int8 under a budget."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ..quant.recipes import RECIPES
from .common import app, check_dir_option, console, err_console, require

BUDGET = typer.Option(0.1, help="Largest NLL increase (nats/image) the int8 pair may cost.")
CALIB = typer.Option(5000, help="Training images for calibration (decoder: as many z again).")


def print_parity(results) -> None:
    table = Table(title="Validating ONNX fp32 against torch (max |difference|)")
    for col in ("model", "output", "inputs", "max abs diff", "tolerance", ""):
        table.add_column(col)
    for p in results:
        for out, diff in p.max_abs_diff.items():
            ok = "[green]ok[/]" if diff <= 1e-4 else "[red]FAIL[/]"
            table.add_row(p.name, out, str(p.n), f"{diff:.2e}", "1e-04", ok)
    console.print(table)


def print_quant(report) -> None:
    table = Table(title=f"Quantization candidates (budget {report.budget_nats:g} nats/image)")
    for col in (
        "recipe",
        "ΔNLL pair",
        "Δ enc",
        "Δ dec",
        "dec x@1",
        "dec x@256",
        "enc x@1",
        "enc x@256",
        "dec KB",
        "",
    ):
        table.add_column(col, justify="right" if col not in ("recipe", "") else "left")
    for c in report.candidates:
        if c.error:
            # Fix: escape, the error names files, and a path like "[/x]" broke the markup.
            table.add_row(c.recipe, *[""] * 8, f"[red]failed: {escape(c.error)}[/]")
            continue
        mark = (
            "[bold green]chosen[/]"
            if c.recipe == report.chosen
            else ("" if c.within_budget else "[yellow]over budget[/]")
        )
        s = c.speedup
        table.add_row(
            c.recipe,
            f"{c.nll_delta:+.3f}",
            f"{c.encoder_nll_delta:+.3f}",
            f"{c.decoder_nll_delta:+.3f}",
            f"{s['decoder@1']:.2f}",
            f"{s['decoder@256']:.2f}",
            f"{s['encoder@1']:.2f}",
            f"{s['encoder@256']:.2f}",
            f"{c.bytes['decoder'] / 1024:.0f}",
            mark,
        )
    console.print(table)
    console.print(
        f"chosen: [bold]{report.chosen}[/] ({RECIPES[report.chosen].description}); "
        f"firmware decoder: {report.firmware_decoder} "
        f"(ΔNLL {report.firmware_nll_delta:+.3f} nats with the fp32 encoder); "
        f"CPU: {report.cpu['model']} [{report.cpu['kind']}]"
        + (" [yellow](forced over budget)[/]" if report.forced else ""),
        highlight=False,
    )


def _quantize_with_output(export_dir: Path, data, **options) -> None:
    from ..quant.pipeline import quantize_dir
    from ..runtime import manifest
    from .progress import make_progress

    # Fix: a missing or broken export dir was reported under an empty "quantizing" bar (two
    # lines on stderr); check the manifest before the bar starts.
    manifest.read(export_dir)
    with make_progress(err_console) as bar:
        task = bar.add_task("quantizing", total=None, info="")

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        report = quantize_dir(export_dir, data, progress=progress, **options)
    print_quant(report)


def export_and_quantize_with_output(run_dir: Path, export_dir: Path, **options) -> None:
    from ..training.export import export_run

    results, _ = export_run(run_dir, export_dir)
    print_parity(results)
    _quantize_with_output(export_dir, None, **options)
    console.print(  # Fix: markup=False, as the path is not markup (see cli_runtime._done)
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
    from ..training.export import export_run

    require(budget_nats > 0, f"--budget-nats must be > 0, got {budget_nats}")
    require(calib >= 1, f"--calib must be >= 1, got {calib}")
    check_dir_option(export_dir, "--export-dir")
    results, _ = export_run(run_dir, export_dir)
    print_parity(results)
    if quantize:
        _quantize_with_output(export_dir, None, budget_nats=budget_nats, calib=calib)


@app.command(
    epilog=(
        "Examples:\n\n  edgevae quantize                      # measure this CPU's candidates\n\n"
        "  edgevae quantize --recipe static-pc --budget-nats 0.2\n\n"
        "  edgevae quantize --also int4,fp16     # report opt-in formats too\n\n"
        f"Recipes: {', '.join(RECIPES)}"
    )
)
def quantize(
    export_dir: Path = typer.Option(Path("export"), help="Export dir with the fp32 models."),
    recipe: str = typer.Option("auto", help="auto (measure and pick) or a recipe name."),
    budget_nats: float = BUDGET,
    calib: int = CALIB,
    data: str = typer.Option(None, help="Calibration/held-out data (default: the run's data)."),
    seed: int = typer.Option(0, help="Seed for calibration sampling."),
    force: bool = typer.Option(False, help="Keep the closest recipe even if over budget."),
    also: str = typer.Option("", help="Extra recipes to measure, e.g. int4,fp16."),
) -> None:
    """Quantize the exported models to int8, choosing the fastest recipe within the budget."""
    extra = [a.strip() for a in also.split(",") if a.strip()]
    for name in extra:
        require(name in RECIPES, f"--also: unknown recipe {name!r} ({', '.join(RECIPES)})")
    require(
        recipe == "auto" or recipe in RECIPES,
        f"--recipe must be auto or one of {', '.join(RECIPES)}",
    )
    require(budget_nats > 0, f"--budget-nats must be > 0, got {budget_nats}")
    require(calib >= 1, f"--calib must be >= 1, got {calib}")
    _quantize_with_output(
        export_dir,
        data,
        recipe=recipe,
        budget_nats=budget_nats,
        calib=calib,
        seed=seed,
        force=force,
        extra_candidates=extra,
    )
