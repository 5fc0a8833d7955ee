"""`edgevae train` and `edgevae eval`: the torch side of the CLI (torch imported lazily)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from enum import Enum
from pathlib import Path

import typer
from rich.table import Table

from .. import api, extras, fsio
from ..config import PRESETS
from ..errors import UsageError
from .common import app, check_dir_option, check_output_path, console, err_console, parse_int_list
from .progress import fetch_named

Preset = Enum("Preset", {name: name for name in PRESETS}, type=str)  # type: ignore[misc]


class Optimizer(str, Enum):
    adam = "adam"
    adagrad = "adagrad"


class Activation(str, Enum):
    relu = "relu"
    tanh = "tanh"


class Binarize(str, Enum):
    none = "none"
    static = "static"
    dynamic = "dynamic"


class QatBits(str, Enum):
    off = "0"
    four = "4"


class Split(str, Enum):
    train = "train"
    valid = "valid"
    test = "test"


@app.command(
    epilog=(
        "Examples:\n\n"
        "  edgevae train                                   # bundled 5k MNIST, then export\n\n"
        "  edgevae train --data mnist --run-dir runs/mnist # downloads MNIST once (cached)\n\n"
        "  edgevae train --data ./mnist --epochs 10 --run-dir runs/mnist\n\n"
        "  edgevae train --data fashion-mnist --classes Trouser,Bag\n\n"
        "  edgevae train --data frey:faces/frey_rawface.mat --latent-dim 2\n\n"
        "  edgevae train --preset mcu                      # 8-128-784: fits 128 KB of flash\n\n"
        "  edgevae train --run-dir runs/mnist --resume --epochs 20\n\n"
        "  edgevae train --run-dir runs/mcu --resume --epochs 14 --qat-bits 4"
        "   # 4-bit firmware decoder"
    )
)
def train(
    ctx: typer.Context,
    data: str = typer.Option(
        None,
        help="Data path (kind detected from content), KIND:PATH, or a named set downloaded "
        "once into the cache: mnist, fashion-mnist, binarized-mnist, frey-face (a local "
        "folder of such a name: ./mnist). Default: the bundled 5k MNIST digits.",
    ),
    classes: str = typer.Option(
        None,
        help="Train on these classes only: positions in the data's class list or class names, "
        "comma-separated (0,3,8 or Trouser,Bag). Needs labelled data.",
    ),
    conditional: bool = typer.Option(
        False,
        help="Condition encoder and decoder on the label (labelled data), so `edgevae sample "
        "--label 7` draws a 7. Its default latent size is 4, not 20: with more dims z also "
        "carries the class and ~1 sample in 4 shows another digit (20 dims; 4 dims: 1 in 26), "
        "at the cost of ~21 nats of likelihood (see docs/conditional.md).",
    ),
    epochs: int = typer.Option(
        10, min=1, max=1_000_000, help="Epochs in total (with --resume: the new total)."
    ),
    batch_size: int = typer.Option(100, min=1, help="Images per optimizer step."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    optimizer: Optimizer = typer.Option(Optimizer.adam, help="The optimizer."),
    lr_patience: int = typer.Option(
        0,
        min=0,
        help="Halve --lr (down to --lr/1000) after this many epochs without a better "
        "valid bound (0 = off).",
    ),
    kl_warmup: int = typer.Option(
        0,
        min=0,
        help="Ramp the KL weight linearly from 0 to 1 over this many epochs (0 = off); "
        "reported bounds are always the full -ELBO.",
    ),
    preset: Preset = typer.Option(
        Preset("default"),
        help="Model sizes: default 784-400-20, mcu 784-128-8, paper 784-500-20 "
        "(overridden by --hidden/--latent-dim).",
    ),
    hidden: str = typer.Option(None, help="Hidden layer sizes, e.g. 400 or 500,500."),
    latent_dim: int = typer.Option(
        None, min=1, help="Latent dimension (default 20; mcu preset 8; --conditional 4)."
    ),
    activation: Activation = typer.Option(Activation.relu, help="Hidden-layer activation."),
    binarize: Binarize = typer.Option(
        Binarize.none, help="Binarize pixels: once (static) or resampled every epoch (dynamic)."
    ),
    seed: int = typer.Option(0, min=0, help="Seed for weights, splits, batches and noise."),
    threads: int = typer.Option(
        1,
        min=0,
        help="CPU threads for torch (0 = all cores). Results are bit-identical only for "
        "the same thread count; on a shared machine 1 is often fastest for this small model.",
    ),
    max_minutes: float = typer.Option(None, help="Stop after the epoch that passes this time."),
    qat_bits: QatBits = typer.Option(
        QatBits.off,
        help="Quantization-aware training for the 4-bit firmware decoder (`edgevae firmware "
        "--weight-bits 4`): the decoder's weights after its first layer are rounded to 4 bits "
        "per channel in every step, with learned scales. Best as a fine-tune: --resume a "
        "trained run for a few more epochs (kept on a resumed run once on).",
    ),
    run_dir: Path = typer.Option(Path("runs/default"), help="Where checkpoints and metrics go."),
    resume: bool = typer.Option(False, help="Continue the run in --run-dir."),
    overwrite: bool = typer.Option(False, help="Start over in an existing --run-dir."),
    export: bool = typer.Option(True, help="Export and quantize into --export-dir afterwards."),
    export_dir: Path = typer.Option(Path("export"), help="Where the ONNX models go."),
) -> None:
    """Train the VAE (Kingma & Welling) and, unless --no-export, export it to int8 ONNX."""
    from .progress import TrainProgress

    extras.require("training", "train", extras.TRAIN)  # one line, before any progress display
    if export:
        check_dir_option(export_dir, "--export-dir")
    given = _given(
        ctx,
        data=data, preset=preset, latent_dim=latent_dim, activation=activation,
        batch_size=batch_size, lr=lr, optimizer=optimizer, binarize=binarize,
        lr_patience=lr_patience, kl_warmup=kl_warmup, seed=seed, conditional=conditional,
        hidden=parse_int_list(hidden, "--hidden") if hidden else None,
        classes=_parse_classes(classes) if classes is not None else None,
    )  # fmt: skip
    if not resume:
        fetch_named(data)
    with TrainProgress(err_console) as reporter, _resume_hint(run_dir), _flags(train):
        run = api.train(
            **given, run_dir=run_dir, epochs=epochs, threads=threads, max_minutes=max_minutes,
            qat_bits=int(qat_bits.value),
            resume=resume, overwrite=overwrite, reporter=reporter,
        )  # fmt: skip
    console.print(
        f"trained {run.epochs} epochs in {run.seconds:.1f} s: valid -ELBO "
        f"{run.valid_neg_elbo:.2f} nats, test -ELBO {run.test_neg_elbo:.2f} nats -> {run_dir}",
        highlight=False,
        markup=False,
    )
    if export:
        from .export import export_and_quantize

        export_and_quantize(run_dir, export_dir)


def _given(ctx: typer.Context, **values) -> dict:
    """The API's options: what the command line set, None for what it left at its default
    (a resume keeps the run's own options, and refuses only those given that differ)."""
    out = {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)
        out[name] = None if source is not None and source.name == "DEFAULT" else value
        out[name] = getattr(out[name], "value", out[name])  # an Enum choice: its value
    return out


@contextlib.contextmanager
def _flags(command) -> Iterator[None]:
    """A resume's conflicting options named as this command's flags, in one line."""
    from ..training.options import ResumeConflict
    from .common import option_name

    try:
        yield
    except ResumeConflict as exc:
        listed = "; ".join(
            f"{option_name(command, p)} {_show(g)} (the run's: {_show(s)})"
            for p, g, s in exc.conflicts
        )
        raise UsageError(f"a resume keeps the run's options; these differ: {listed}") from None


def _show(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _parse_classes(text: str) -> list[str]:
    items = [part.strip() for part in text.split(",")]
    if not all(items):
        raise UsageError(f"--classes: expected comma-separated positions or names, got {text!r}")
    return items


@contextlib.contextmanager
def _resume_hint(run_dir: Path) -> Iterator[None]:
    """Ctrl-C saves the state; tell the user the command that continues from it."""
    from ..training.loop import Interrupted

    try:
        yield
    except Interrupted as exc:
        exc.args = (f"{exc.args[0]} (edgevae train --resume --run-dir {run_dir})",)
        raise


@app.command(
    name="eval",
    epilog="Example:\n\n  edgevae eval --run-dir runs/default --k 5000 --json eval.json",
)
def eval_(
    run_dir: Path = typer.Option(Path("runs/default"), help="A run dir made by `edgevae train`."),
    data: str = typer.Option(None, help="Data to score (default: the run's own data)."),
    split: Split = typer.Option(Split.test, help="Which split of the data."),
    k: int = typer.Option(
        5000, min=1, max=1_000_000, help="Importance samples for the log-likelihood estimate."
    ),
    limit: int = typer.Option(None, min=1, help="Score only the first N images of the split."),
    seed: int = typer.Option(0, min=0, help="Seed for the evaluation noise."),
    threads: int = typer.Option(0, min=0, help="CPU threads (0 = all cores)."),
    json_out: Path = typer.Option(None, "--json", help="Also write the numbers as JSON."),
) -> None:
    """Score a trained model in nats: -ELBO, its parts, importance-weighted NLL, active units."""
    from .progress import CountProgress

    if json_out is not None:
        check_output_path(json_out, "--json")
    fetch_named(data)
    with CountProgress(err_console, f"scoring (k={k})") as progress:
        bounds = api.evaluate(
            run_dir,
            data=data,
            split=split.value,
            k=k,
            limit=limit,
            seed=seed,
            threads=threads,
            progress=progress,
        )
    table = Table(title=f"{run_dir} on {split.value} ({bounds.n_images} images), nats per image")
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
        fsio.write_json(
            json_out, {"run_dir": str(run_dir), "split": split.value, **bounds.to_dict()}
        )
