"""Torch-free commands: sample, reconstruct, interpolate, manifold, encode, decode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from .common import app, check_output_path, console, parse_int_list, require

EXPORT_DIR = typer.Option(Path("export"), help="An export dir made by `edgevae train`/`export`.")
PRECISION = typer.Option("int8", help="int8 (quantized) or fp32.")
THREADS = typer.Option(1, help="onnxruntime intra-op threads.")


def _model(export_dir: Path, precision: str, threads: int):
    from ..runtime.session import ExportedModel

    return ExportedModel(export_dir, precision, threads)


def _done(out: Path, size: tuple[int, int], what: str) -> None:
    # Fix (here and below): markup=False, or a path like "out/[/x].png" is parsed as Rich
    # markup and the command dies with a MarkupError traceback after writing the file.
    console.print(f"wrote {out} ({size[0]}x{size[1]} px): {what}", highlight=False, markup=False)


@app.command(epilog="Example:\n\n  edgevae sample --n 16 --out grid.png --seed 1")
def sample(
    export_dir: Path = EXPORT_DIR,
    n: int = typer.Option(16, help="Number of images."),
    out: Path = typer.Option(Path("grid.png"), help="PNG to write."),
    seed: int = typer.Option(0, help="Seed for z ~ N(0, I)."),
    precision: str = PRECISION,
    nrow: int = typer.Option(None, help="Images per row (default ceil(sqrt(n)))."),
    temperature: float = typer.Option(1.0, help="Scale of z; < 1 gives cleaner, less varied."),
    threads: int = THREADS,
) -> None:
    """Decode random z from the prior into a PNG grid (int8 decoder by default)."""
    from ..runtime.generate import sample as run
    from ..runtime.images import save_grid

    require(n >= 1, f"--n must be >= 1, got {n}")
    require(nrow is None or nrow >= 1, f"--nrow must be >= 1, got {nrow}")
    check_output_path(out)
    model = _model(export_dir, precision, threads)
    size = save_grid(out, run(model, n, seed, temperature), nrow)
    _done(out, size, f"{n} samples from the {precision} decoder")


@app.command(epilog="Example:\n\n  edgevae reconstruct --n 8 --out recon.png")
def reconstruct(
    export_dir: Path = EXPORT_DIR,
    data: str = typer.Option(None, help="Images to encode (default: the bundled 5k MNIST)."),
    n: int = typer.Option(8, help="Number of images."),
    out: Path = typer.Option(Path("recon.png"), help="PNG to write."),
    seed: int = typer.Option(0, help="Seed of the data split."),
    precision: str = PRECISION,
    threads: int = THREADS,
) -> None:
    """Encode test images and decode z = mu: originals on top, reconstructions below."""
    from ..data.core import load_images
    from ..runtime.generate import reconstruct as run
    from ..runtime.images import save_grid

    require(n >= 1, f"--n must be >= 1, got {n}")
    check_output_path(out)
    model = _model(export_dir, precision, threads)
    x, _ = load_images(data, split="test", seed=seed)
    size = save_grid(out, run(model, x[:n]), nrow=min(n, len(x)))
    _done(out, size, f"{min(n, len(x))} originals (top) and reconstructions (bottom)")


@app.command(epilog="Example:\n\n  edgevae interpolate --a 0 --b 7 --steps 10 --out interp.png")
def interpolate(
    export_dir: Path = EXPORT_DIR,
    data: str = typer.Option(None, help="Images to pick from (default: the bundled 5k MNIST)."),
    a: int = typer.Option(0, help="Index of the first test image."),
    b: int = typer.Option(1, help="Index of the second test image."),
    steps: int = typer.Option(10, help="Images along the path, ends included."),
    out: Path = typer.Option(Path("interp.png"), help="PNG to write."),
    precision: str = PRECISION,
    threads: int = THREADS,
) -> None:
    """Decode the straight line between two encoded test images."""
    from ..data.core import load_images
    from ..runtime.generate import interpolate as run
    from ..runtime.images import save_grid

    require(steps >= 2, f"--steps must be >= 2, got {steps}")
    check_output_path(out)
    model = _model(export_dir, precision, threads)
    x, _ = load_images(data, split="test", seed=0)
    require(0 <= a < len(x) and 0 <= b < len(x), f"--a/--b must be in 0..{len(x) - 1}")
    size = save_grid(out, run(model, x[a], x[b], steps), nrow=steps)
    _done(out, size, f"{steps} steps from test image {a} to {b}")


@app.command(epilog="Example:\n\n  edgevae manifold --steps 20 --out manifold.png")
def manifold(
    export_dir: Path = EXPORT_DIR,
    steps: int = typer.Option(20, help="Grid size per side."),
    dims: str = typer.Option("0,1", help="The two latent dims to vary (others are 0)."),
    out: Path = typer.Option(Path("manifold.png"), help="PNG to write."),
    precision: str = PRECISION,
    threads: int = THREADS,
) -> None:
    """The learned manifold (paper Fig. 4): a grid through the inverse Gaussian CDF."""
    from ..runtime.generate import manifold as run
    from ..runtime.images import save_grid

    pair = parse_int_list(dims, "--dims")
    require(len(pair) == 2, "--dims takes exactly two latent dims, e.g. 0,1")
    check_output_path(out)
    model = _model(export_dir, precision, threads)
    size = save_grid(out, run(model, steps, (pair[0], pair[1])), nrow=steps)
    _done(out, size, f"{steps}x{steps} manifold over dims {pair[0]},{pair[1]}")


@app.command(epilog="Example:\n\n  edgevae encode --data digits.npy --out z.npy")
def encode(
    data: str = typer.Option(..., help="Images: any data kind edgevae reads, or KIND:PATH."),
    out: Path = typer.Option(..., help="Where to write mu as .npy [N, L]."),
    split: str = typer.Option("test", help="Which split of the data."),
    export_dir: Path = EXPORT_DIR,
    precision: str = PRECISION,
    threads: int = THREADS,
) -> None:
    """Encode images to posterior means (mu), saved as a float32 .npy."""
    from .. import fsio
    from ..data.core import load_images

    check_output_path(out)
    require(out.suffix == ".npy", f"--out: {out} should end in .npy")
    model = _model(export_dir, precision, threads)
    x, _ = load_images(data, split=split, seed=0)
    mu, _ = model.encode(x)
    fsio.write_bytes(out, _npy_bytes(mu))
    console.print(f"wrote {out}: mu {list(mu.shape)}", highlight=False, markup=False)


@app.command(epilog="Example:\n\n  edgevae decode --z z.npy --out decoded.png")
def decode(
    z: Path = typer.Option(..., help="A float .npy of latent vectors [N, L]."),
    out: Path = typer.Option(..., help=".png for a grid, or .npy for the raw [N, D] means."),
    export_dir: Path = EXPORT_DIR,
    precision: str = PRECISION,
    threads: int = THREADS,
) -> None:
    """Decode latent vectors from a .npy into images (PNG grid) or means (.npy)."""
    from .. import fsio
    from ..data.npy import read_npy
    from ..runtime.images import save_grid

    check_output_path(out)
    require(out.suffix in (".png", ".npy"), f"--out: {out} should end in .png or .npy")
    model = _model(export_dir, precision, threads)
    zs = read_npy(z)
    means = model.decode(zs)
    if out.suffix == ".npy":
        fsio.write_bytes(out, _npy_bytes(means))
        console.print(f"wrote {out}: {list(means.shape)}", highlight=False, markup=False)
    else:
        _done(out, save_grid(out, model.images(means)), f"{len(zs)} decoded z")


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()
