"""`edgevae crosscheck run` and `edgevae crosscheck compare`: do the exported models give the
same numbers on another CPU (a Raspberry Pi, an emulated Cortex-A72/A76 in `make test-arm`)?

Thin wrappers: parse, call the library (`crosscheck.run`, `crosscheck.report`), render. The last
line either command prints is its summary; exit status 0 on PASS, 1 on FAIL, 2 on a usage or
input error.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import EdgeVAEError
from ..fsio import write_json
from .common import app, check_output_path, guarded

crosscheck_app = typer.Typer(
    name="crosscheck",
    help=(
        "Run the exported models on fixed inputs here and on another CPU, and compare: "
        "static int8 bit-exact, fp32 within 1e-6, dynamic int8 reported, the sample PNG "
        "identical."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(crosscheck_app, name="crosscheck")


def _failing(command: str, exc: EdgeVAEError) -> None:
    """The summary line of a command that stopped on an error (the error itself goes to stderr)."""
    typer.echo(f"crosscheck {command}: FAIL ({exc})")


@crosscheck_app.command(
    "run",
    epilog=(
        "Examples (on the dev machine, on the board, then compare the two files):\n\n"
        "  edgevae crosscheck run --export-dir export --out ref.npz\n\n"
        "  edgevae crosscheck run --export-dir export --out pi5.npz --label pi5\n\n"
        "  edgevae crosscheck compare ref.npz pi5.npz"
    ),
)
@guarded
def run_command(
    export_dir: Path = typer.Option(
        Path("export"), help="An export dir made by `edgevae train`/`export`."
    ),
    out: Path = typer.Option(..., help="Results file (.npz) to write."),
    json_path: Path = typer.Option(
        None, "--json", help="JSON summary of the run (default: OUT with .json)."
    ),
    seed: int = typer.Option(0, min=0, help="Seed of the generated inputs."),
    label: str = typer.Option(None, help="Name of this target in reports (default: machine)."),
    inputs: Path = typer.Option(
        None, help="Feed the inputs of this results file instead of generated ones."
    ),
    no_sample: bool = typer.Option(
        False, "--no-sample", help="Skip the `edgevae sample --n 16 --seed 0` PNG."
    ),
    sample_out: Path = typer.Option(
        None, help="Where the sample PNG goes (default: OUT with .sample.png)."
    ),
) -> None:
    """Run every model of an export dir on fixed inputs and save the outputs (.npz + .json)."""
    from ..crosscheck.compare import KIND_ORDER
    from ..crosscheck.run import run_and_save

    try:
        for path, option in ((out, "--out"), (json_path, "--json"), (sample_out, "--sample-out")):
            if path is not None:
                check_output_path(path, option)
        results = run_and_save(
            export_dir,
            out,
            json_path=json_path,
            seed=seed,
            label=label,
            inputs_from=inputs,
            sample=not no_sample,
            sample_png=sample_out,
        )
    except EdgeVAEError as exc:
        _failing("run", exc)
        raise
    kinds = [m["kind"] for m in results.meta["models"].values()]
    counts = ", ".join(f"{kinds.count(k)} {k}" for k in KIND_ORDER if k in kinds)
    sample = results.meta["sample"]
    typer.echo(f"sample: {sample['status']}: {sample['message']}")
    typer.echo(
        f"crosscheck run [{results.label}]: {len(results.outputs)} outputs from "
        f"{len(kinds)} models ({counts}) in {results.meta['seconds']:.1f} s -> {out}"
    )


@crosscheck_app.command(
    "compare",
    epilog=(
        "Examples:\n\n"
        "  edgevae crosscheck compare ref.npz pi4.npz pi5.npz\n\n"
        "  edgevae crosscheck compare ref.npz pi5.npz --json report.json --fp32-tol 1e-5"
    ),
)
@guarded
def compare_command(
    reference: Path = typer.Argument(..., help="Results file of the reference run."),
    candidates: list[Path] = typer.Argument(..., help="Results files to check against it."),
    json_path: Path = typer.Option(None, "--json", help="Also write the report as JSON."),
    fp32_tol: float = typer.Option(
        None, min=0.0, help="Max abs diff allowed for fp32 models (default 1e-6)."
    ),
    dynamic_tol: float = typer.Option(
        None, min=0.0, help="Fail dynamic int8 above this max abs diff (default: report only)."
    ),
) -> None:
    """Compare candidate runs against a reference run; the last line is the summary."""
    from ..crosscheck.compare import DYNAMIC, FP32
    from ..crosscheck.report import compare_files, render_report, report_dict, summary_line

    tolerances = {
        kind: value
        for kind, value in ((FP32, fp32_tol), (DYNAMIC, dynamic_tol))
        if value is not None
    }
    try:
        if json_path is not None:
            check_output_path(json_path, "--json")
        reports = compare_files(reference, candidates, tolerances)
    except EdgeVAEError as exc:
        _failing("compare", exc)
        raise
    for report in reports:
        typer.echo("\n".join(render_report(report)))
    if json_path is not None:
        write_json(json_path, report_dict(reports, tolerances))
    typer.echo(summary_line(reports, tolerances=tolerances))
    if not all(r.passed for r in reports):
        raise typer.Exit(1)
