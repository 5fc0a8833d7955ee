"""`edgevae figures`: Kingma & Welling's pictures, reproduced from one command with one seed.

Trains (or reuses) one run per dataset and latent size under `work/`, then writes into `out/`:
- `manifold_mnist.png` (and `manifold_frey.png` with Frey Face): the learned 2-D manifold,
  the paper's Fig. 4, decoded by the fp32 torch model on `generate.manifold_z`'s grid;
- `samples_mnist_L{L}.png`: 100 random samples per latent size, the paper's Fig. 5;
- `bound_vs_samples.png`: the ELBO (higher is better) against training samples seen, train
  dashed and test solid per latent size, the paper's Fig. 2 (one panel per dataset);
- `training_curves.png`: validation -ELBO and seconds per epoch of every run;
- `figures.json`: each figure, the runs behind it, the command line, the seed, the wall time.

A run is reused when its config matches the one asked for and it finished all its epochs, so
a rerun only redraws. torch and matplotlib are imported when needed, not at import time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import extras, fsio
from ..errors import UsageError
from ..runtime import images

DEFAULT_LATENTS = (2, 5, 10, 20)
MNIST_HIDDEN = [500]  # the paper's MNIST size
FREY_HIDDEN = [200]  # the paper's Frey Face size
EPOCHS_BUNDLED = 50  # 4,000 training digits: 200k samples seen
EPOCHS_DATA = 20  # e.g. 50,000 MNIST digits: 1M samples seen
EPOCHS_FREY = 200  # ~1,600 faces: 315k samples seen
QUICK_EPOCHS = 2
MANIFOLD_STEPS = 20
N_SAMPLES = 100

Progress = Callable[[str, int, int], None]


@dataclass
class RunSpec:
    name: str
    dataset: str  # mnist | frey
    data: str | None
    hidden: list[int]
    latent_dim: int
    epochs: int
    seed: int
    threads: int = 1

    def configs(self):
        from ..config import ModelConfig, TrainConfig

        # train() takes input size, image shape and likelihood from the data.
        model = ModelConfig(784, (28, 28), hidden=list(self.hidden), latent_dim=self.latent_dim)
        train = TrainConfig(
            epochs=self.epochs,
            batch_size=100,
            lr=1e-3,
            seed=self.seed,
            threads=self.threads,
            data=self.data,
            binarize="none",
        )
        return model, train


def run_is_complete(run_dir: Path, spec: RunSpec) -> bool:
    """Trained to the end with the same model, data and training settings (threads aside)."""
    try:
        cfg = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        rows = [
            json.loads(line)
            for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    except (OSError, ValueError):
        return False
    if not (run_dir / "model.safetensors").is_file():
        return False
    model_cfg, train_cfg = spec.configs()
    m, t = cfg.get("model", {}), cfg.get("train", {})
    want = train_cfg.to_dict()
    same = (
        m.get("hidden") == model_cfg.hidden
        and m.get("latent_dim") == model_cfg.latent_dim
        and m.get("activation") == model_cfg.activation
        and all(
            t.get(key) == want[key]
            for key in ("epochs", "batch_size", "lr", "optimizer", "seed", "binarize", "data")
        )
    )
    return same and len(rows) == spec.epochs and rows[-1].get("epoch") == spec.epochs


class _Reporter:
    """train()'s reporter protocol, forwarded to a progress callback (one tick per epoch)."""

    def __init__(self, stage: str, epochs: int, progress: Progress):
        self.stage, self.epochs, self.progress = stage, epochs, progress

    def start_epoch(self, epoch: int, epochs: int, n_batches: int, done: int) -> None:
        self.progress(self.stage, epoch - 1, epochs)

    def step(self, loss: float) -> None:
        pass

    def end_epoch(self, row: dict[str, Any]) -> None:
        self.progress(self.stage, int(row["epoch"]), self.epochs)


