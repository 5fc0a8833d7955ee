"""`edgevae bench`, `edgevae parity` and `edgevae figures`: int8 vs float, and the paper's
pictures. Thin wrappers: parse, call the library (bench, parity, figures), render."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from ..errors import EdgeVAEError
from .common import (
    app,
    check_output_path,
    check_suffix,
    console,
    err_console,
    option_name,
    parse_int_list,
)

EXPORT_DIR = typer.Option(Path("export"), help="An export dir made by `edgevae train`/`export`.")


def _table(title: str, headers: list[str], rows: list[list[str]], left: int = 1) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    for i, h in enumerate(headers):
        table.add_column(
            h, justify="left" if i < left else "right", overflow="fold", no_wrap=i == 0
        )
    for r in rows:
        table.add_row(*r)
    return table


def _plain(text: str, **kwargs) -> None:
    """A line of library text: printed as is (no markup, no highlighting, never wrapped)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True, **kwargs)


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


# --------------------------------------------------------------------------- bench


def _check_rows(export_dir: Path, rows: int, copies: int, param: str, what: str) -> None:
    """Refuse before any work when `rows` rows through the export's models (`copies` float32
    image-sized arrays a row, plus the hidden and latent activations) would not fit in the
    memory limit."""
    from .. import limits
    from ..runtime import manifest

    man = manifest.read(export_dir)
    h, w = man["image_shape"]
    hidden = (man.get("model") or {}).get("hidden")
    widths = [v for v in hidden if isinstance(v, int)] if isinstance(hidden, list) else []
    per_row = 4 * (copies * h * w + 2 * man["latent_dim"] + 2 * sum(widths))
    limits.check(rows * per_row, f"{what} ({h}x{w} images)", param)


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
    batch_sizes: str = typer.Option("1,16,256", help="Batch sizes to time (each >= 1)."),
    threads: int = typer.Option(1, min=1, help="onnxruntime (and torch) threads while timing."),
    k: int = typer.Option(
        1000, min=1, max=1_000_000, help="Importance samples for the NLL estimate."
    ),
    limit: int = typer.Option(100, min=0, help="Test images scored per row (0 = the whole split)."),
    seed: int = typer.Option(0, help="Seed of the evaluation noise and of the z for diffs."),
    all_recipes: bool = typer.Option(False, help="Also re-create and measure every recipe."),
    json_path: Path = typer.Option(None, "--json", help="Write the full report as JSON."),
    markdown: Path = typer.Option(None, help="Write the tables as Markdown."),
    plot: Path = typer.Option(
        None, help="Write a PNG: latency vs batch, accuracy vs size (needs matplotlib)."
    ),
    min_speedup: float = typer.Option(
        None, min=0, help="Exit 1 if the int8 decoder p50 speedup at the largest batch is below X."
    ),
    max_delta_nats: float = typer.Option(
        None, help="Exit 1 if the int8 NLL increase exceeds Y nats (also the row budget)."
    ),
    run_dir: Path = typer.Option(
        None, help="Run dir for the torch fp32 row (default: the manifest's run_dir)."
    ),
    torch_row: bool = typer.Option(
        True, "--torch/--no-torch", help="Include the torch fp32 row when possible."
    ),
    rounds: int = typer.Option(15, min=1, help="Interleaved timing rounds per batch size."),
) -> None:
    """Compare torch fp32, ORT fp32, ORT int8 and the firmware decoder: speed, nats, size."""
    from ..bench.report import check_gates, write_outputs
    from ..bench.run import run_bench
    from .progress import stage_progress

    for path, opt in ((json_path, "--json"), (markdown, "--markdown"), (plot, "--plot")):
        if path is not None:
            check_output_path(path, opt)
    if plot is not None:
        check_suffix(plot, (".png",), "--plot")
    sizes = parse_int_list(batch_sizes, "--batch-sizes")
    if sizes and min(sizes) >= 1:
        _check_rows(export_dir, max(sizes), 4, "batch_sizes", f"timing a batch of {max(sizes)}")
    with stage_progress(err_console) as progress:
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
            torch_row=torch_row,
            rounds=rounds,
            progress=progress,
        )
    _print_bench(report)
    written = write_outputs(report, json_path=json_path, markdown=markdown, plot=plot)
    if written:
        console.print(f"wrote {', '.join(map(str, written))}", highlight=False)
    failures = check_gates(report, min_speedup, max_delta_nats)
    if failures:
        raise EdgeVAEError(
            "; ".join(f"{option_name(bench, f.param)}: {f.detail}" for f in failures)
        )


def _print_bench(report) -> None:
    """The accuracy and latency tables, the rows' reasons, the summary lines and the notes."""
    from ..bench import report as benchreport

    acc = [[escape(c) for c in r] for r in benchreport.accuracy_rows(report, with_reason=False)]
    for r in acc:
        r[1] = _status_markup(r[1])
    title = (
        f"Accuracy: {report.n_images} test images, k={report.k}, nats/image; "
        "|Δ| in pixels (0-255) vs ORT fp32"
    )
    console.print(_table(title, benchreport.ACCURACY_HEADERS, acc, left=2))
    for r in report.rows:
        if r.reason:
            _plain(f"  {r.name}: {r.reason}")
    lat = [[escape(c) for c in r] for r in benchreport.latency_rows(report)]
    title = "Latency per call; × fp32 = ORT fp32 p50 / p50 (wall), cpu × = the same in CPU time"
    console.print(_table(title, benchreport.LATENCY_HEADERS, lat, left=2))
    for line in benchreport.summary_lines(report):
        _plain(line)
    for note in report.notes:
        _plain(f"note: {note}", style="dim")


