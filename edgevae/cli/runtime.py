"""Torch-free commands: sample, reconstruct, interpolate, manifold, encode, decode.

Each parses its options, calls `edgevae.load()` and one method of the model, and writes the
result (PNG grid or .npy) atomically.
"""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path

import numpy as np
import typer

from .. import api
from ..errors import UsageError
from .common import (
    EXPORT_DIR,
    PRECISION,
    THREADS,
    Precision,
    app,
    check_suffix,
    parse_int_list,
    wrote,
)

DATA = typer.Option(
    None,
    help="Images (any data kind edgevae reads, or KIND:PATH); default: the export's own "
    "held-out test images.",
)


class Split(str, Enum):
    train = "train"
    valid = "valid"
    test = "test"
    all = "all"


def _model(export_dir: Path, precision: Precision, threads: int):
    return api.load(export_dir, precision.value, threads)


def check_grid(model, count: int, nrow: int | None, param: str, what: str) -> None:
    """Refuse before decoding when `count` float32 images and their PNG grid (the picture,
    Pillow's copy of it and the PNG bytes) would not fit in the memory limit."""
    from .. import limits
    from ..runtime.images import PAD

    h, w = model.image_shape
    ncol = nrow or math.ceil(math.sqrt(count))
    width, height = ncol * (w + PAD) + PAD, math.ceil(count / ncol) * (h + PAD) + PAD
    need = count * h * w * 4 + 3 * width * height
    shown = f"{what}: {count} images of {h}x{w} and their {width}x{height}-pixel grid"
    limits.check(need, shown, param)


def _images(model, data: str | None, split: str = "test", seed: int = 0) -> np.ndarray:
    """`data`'s split as [N, D], or the export's held-out images when no data is given."""
    return _labelled(model, data, split, seed)[0]


def _labelled(model, data: str | None, split: str = "test", seed: int = 0):
    """(images [N, D], labels or None): the labels as class names when a conditional model
    needs them (from the data, or the export's held-out labels)."""
    if data is None:
        x = model.heldout().reshape(-1, model.input_dim)
        return x, (model.heldout_labels() if model.conditional else None)
    from ..data.core import load_dataset, load_images
    from .progress import fetch_named

    fetch_named(data)
    if not model.conditional:
        return load_images(data, split=split, seed=seed)[0], None
    ds = load_dataset(data, seed=seed, labels=True)
    unknown = [name for name in ds.classes or () if name not in model.classes]
    if unknown:
        raise UsageError(
            f"the data has classes {unknown[:10]} that the model does not know "
            f"({', '.join(model.classes)})",
            param="data",
        )
    names = np.asarray(ds.classes)[ds.labels(split)]
    return getattr(ds, split), names


LABEL = typer.Option(
    None, help="The class to draw, by name or position (a conditional model); 'all': each class."
)


@app.command(
    epilog="Examples:\n\n  edgevae sample --n 16 --out grid.png\n\n"
    "  edgevae sample --n 64 --temperature 0.7 --precision fp32 --out fp32.png"
)
def sample(
    export_dir: Path = EXPORT_DIR,
    n: int = typer.Option(16, min=1, max=100_000, help="Number of images (per class with 'all')."),
    out: Path = typer.Option(Path("grid.png"), help="PNG to write."),
    seed: int = typer.Option(0, min=0, help="Seed for z ~ N(0, I)."),
    label: str = LABEL,
    precision: Precision = PRECISION,
    nrow: int = typer.Option(None, min=1, help="Images per row (default ceil(sqrt(n)))."),
    temperature: float = typer.Option(
        1.0, help="Scale of z; below 1 gives cleaner, less varied images."
    ),
    threads: int = THREADS,
) -> None:
    """Decode random z from the prior into a PNG grid (int8 decoder by default); a
    conditional model draws the class --label (default: one row per class)."""
    from ..runtime.images import save_grid

    check_suffix(out, (".png",))
    model = _model(export_dir, precision, threads)
    if model.conditional and label is None:
        label = "all"
    every = label == "all" and model.conditional
    count = n * len(model.classes) if every else n
    check_grid(model, count, n if every else nrow, "n", f"{n} samples" + (" per class" * every))
    images = model.sample(n, seed, temperature, label=label)
    if every:
        what, nrow = f"{n} samples of each of {len(model.classes)} classes, a row each", n
    else:
        what = f"{n} samples" + (f" of class {label}" if label is not None else "")
    wrote(out, f"{what} from the {precision.value} decoder", save_grid(out, images, nrow))