def ensure_run(spec: RunSpec, work: Path, progress: Progress) -> dict[str, Any]:
    """Train the run unless a complete one is there; returns its summary for figures.json."""
    from ..training.loop import train

    run_dir = work / spec.name
    reused = run_is_complete(run_dir, spec)
    seconds = 0.0
    if not reused:
        reporter = _Reporter(f"training {spec.name}", spec.epochs, progress)
        model_cfg, train_cfg = spec.configs()
        t0 = time.perf_counter()
        train(model_cfg, train_cfg, run_dir, overwrite=True, reporter=reporter)
        seconds = time.perf_counter() - t0
    rows = _metrics(run_dir)
    last = rows[-1]
    return {
        "name": spec.name,
        "dataset": spec.dataset,
        "run_dir": str(run_dir),
        "latent_dim": spec.latent_dim,
        "hidden": spec.hidden,
        "epochs": spec.epochs,
        "reused": reused,
        "train_seconds": round(seconds, 2),
        "samples_seen": last.get("samples_seen"),
        "final": {k: last.get(k) for k in ("train_neg_elbo", "valid_neg_elbo", "test_neg_elbo")},
    }


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    text = (run_dir / "metrics.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _decode(run_dir: Path, z: np.ndarray) -> np.ndarray:
    """Mean images [N, H, W] from the run's fp32 torch decoder."""
    from ..training.evaluate import decode_mean, load_model

    model, _ = load_model(run_dir)
    return decode_mean(model, z).reshape(len(z), *model.cfg.image_shape)


def _command_line(command: Sequence[str] | None) -> str:
    import shlex

    return " ".join(shlex.quote(c) for c in command) if command else ""


@dataclass
class _Plan:
    """The runs the figures need and the datasets they cover."""

    specs: list[RunSpec]
    latents: list[int]
    datasets: list[tuple[str, str, list[int]]]  # (key, title, hidden sizes)
    epochs: dict[str, int]


class _Figures:
    """Figures written so far, as figures.json lists them."""

    def __init__(self, out_dir: Path, runs: dict[str, dict[str, Any]]):
        self.out_dir, self.runs, self.items = out_dir, runs, []

    def run_dir(self, name: str) -> Path:
        return Path(self.runs[name]["run_dir"])

    def record(self, file: str, kind: str, what: str, names: list[str]) -> None:
        self.items.append({"file": file, "kind": kind, "what": what, "runs": names})


def make_figures(
    out_dir: Path = Path("docs/figures"),
    *,
    data: str | None = None,
    frey: str | None = None,
    epochs: int | None = None,
    frey_epochs: int | None = None,
    seed: int = 0,
    quick: bool = False,
    work: Path = Path("runs/figures"),
    latents: Sequence[int] = DEFAULT_LATENTS,
    hidden: Sequence[int] | None = None,
    frey_hidden: Sequence[int] | None = None,
    threads: int = 1,
    command: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train what is missing under `work` and draw every figure into `out_dir`; returns what
    figures.json holds. `quick` trains 2 epochs per run (a smoke test); `command` is recorded
    as the command line that made the figures."""
    extras.require("the paper's figures", "train", extras.TRAIN)
    extras.require("the paper's figures", "plots", ("matplotlib",))
    progress = progress or (lambda stage, done, total: None)
    start = time.perf_counter()
    out_dir, work = Path(out_dir), Path(work)
    _check_options(out_dir, latents, epochs, frey_epochs, threads)
    plan = _plan(data, frey, epochs, frey_epochs, quick, latents, hidden, frey_hidden)
    for spec in plan.specs:
        spec.seed, spec.threads = seed, threads
    runs = {spec.name: ensure_run(spec, work, progress) for spec in plan.specs}
    figs = _Figures(out_dir, runs)
    progress("drawing", 0, 1)
    _manifold_figures(figs, plan)
    _sample_figures(figs, plan, seed)
    _bound_figure(figs, plan)
    _training_figure(figs, plan)
    progress("drawing", 1, 1)

    from ..runtime.manifest import timestamp, versions

    report = {
        "command": _command_line(command),
        "seed": seed,
        "quick": quick,
        "data": data,
        "frey": frey,
        "epochs": plan.epochs,
        "work": str(work),
        "threads": threads,
        "created": timestamp(),
        "wall_seconds": round(time.perf_counter() - start, 2),
        "figures": figs.items,
        "runs": list(runs.values()),
        "versions": versions(),
    }
    fsio.write_json(out_dir / "figures.json", report)
    return report


def _check_options(
    out_dir: Path,
    latents: Sequence[int],
    epochs: int | None,
    frey_epochs: int | None,
    threads: int,
) -> None:
    """A UsageError naming the argument, before anything is trained."""
    sizes = sorted({int(v) for v in latents})
    if not sizes or sizes[0] < 1:
        raise UsageError(f"must be integers >= 1, got {sizes}", param="latents")
    if 2 not in sizes:
        raise UsageError("must include 2 (the 2-D manifold figure needs it)", param="latents")
    for name, value in (("epochs", epochs), ("frey_epochs", frey_epochs)):
        if value is not None and value < 1:
            raise UsageError(f"must be >= 1, got {value}", param=name)
    if threads < 0:
        raise UsageError(f"must be >= 0 (0 = all cores), got {threads}", param="threads")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} is not a directory", param="out_dir")


def _plan(
    data: str | None,
    frey: str | None,
    epochs: int | None,
    frey_epochs: int | None,
    quick: bool,
    latents: Sequence[int],
    hidden: Sequence[int] | None,
    frey_hidden: Sequence[int] | None,
) -> _Plan:
    """One run per dataset and latent size, with the paper's sizes unless told otherwise (the
    caller sets each run's seed and threads)."""
    sizes = sorted({int(v) for v in latents})
    n_epochs = epochs or (QUICK_EPOCHS if quick else (EPOCHS_DATA if data else EPOCHS_BUNDLED))
    mnist_hidden = list(hidden) if hidden else list(MNIST_HIDDEN)
    specs = [RunSpec(f"mnist-L{L}", "mnist", data, mnist_hidden, L, n_epochs, 0) for L in sizes]
    datasets = [("mnist", "MNIST", mnist_hidden)]
    n_epochs_of = {"mnist": n_epochs}
    if frey:
        n_frey = frey_epochs or (QUICK_EPOCHS if quick else EPOCHS_FREY)
        frey_hid = list(frey_hidden or hidden or FREY_HIDDEN)
        specs += [RunSpec(f"frey-L{L}", "frey", frey, frey_hid, L, n_frey, 0) for L in sizes]
        datasets.append(("frey", "Frey Face", frey_hid))
        n_epochs_of["frey"] = n_frey
    return _Plan(specs, sizes, datasets, n_epochs_of)


def _manifold_figures(figs: _Figures, plan: _Plan) -> None:
    """The learned 2-D manifold of each dataset (paper Fig. 4)."""
    from ..runtime.generate import manifold_z

    for key, title, _ in plan.datasets:
        name = f"{key}-L2"
        pics = _decode(figs.run_dir(name), manifold_z(2, MANIFOLD_STEPS))
        file = f"manifold_{key}.png"
        images.save_grid(figs.out_dir / file, pics, nrow=MANIFOLD_STEPS)
        what = (
            f"{title} learned 2-D manifold (paper Fig. 4): {MANIFOLD_STEPS}x{MANIFOLD_STEPS} "
            "grid of z through the inverse Gaussian CDF, fp32 torch decoder"
        )
        figs.record(file, "manifold", what, [name])


def _sample_figures(figs: _Figures, plan: _Plan, seed: int) -> None:
    """Random MNIST samples for each latent size (paper Fig. 5)."""
    from ..runtime.generate import prior_z

    for L in plan.latents:
        name = f"mnist-L{L}"
        pics = _decode(figs.run_dir(name), prior_z(N_SAMPLES, L, seed))
        file = f"samples_mnist_L{L}.png"
        images.save_grid(figs.out_dir / file, pics, nrow=10)
        what = f"{N_SAMPLES} random MNIST samples, latent size {L} (paper Fig. 5), seed {seed}"
        figs.record(file, "samples", what, [name])


def _bound_figure(figs: _Figures, plan: _Plan) -> None:
    """The ELBO against training samples seen, one panel per dataset (paper Fig. 2)."""
    from . import plots

    panels = []
    for key, title, hidden in plan.datasets:
        curves = []
        for L in plan.latents:
            rows = _metrics(figs.run_dir(f"{key}-L{L}"))
            curves.append(
                {
                    "label": f"Nz = {L}",
                    "samples": [r["samples_seen"] for r in rows],
                    "train": [-r["train_neg_elbo"] for r in rows],
                    "test": [-r["test_neg_elbo"] for r in rows],
                }
            )
        panels.append({"title": f"{title} ({hidden} hidden)", "curves": curves})
    plots.bound_plot(panels, figs.out_dir / "bound_vs_samples.png")
    what = (
        "ELBO per image (higher is better) vs training samples seen, train dashed (running "
        "average during each epoch) and test solid (end of each epoch), per latent size "
        "(paper Fig. 2)"
    )
    figs.record("bound_vs_samples.png", "lower_bound", what, [s.name for s in plan.specs])


def _training_figure(figs: _Figures, plan: _Plan) -> None:
    """Validation -ELBO and seconds per epoch of every run, one row per dataset."""
    from . import plots

    groups = [
        {
            "title": title,
            "runs": [
                {"label": f"Nz = {s.latent_dim}", "rows": _metrics(figs.run_dir(s.name))}
                for s in plan.specs
                if s.dataset == key
            ],
        }
        for key, title, _ in plan.datasets
    ]
    plots.training_plot(groups, figs.out_dir / "training_curves.png")
    what = (
        "validation -ELBO (lower is better) and seconds per epoch of every run, one row per dataset"
    )
    figs.record("training_curves.png", "training", what, [s.name for s in plan.specs])