# --------------------------------------------------------------------------- parity


@app.command(
    epilog=(
        "Examples:\n\n"
        "  edgevae parity --out parity.png\n\n"
        "  edgevae parity --out parity.png --n 12 --firmware ./edgevae_decode   # with the C row"
        "\n\n"
        "The C row needs a host build of the firmware decoder: `edgevae firmware` prints the "
        "cc line that builds one."
    )
)
def parity(
    out: Path = typer.Option(Path("parity.png"), help="PNG to write."),
    export_dir: Path = EXPORT_DIR,
    n: int = typer.Option(8, min=1, help="Latent vectors (images per row)."),
    seed: int = typer.Option(0, help="Seed for z ~ N(0, I)."),
    firmware: Path = typer.Option(
        None,
        help="The C firmware host binary (edgevae_decode) for the C row; without it the row is "
        "skipped.",
    ),
    run_dir: Path = typer.Option(None, help="Run dir for the torch row (default: manifest's)."),
    amplify: float = typer.Option(10.0, min=0, help="Gain of the |difference| maps (> 0)."),
    labels: bool = typer.Option(True, help="Label the rows in a left margin."),
) -> None:
    """Decode the same z with every decoder; rows of images and amplified difference maps."""
    from ..bench.parity import parity_grid
    from ..runtime.images import save_png

    check_suffix(out, (".png",))
    _check_rows(export_dir, n, 7, "n", f"{n} latent vectors through every decoder")
    picture, rows = parity_grid(
        export_dir, n=n, seed=seed, firmware=firmware, run_dir=run_dir, amplify=amplify,
        labels=labels,
    )  # fmt: skip
    save_png(out, picture)
    _print_parity(rows, n, seed)
    shown = sum(r.status == "ok" for r in rows)
    console.print(
        f"wrote {out} ({picture.shape[1]}x{picture.shape[0]} px): {shown} decoders, each "
        f"followed by its |difference| x{amplify:g}",
        highlight=False,
    )
    if firmware is None:
        _plain("add --firmware PATH for the C firmware row", style="dim")


def _print_parity(rows, n: int, seed: int) -> None:
    from ..bench.parity import SHORT

    table = Table(title=f"Same {n} z (seed {seed}), |difference| vs ORT fp32 in pixels (0-255)")
    for col in ("decoder", "status", "max |Δ|", "mean |Δ|", "vs static", "note"):
        table.add_column(col, justify="right" if "Δ" in col or "vs" in col else "left")
    for r in rows:
        status = {"ok": "[green]ok[/]", "failed": "[red]failed[/]"}.get(r.status, "[dim]skipped[/]")
        vs = ""
        if r.max_abs_vs_static_px is not None:
            vs = "exact" if r.exact_vs_static else f"max {r.max_abs_vs_static_px:.0f}"
            vs += f" ({SHORT.get(r.vs_static, r.vs_static)})"
        table.add_row(
            r.name,
            status,
            "" if r.max_abs_px is None else f"{r.max_abs_px:.0f}",
            "" if r.mean_abs_px is None else f"{r.mean_abs_px:.3f}",
            vs,
            escape(r.note),
        )
    console.print(table)


# --------------------------------------------------------------------------- figures


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
    out_dir: Path = typer.Option(
        Path("docs/figures"), "--out", help="Folder for the PNGs and figures.json."
    ),
    data: str = typer.Option(None, help="MNIST data (default: the bundled 5k digits)."),
    frey: str = typer.Option(None, help="Frey Face data; adds its manifold and bound panel."),
    epochs: int = typer.Option(
        None, min=1, help="MNIST epochs (default 50 bundled, 20 with --data)."
    ),
    frey_epochs: int = typer.Option(None, min=1, help="Frey Face epochs (default 200)."),
    seed: int = typer.Option(0, help="Seed for training and samples."),
    quick: bool = typer.Option(False, help="2 epochs per run: a smoke test, not the figures."),
    work: Path = typer.Option(Path("runs/figures"), help="Run dirs (complete runs are reused)."),
    latents: str = typer.Option("2,5,10,20", help="Latent sizes (must include 2)."),
    hidden: str = typer.Option(None, help="Hidden sizes (default 500 MNIST, 200 Frey Face)."),
    threads: int = typer.Option(
        1, min=0, help="torch threads per run (0 = all cores; 1 is fastest on busy CPUs)."
    ),
) -> None:
    """Reproduce Kingma & Welling's figures: manifolds, samples, bound vs samples seen."""
    from ..paper.figures import make_figures
    from .progress import stage_progress

    latent_sizes = parse_int_list(latents, "--latents")
    hidden_sizes = parse_int_list(hidden, "--hidden") if hidden else None
    with stage_progress(err_console) as progress:
        report = make_figures(
            out_dir,
            data=data,
            frey=frey,
            epochs=epochs,
            frey_epochs=frey_epochs,
            seed=seed,
            quick=quick,
            work=work,
            latents=latent_sizes,
            hidden=hidden_sizes,
            threads=threads,
            command=_command_line(ctx),
            progress=progress,
        )
    _print_figures(report, out_dir, work)


def _print_figures(report: dict, out_dir: Path, work: Path) -> None:
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
        console.print(f"{out_dir / f['file']}: {f['what']}", highlight=False, soft_wrap=True)
    console.print(
        f"wrote {len(report['figures'])} figures and {out_dir / 'figures.json'} in "
        f"{report['wall_seconds']:.0f} s",
        highlight=False,
    )