@app.command(
    epilog="Examples:\n\n  edgevae reconstruct --n 8 --out recon.png\n\n"
    "  edgevae reconstruct --data ./digits.npz --n 16 --out recon.png"
)
def reconstruct(
    export_dir: Path = EXPORT_DIR,
    data: str = DATA,
    n: int = typer.Option(8, min=1, help="Number of images."),
    out: Path = typer.Option(Path("recon.png"), help="PNG to write."),
    seed: int = typer.Option(0, min=0, help="Seed of the data split (with --data)."),
    precision: Precision = PRECISION,
    threads: int = THREADS,
) -> None:
    """Encode test images and decode z = mu: originals on top, reconstructions below."""
    from ..runtime.images import save_grid

    check_suffix(out, (".png",))
    model = _model(export_dir, precision, threads)
    x, labels = _labelled(model, data, seed=seed)
    x, labels = x[:n], (None if labels is None else labels[:n])
    check_grid(model, 2 * len(x), len(x), "n", f"{len(x)} reconstructions")
    recon = model.reconstruct(x, labels)  # checks the images first
    grid = np.concatenate([model.images(model.as_input(x)), recon])
    size = save_grid(out, grid, nrow=len(x))
    wrote(out, f"{len(x)} originals (top) and reconstructions (bottom)", size)


@app.command(epilog="Example:\n\n  edgevae interpolate --a 0 --b 7 --steps 10 --out interp.png")
def interpolate(
    export_dir: Path = EXPORT_DIR,
    data: str = DATA,
    a: int = typer.Option(0, min=0, help="Index of the first test image."),
    b: int = typer.Option(1, min=0, help="Index of the second test image."),
    steps: int = typer.Option(10, min=2, max=10_000, help="Images along the path, ends included."),
    out: Path = typer.Option(Path("interp.png"), help="PNG to write."),
    precision: Precision = PRECISION,
    threads: int = THREADS,
) -> None:
    """Decode the straight line between the posterior means of two test images."""
    from ..runtime.images import save_grid

    check_suffix(out, (".png",))
    model = _model(export_dir, precision, threads)
    x, labels = _labelled(model, data)
    for name, index in (("--a", a), ("--b", b)):
        if index >= len(x):
            raise UsageError(f"{name}: {index} is past the last test image ({len(x) - 1})")
    pair = None if labels is None else (labels[a], labels[b])
    check_grid(model, steps, steps, "steps", f"a path of {steps} steps")
    size = save_grid(out, model.interpolate(x[a], x[b], steps, labels=pair), nrow=steps)
    wrote(out, f"{steps} steps from test image {a} to {b}", size)


@app.command(
    epilog="Example:\n\n  edgevae manifold --steps 20 --out manifold.png\n\n"
    "Dims other than --dims are held at 0, so with a 20-dim latent the picture is faint and "
    "blurred; the paper's Fig. 4 is a model trained with --latent-dim 2."
)
def manifold(
    export_dir: Path = EXPORT_DIR,
    steps: int = typer.Option(20, min=2, max=1000, help="Grid size per side."),
    dims: str = typer.Option("0,1", help="The two latent dims to vary (others are 0)."),
    out: Path = typer.Option(Path("manifold.png"), help="PNG to write."),
    label: str = typer.Option(None, help="The class to decode with (a conditional model)."),
    precision: Precision = PRECISION,
    threads: int = THREADS,
) -> None:
    """The learned manifold (paper Fig. 4): a grid through the inverse Gaussian CDF."""
    from ..runtime.images import save_grid

    pair = parse_int_list(dims, "--dims")
    if len(pair) != 2:
        raise UsageError("--dims takes exactly two latent dims, e.g. 0,1")
    check_suffix(out, (".png",))
    model = _model(export_dir, precision, threads)
    check_grid(model, steps * steps, steps, "steps", f"a {steps}x{steps} manifold")
    images = model.manifold(steps, (pair[0], pair[1]), label)
    size = save_grid(out, images, nrow=steps)
    wrote(out, f"{steps}x{steps} manifold over dims {pair[0]},{pair[1]}", size)


