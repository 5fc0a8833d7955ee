"""`edgevae train` and `edgevae eval`: the torch side of the CLI (torch imported lazily)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .. import fsio
from ..config import PRESETS, ModelConfig, TrainConfig
from .common import app, check_output_path, console, err_console, parse_int_list, require


@app.command(
    epilog=(
        "Examples:\n\n"
        "  edgevae train                                   # default 5k MNIST digits\n\n"
        "  edgevae train --data ../shared/data/mnist --epochs 10 --run-dir runs/mnist\n\n"
        "  edgevae train --data frey:faces/frey_rawface.mat --latent-dim 2\n\n"
        "  edgevae train --run-dir runs/mnist --resume --epochs 20"
    )
)
def train(
    data: str = typer.Option(
        None, help="Data path (kind detected from content) or KIND:PATH; default: 5k MNIST."
    ),
    epochs: int = typer.Option(10, help="Epochs to train in total (with --resume: the new total)."),
    batch_size: int = typer.Option(100, help="Images per optimizer step."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    optimizer: str = typer.Option("adam", help="adam or adagrad."),
    lr_patience: int = typer.Option(
        0,
        help="Halve --lr (down to --lr/1000) after this many epochs without a better "
        "valid bound (0 = off).",
    ),
    kl_warmup: int = typer.Option(
        0,
        help="Ramp the KL weight linearly from 0 to 1 over this many epochs (0 = off); "
        "reported bounds are always the full -ELBO.",
    ),
    preset: str = typer.Option(
        "default", help=f"Model sizes: {', '.join(PRESETS)} (overridden by --hidden/--latent-dim)."
    ),
    hidden: str = typer.Option(None, help="Hidden layer sizes, e.g. 400 or 500,500."),
    latent_dim: int = typer.Option(None, help="Latent dimension (default 20; mcu preset 8)."),
    activation: str = typer.Option("relu", help="relu or tanh."),
    binarize: str = typer.Option("none", help="none, static, or dynamic (resampled each epoch)."),
    seed: int = typer.Option(0, help="Seed for weights, splits, batches and noise."),
    threads: int = typer.Option(
        1,
        help="CPU threads for torch (0 = all cores). Results are bit-identical only for "
        "the same thread count; on a shared machine 1 is often fastest for this small model.",
    ),
    max_minutes: float = typer.Option(None, help="Stop after the epoch that passes this time."),
    run_dir: Path = typer.Option(Path("runs/default"), help="Where checkpoints and metrics go."),
    resume: bool = typer.Option(False, help="Continue the run in --run-dir."),
    overwrite: bool = typer.Option(False, help="Start over in an existing --run-dir."),
    export: bool = typer.Option(True, help="Export and quantize into --export-dir afterwards."),
    export_dir: Path = typer.Option(Path("export"), help="Where the ONNX models go."),
) -> None:
    """Train the VAE (Kingma & Welling) and, unless --no-export, export it to int8 ONNX."""
    from ..errors import UsageError
    from ..training.loop import train as run_training
    from .progress import TrainProgress

    require(preset in PRESETS, f"--preset must be one of {', '.join(PRESETS)}")
    sizes = PRESETS[preset]
    model_cfg = ModelConfig(
        input_dim=784,
        image_shape=(28, 28),
        hidden=parse_int_list(hidden, "--hidden") if hidden else list(sizes["hidden"]),
        latent_dim=latent_dim if latent_dim is not None else sizes["latent_dim"],
        activation=activation,
    ).validate()
    train_cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        seed=seed,
        threads=threads,
        binarize=binarize,
        data=data,
        max_minutes=max_minutes,
        lr_patience=lr_patience,
        kl_warmup=kl_warmup,
    ).validate()
    if export and export_dir.exists() and not export_dir.is_dir():
        raise UsageError(f"--export-dir: {export_dir} is not a directory")
    with TrainProgress(err_console) as reporter:
        result = run_training(
            model_cfg, train_cfg, run_dir, resume=resume, overwrite=overwrite, reporter=reporter
        )
    last = result.rows[-1]
    console.print(
        f"trained {result.epochs} epochs in {result.seconds:.1f} s: "
        f"valid -ELBO {last['valid_neg_elbo']:.2f} nats, test -ELBO {last['test_neg_elbo']:.2f} "
        f"nats -> {run_dir}",
        highlight=False,
    )
    if export:
        _export_after_training(run_dir, export_dir)


def _export_after_training(run_dir: Path, export_dir: Path) -> None:
    try:
        from .export import export_and_quantize_with_output
    except ModuleNotFoundError:
        err_console.print("export is not available in this build; skipped")
        return
    export_and_quantize_with_output(run_dir, export_dir)


@app.command(
    name="eval",
    epilog="Example:\n\n  edgevae eval --run-dir runs/default --k 5000 --json eval.json",
)
def eval_(
    run_dir: Path = typer.Option(Path("runs/default"), help="A run dir made by `edgevae train`."),
    data: str = typer.Option(None, help="Data to score (default: the run's own data)."),
    split: str = typer.Option("test", help="train, valid or test."),
    k: int = typer.Option(5000, help="Importance samples for the log-likelihood estimate."),
    limit: int = typer.Option(None, help="Score only the first N images of the split."),
    seed: int = typer.Option(0, help="Seed for the evaluation noise."),
    threads: int = typer.Option(0, help="CPU threads (0 = all cores)."),
    json_out: Path = typer.Option(None, "--json", help="Also write the numbers as JSON."),
) -> None:
    """Score a trained model in nats: -ELBO, its parts, importance-weighted NLL, active units."""
    from ..training.evaluate import evaluate_run
    from .progress import CountProgress

    if json_out is not None:
        check_output_path(json_out, "--json")
    with CountProgress(err_console, f"scoring (k={k})") as progress:
        bounds = evaluate_run(run_dir, data, split, k, seed, limit, threads, progress)
    table = Table(title=f"{run_dir} on {split} ({bounds.n_images} images), nats per image")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for label, value in [
        ("-ELBO (1 sample)", f"{bounds.neg_elbo:.3f}"),
        ("-ELBO (z = mu)", f"{bounds.neg_elbo_mean_z:.3f}"),
        ("  reconstruction", f"{bounds.recon:.3f}"),
        ("  KL(q || p)", f"{bounds.kl:.3f}"),
        (f"-log p(x), IWAE k={bounds.k}", f"{bounds.nll_iw:.3f}"),
        ("active units", f"{bounds.active_units} / {bounds.latent_dim}"),
    ]:
        table.add_row(label, value)
    console.print(table)
    if json_out is not None:
        fsio.write_json(json_out, {"run_dir": str(run_dir), "split": split, **bounds.to_dict()})
