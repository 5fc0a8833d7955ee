"""`edgevae bench`, `edgevae parity` and `edgevae figures`: int8 vs float, and the paper's
pictures. Thin wrappers: parse, call the library (bench, parity, figures), render."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from .. import fsio
from ..errors import EdgeVAEError
from .common import (
    app,
    check_output_path,
    console,
    err_console,
    parse_int_list,
    require,
)

EXPORT_DIR = typer.Option(Path("export"), help="An export dir made by `edgevae train`/`export`.")


def _progress_callback(bar):
    """(stage, done, total) -> one Rich task per stage."""
    tasks: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total or None, info="")
        bar.update(tasks[stage], completed=done, total=total or None)

    return progress


def _table(title: str, headers: list[str], rows: list[list[str]], left: int = 1) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    for i, h in enumerate(headers):
        table.add_column(
            h, justify="left" if i < left else "right", overflow="fold", no_wrap=i == 0
        )
    for r in rows:
        table.add_row(*r)
    return table


def _command_line(ctx: typer.Context) -> list[str]:
    """This command as a reproducible argv: options that differ from their defaults."""
    argv = ["edgevae", ctx.info_name or ""]
    for p in ctx.command.params:
        value = ctx.params.get(p.name)
        if value is None or value == p.default or not p.opts:
            continue
        if isinstance(value, bool):
            flag = p.opts[0] if value else (p.secondary_opts or [p.opts[0]])[0]
            argv.append(flag)
        else:
            argv += [p.opts[0], str(value)]
    return argv


def _status_markup(status: str) -> str:
    if status.startswith("passed"):
        return f"[green]{status}[/]"
    if status.startswith("failed"):
        return f"[red]{status}[/]"
    return f"[yellow]{status}[/]"


@app.command(
    epilog=(
        "Examples:\n\n"
        "  edgevae bench                                   # 1,16,256; ~1 min\n\n"
        "  edgevae bench --json bench.json --markdown bench.md --plot bench.png\n\n"
        "  edgevae bench --all-recipes --limit 200\n\n"
        "  edgevae bench --min-speedup 1.5 --max-delta-nats 0.1   # CI gate, exit 1 on miss"
    )
)
def bench(
    export_dir: Path = EXPORT_DIR,
    data: str = typer.Option(None, help="Data to score (default: the run's own, test split)."),
    batch_sizes: str = typer.Option("1,16,256", help="Batch sizes to time."),
    threads: int = typer.Option(1, help="onnxruntime (and torch) threads while timing."),
    k: int = typer.Option(1000, help="Importance samples for the NLL estimate."),
    limit: int = typer.Option(100, help="Test images scored per row (0 = the whole split)."),
    seed: int = typer.Option(0, help="Seed of the evaluation noise and of the z for diffs."),
    all_recipes: bool = typer.Option(False, help="Also re-create and measure every recipe."),
    json_out: Path = typer.Option(None, "--json", help="Write the full report as JSON."),
    markdown: Path = typer.Option(None, help="Write the tables as Markdown."),
    plot: Path = typer.Option(None, help="Write a PNG: latency vs batch, accuracy vs size."),
    min_speedup: float = typer.Option(
        None, help="Exit 1 if the int8 decoder p50 speedup at the largest batch is below X."
    ),
    max_delta_nats: float = typer.Option(
        None, help="Exit 1 if the int8 NLL increase exceeds Y nats (also the row budget)."
    ),
    run_dir: Path = typer.Option(
        None, help="Run dir for the torch fp32 row (default: the manifest's run_dir)."
    ),
    torch: bool = typer.Option(True, help="Include the torch fp32 row when possible."),
    rounds: int = typer.Option(15, help="Interleaved timing rounds per batch size."),
) -> None:
    """Compare torch fp32, ORT fp32, ORT int8 and the firmware decoder: speed, nats, size."""
    from ..bench import report as benchreport
    from ..bench.run import run_bench
    from .progress import make_progress

    sizes = parse_int_list(batch_sizes, "--batch-sizes")
    require(all(b >= 1 for b in sizes), f"--batch-sizes must be >= 1, got {batch_sizes}")
    require(threads >= 1, f"--threads must be >= 1, got {threads}")
    require(k >= 1, f"--k must be >= 1, got {k}")
    require(rounds >= 1, f"--rounds must be >= 1, got {rounds}")
    require(limit >= 0, f"--limit must be >= 0 (0 = all), got {limit}")
    require(min_speedup is None or min_speedup > 0, "--min-speedup must be > 0")
    for path, opt in ((json_out, "--json"), (markdown, "--markdown"), (plot, "--plot")):
        if path is not None:
            check_output_path(path, opt)
    require(plot is None or plot.suffix.lower() == ".png", f"--plot: {plot} should end in .png")

    with make_progress(err_console) as bar:
        report = run_bench(
            export_dir,
            data=data,
            batch_sizes=sizes,
            threads=threads,
            k=k,
            limit=limit or None,
            seed=seed,
            all_recipes=all_recipes,
            max_delta_nats=max_delta_nats,
            run_dir=run_dir,
            torch_row=torch,
            rounds=rounds,
            progress=_progress_callback(bar),
        )

    acc = [[escape(c) for c in r] for r in benchreport.accuracy_rows(report, with_reason=False)]
    for r in acc:
        r[1] = _status_markup(r[1])
    console.print(
        _table(
            f"Accuracy: {report.n_images} test images, k={report.k}, nats/image; "
            "|Δ| in pixels (0-255) vs ORT fp32",
            benchreport.ACCURACY_HEADERS,
            acc,
            left=2,
        )
    )
    for r in report.rows:
        if r.reason:
            console.print(f"  {r.name}: {r.reason}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        _table(
            "Latency per call; × fp32 = ORT fp32 p50 / p50 (wall), cpu × = the same in CPU time",
            benchreport.LATENCY_HEADERS,
            [[escape(c) for c in r] for r in benchreport.latency_rows(report)],
            left=2,
        )
    )
    for line in benchreport.summary_lines(report):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for note in report.notes:
        console.print(f"note: {note}", style="dim", markup=False, highlight=False, soft_wrap=True)

    if json_out is not None:
        fsio.write_json(json_out, report.to_dict())
    if markdown is not None:
        fsio.write_text(markdown, benchreport.to_markdown(report))
    if plot is not None:
        from ..paper.plots import bench_plot

        bench_plot(report, plot)
    written = [str(p) for p in (json_out, markdown, plot) if p is not None]
    if written:
        console.print(f"wrote {', '.join(written)}", highlight=False)

    failures = benchreport.check_gates(report, min_speedup, max_delta_nats)
    if failures:
        raise EdgeVAEError("; ".join(failures))


@app.command(
    epilog=(
        "Examples:\n\n"
        "  edgevae parity --out parity.png\n\n"
        "  edgevae parity --out parity.png --n 12 --firmware firmware_demo/build/host/"
        "edgevae_decode"
    )
)
def parity(
    out: Path = typer.Option(Path("parity.png"), help="PNG to write."),
    export_dir: Path = EXPORT_DIR,
    n: int = typer.Option(8, help="Latent vectors (images per row)."),
    seed: int = typer.Option(0, help="Seed for z ~ N(0, I)."),
    firmware: Path = typer.Option(
        Path("firmware_demo/build/host/edgevae_decode"),
        help="The C firmware host binary (skipped with a note when absent).",
    ),
    run_dir: Path = typer.Option(None, help="Run dir for the torch row (default: manifest's)."),
    amplify: float = typer.Option(10.0, help="Gain of the |difference| maps."),
    labels: bool = typer.Option(True, help="Label the rows in a left margin."),
) -> None:
    """Decode the same z with every decoder; rows of images and amplified difference maps."""
    from ..bench.parity import parity_grid
    from ..runtime.images import save_png

    require(n >= 1, f"--n must be >= 1, got {n}")
    require(amplify > 0, f"--amplify must be > 0, got {amplify}")
    check_output_path(out)
    require(out.suffix.lower() == ".png", f"--out: {out} should end in .png")
    picture, rows = parity_grid(
        export_dir,
        n=n,
        seed=seed,
        firmware=firmware,
        run_dir=run_dir,
        amplify=amplify,
        labels=labels,
    )
    save_png(out, picture)
    table = Table(title=f"Same {n} z (seed {seed}), |difference| vs ORT fp32 in pixels (0-255)")
    for col in ("decoder", "status", "max |Δ|", "mean |Δ|", "vs int8 static", "note"):
        table.add_column(col, justify="right" if "Δ" in col or "vs" in col else "left")
    for r in rows:
        status = {"ok": "[green]ok[/]", "failed": "[red]failed[/]"}.get(r.status, "[dim]skipped[/]")
        vs = ""
        if r.max_abs_vs_static_px is not None:
            vs = "exact" if r.exact_vs_static else f"max {r.max_abs_vs_static_px:.0f}"
        table.add_row(
            r.name,
            status,
            "" if r.max_abs_px is None else f"{r.max_abs_px:.0f}",
            "" if r.mean_abs_px is None else f"{r.mean_abs_px:.3f}",
            vs,
            escape(r.note),
        )
    console.print(table)
    shown = sum(r.status == "ok" for r in rows)
    console.print(
        f"wrote {out} ({picture.shape[1]}x{picture.shape[0]} px): {shown} decoders, each "
        f"followed by its |difference| x{amplify:g}",
        highlight=False,
    )


@app.command(
    epilog=(
        "Examples:\n\n"
        "  edgevae figures                                  # bundled 5k digits, a few minutes\n\n"
        "  edgevae figures --data ../shared/data/mnist --frey ../shared/data/frey_face\n\n"
        "  edgevae figures --quick --out /tmp/figs        # 2 epochs, a smoke test"
    )
)
def figures(
    ctx: typer.Context,
    out: Path = typer.Option(Path("docs/figures"), help="Folder for the PNGs and figures.json."),
    data: str = typer.Option(None, help="MNIST data (default: the bundled 5k digits)."),
    frey: str = typer.Option(None, help="Frey Face data; adds its manifold and bound panel."),
    epochs: int = typer.Option(None, help="MNIST epochs (default 50 bundled, 20 with --data)."),
    frey_epochs: int = typer.Option(None, help="Frey Face epochs (default 200)."),
    seed: int = typer.Option(0, help="Seed for training and samples."),
    quick: bool = typer.Option(False, help="2 epochs per run: a smoke test, not the figures."),
    work: Path = typer.Option(Path("runs/figures"), help="Run dirs (complete runs are reused)."),
    latents: str = typer.Option("2,5,10,20", help="Latent sizes (must include 2)."),
    hidden: str = typer.Option(None, help="Hidden sizes (default 500 MNIST, 200 Frey Face)."),
    threads: int = typer.Option(1, help="torch threads per run (1 is fastest on busy CPUs)."),
) -> None:
    """Reproduce Kingma & Welling's figures: manifolds, samples, bound vs samples seen."""
    from ..paper.figures import make_figures
    from .progress import make_progress

    lat = parse_int_list(latents, "--latents")
    hid = parse_int_list(hidden, "--hidden") if hidden else None
    require(epochs is None or epochs >= 1, f"--epochs must be >= 1, got {epochs}")
    require(
        frey_epochs is None or frey_epochs >= 1, f"--frey-epochs must be >= 1, got {frey_epochs}"
    )
    require(not (out.exists() and not out.is_dir()), f"--out: {out} is not a directory")
    with make_progress(err_console) as bar:
        report = make_figures(
            out,
            data=data,
            frey=frey,
            epochs=epochs,
            frey_epochs=frey_epochs,
            seed=seed,
            quick=quick,
            work=work,
            latents=lat,
            hidden=hid,
            threads=threads,
            command=_command_line(ctx),
            progress=_progress_callback(bar),
        )
    runs = Table(title=f"Runs under {work}")
    for col in ("run", "epochs", "samples seen", "test -ELBO", ""):
        runs.add_column(col, justify="left" if col in ("run", "") else "right")
    for r in report["runs"]:
        runs.add_row(
            r["name"],
            str(r["epochs"]),
            f"{r['samples_seen']:,}",
            f"{r['final']['test_neg_elbo']:.2f}",
            "reused" if r["reused"] else f"trained in {r['train_seconds']:.0f} s",
        )
    console.print(runs)
    for f in report["figures"]:
        console.print(f"{out / f['file']}: {f['what']}", highlight=False, soft_wrap=True)
    console.print(
        f"wrote {len(report['figures'])} figures and {out / 'figures.json'} in "
        f"{report['wall_seconds']:.0f} s",
        highlight=False,
    )