@app.command(
    epilog="Example:\n\n  edgevae analogies --n 8 --out analogies.png\n\n"
    "Each row: a test image, then its z decoded with every class (style kept, class changed; "
    "Kingma et al. 2014, Fig. 1). Needs a model trained with --conditional."
)
def analogies(
    export_dir: Path = EXPORT_DIR,
    data: str = DATA,
    n: int = typer.Option(8, min=1, max=1000, help="Test images (rows)."),
    out: Path = typer.Option(Path("analogies.png"), help="PNG to write."),
    precision: Precision = PRECISION,
    threads: int = THREADS,
) -> None:
    """Encode test images with their labels, decode each z with every class."""
    from ..runtime.images import save_grid

    check_suffix(out, (".png",))
    model = _model(export_dir, precision, threads)
    x, labels = _labelled(model, data)
    x, labels = x[:n], (None if labels is None else labels[:n])
    per_row = len(model.classes) + 1
    check_grid(model, len(x) * per_row, per_row, "n", f"{len(x)} rows of {per_row} images")
    grid = model.analogies(x, labels)  # [N, C, H, W]
    rows = np.concatenate([model.images(model.as_input(x))[:, None], grid], axis=1)
    size = save_grid(out, rows.reshape(-1, *model.image_shape), nrow=rows.shape[1])
    wrote(out, f"{len(x)} test images (left), each decoded as every class", size)


@app.command(epilog="Example:\n\n  edgevae encode --data digits.npy --out z.npy")
def encode(
    out: Path = typer.Option(..., help="Where to write mu as .npy [N, L]."),
    data: str = DATA,
    split: Split = typer.Option(Split.test, help="Which split of --data."),
    export_dir: Path = EXPORT_DIR,
    precision: Precision = PRECISION,
    threads: int = THREADS,
) -> None:
    """Encode images to posterior means (mu), saved as a float32 .npy."""
    from .. import fsio
    from ..data.npy import npy_bytes

    check_suffix(out, (".npy",))
    model = _model(export_dir, precision, threads)
    mu, _ = model.encode(_images(model, data, split.value))
    fsio.write_bytes(out, npy_bytes(mu))
    wrote(out, f"mu {list(mu.shape)}")


@app.command(epilog="Example:\n\n  edgevae decode --z z.npy --out decoded.png")
def decode(
    z: Path = typer.Option(..., help="A float .npy of latent vectors [N, L]."),
    out: Path = typer.Option(..., help=".png for a grid, or .npy for the raw [N, D] means."),
    export_dir: Path = EXPORT_DIR,
    precision: Precision = PRECISION,
    threads: int = THREADS,
) -> None:
    """Decode latent vectors from a .npy into images (PNG grid) or means (.npy)."""
    from .. import fsio, limits
    from ..data.npy import npy_bytes, read_npy
    from ..runtime.images import save_grid

    check_suffix(out, (".png", ".npy"))
    model = _model(export_dir, precision, threads)
    zs = read_npy(z)
    if out.suffix.lower() == ".npy":  # the means and their .npy bytes
        h, w = model.image_shape
        need = 2 * len(zs) * h * w * 4
        limits.check(need, f"decoding {len(zs)} latent vectors into {h}x{w} means", "z")
    else:
        check_grid(model, len(zs), None, "z", f"decoding {len(zs)} latent vectors")
    means = model.decode(zs)
    if out.suffix.lower() == ".npy":
        fsio.write_bytes(out, npy_bytes(means))
        wrote(out, f"x_mean {list(means.shape)}")
    else:
        wrote(out, f"{len(zs)} decoded z", save_grid(out, model.images(means)))
