"""The public Python API: the functions `import edgevae` offers, and what they return.

`load` needs only the base install (numpy, onnxruntime); `train`, `export`, `quantize` and
`evaluate` need the `train` extra and say so in a `MissingExtraError` when it is missing. The
CLI calls these same functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import extras
from .errors import UsageError

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def _need_train_extra(feature: str, modules: tuple[str, ...] = ("torch", "onnx")) -> None:
    extras.require(feature, "train", modules)


def load(export_dir: str | Path = "export", precision: str = "int8", threads: int = 1):
    """The exported model in `export_dir`, run with onnxruntime (no torch).

    precision: "int8" (the quantized pair the export chose), "fp32", "firmware" (the static
    int8 pair the C firmware computes bit for bit) or "int4" (that encoder with the firmware's
    4-bit decoder).
    Returns an `edgevae.Model`: `sample`, `encode`, `decode`, `reconstruct`, `interpolate`,
    `manifold`, `heldout`, `evaluate`.
    """
    from .runtime.model import Model

    return Model(export_dir, precision, threads)


@dataclass
class TrainedRun:
    """A finished (or stopped) training: its run dir and the last epoch's bounds in nats."""

    dir: Path
    epochs: int
    seconds: float
    valid_neg_elbo: float
    test_neg_elbo: float
    metrics: list[dict[str, Any]] = field(default_factory=list, repr=False)


def train(
    data: str | None = None,
    *,
    run_dir: str | Path = "runs/default",
    epochs: int = 10,
    preset: str | None = None,
    hidden: Sequence[int] | None = None,
    latent_dim: int | None = None,
    activation: str | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    optimizer: str | None = None,
    binarize: str | None = None,
    lr_patience: int | None = None,
    kl_warmup: int | None = None,
    seed: int | None = None,
    threads: int = 1,
    max_minutes: float | None = None,
    classes: Sequence[int | str] | None = None,
    conditional: bool | None = None,
    qat_bits: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    reporter: Any = None,
) -> TrainedRun:
    """Train the VAE on `data` (a path, `KIND:PATH`, a named set such as "mnist", downloaded
    once into the cache, or None for the bundled 5k MNIST) into `run_dir`.

    Options left as None take their defaults (`training.options.DEFAULTS`: preset "default"
    = 400 hidden units and 20 latent dims ("mcu" 128/8, "paper" 500/20; `hidden`/`latent_dim`
    override), relu, batch 100, Adam at lr 1e-3, no binarization, seed 0). `classes` keeps only
    those classes (positions or names; kept in the run's config, so evaluation and export use
    the same subset). `conditional` trains q(z | x, y) and p(x | z, y) on labelled data (y
    one-hot, Sohn et al. 2015), so that `Model.sample(n, label=...)` draws a chosen class; its
    latent size defaults to 4 (`training.options.CONDITIONAL_LATENT_DIM`).

    `resume` continues the run to `epochs` in total with the run's own options: an option given
    here that differs from them raises `ResumeConflict` (only `epochs`, `threads` and
    `max_minutes` belong to this call, and `qat_bits`: 4 fine-tunes the decoder
    quantization-aware for the 4-bit firmware, `training.qat`, best as a fine-tune of a trained
    run with `resume`, which the run keeps). `overwrite` starts an existing run dir over.
    Deterministic for a seed and thread count.
    """
    _need_train_extra("training", extras.TRAIN)
    from .training.loop import train as run_training
    from .training.options import ResumeConflict, new_configs, resume_conflicts

    given = {
        "data": data, "preset": preset, "hidden": hidden, "latent_dim": latent_dim,
        "activation": activation, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
        "binarize": binarize, "lr_patience": lr_patience, "kl_warmup": kl_warmup, "seed": seed,
        "classes": classes, "conditional": conditional,
    }  # fmt: skip
    if resume and Path(run_dir, "config.json").is_file():
        conflicts = resume_conflicts(Path(run_dir), given)
        if conflicts:
            raise ResumeConflict(Path(run_dir), conflicts)
    model_cfg, train_cfg = new_configs(given, epochs, threads, max_minutes, qat_bits or 0)
    result = run_training(
        model_cfg, train_cfg, Path(run_dir), resume=resume, overwrite=overwrite, reporter=reporter
    )
    last = result.rows[-1] if result.rows else {}
    return TrainedRun(
        dir=Path(run_dir),
        epochs=result.epochs,
        seconds=result.seconds,
        valid_neg_elbo=float(last.get("valid_neg_elbo", float("nan"))),
        test_neg_elbo=float(last.get("test_neg_elbo", float("nan"))),
        metrics=result.rows,
    )


@dataclass
class Exported:
    """An fp32 export: where it is, and ONNX-vs-torch parity per model (max |diff| per output)."""

    dir: Path
    parity: dict[str, dict[str, float]]
    manifest: dict[str, Any] = field(repr=False)


def export(run_dir: str | Path = "runs/default", export_dir: str | Path = "export") -> Exported:
    """Export the run's encoder and decoder to ONNX fp32 (checked by the ONNX checker and
    against torch on 1,000 inputs), with a manifest and a few hundred held-out test images.
    Any int8 models of an earlier export in `export_dir` are removed: quantize again."""
    _need_train_extra("export")
    from .training.export import export_run

    export_dir = Path(export_dir)
    if export_dir.exists() and not export_dir.is_dir():
        raise UsageError(f"{export_dir} is not a directory", param="export_dir")
    results, man = export_run(Path(run_dir), export_dir)
    return Exported(export_dir, {p.name: p.max_abs_diff for p in results}, man)


def quantize(
    export_dir: str | Path = "export",
    *,
    budget_nats: float = 0.1,
    recipe: str = "auto",
    calib: int = 5000,
    data: str | None = None,
    run_dir: str | Path | None = None,
    seed: int = 0,
    force: bool = False,
    also: Sequence[str] = (),
    explain: bool = False,
    progress: Progress | None = None,
):
    """Quantize the export's fp32 pair to int8: measure this CPU's candidate recipes (or
    `recipe`), keep the fastest whose NLL increase on held-out images is within
    `budget_nats` (mixed precision when none is), and always write the firmware pair. With
    `explain`, the report and manifest hold the nats each quantized node costs. Calibration
    and held-out images are the run's own data (found through `run_dir` or the manifest)
    unless `data` is given.
    Raises `BudgetError` when no recipe fits (unless `force`). Returns the `QuantReport`."""
    _need_train_extra("quantization", ("onnx",))
    from .quant.search import check_options, quantize_export
    from .runtime import manifest

    check_options(recipe, budget_nats, calib, list(also))
    export_dir = Path(export_dir)
    man = manifest.read(export_dir)
    train_cfg = _run_train_config(export_dir, man, run_dir, data)
    from .data.runs import load_run_data

    ds = load_run_data(train_cfg, man["image_shape"], data)
    _check_calibration(man, min(calib, len(ds.train)))
    labels = {}
    if man.get("classes"):  # a conditional model: the images' labels, in its classes
        from .runtime.labels import match_one_hot

        for key, split in (("train_labels", "train"), ("heldout_labels", "valid")):
            labels[key] = match_one_hot(man["classes"], ds.classes, ds.labels(split))
    return quantize_export(
        export_dir,
        ds.train,
        ds.valid,
        **labels,
        recipe=recipe,
        budget_nats=budget_nats,
        calib=calib,
        seed=seed,
        force=force,
        extra_candidates=list(also),
        explain=explain,
        progress=progress,
    )


def _check_calibration(man: dict[str, Any], n: int) -> None:
    """Refuse a calibration that would not fit in the memory limit: onnxruntime's calibrators
    keep every intermediate output of every calibration row (n images through the encoder,
    2n latent vectors through the decoder, a conditional model's one-hot labels beside both)
    and merge them into one more copy."""
    from . import limits

    h, w = man["image_shape"]
    hidden = (man.get("model") or {}).get("hidden")
    width = 2 * sum(v for v in hidden if isinstance(v, int)) if isinstance(hidden, list) else 0
    d, lat, c = h * w, man["latent_dim"], len(man.get("classes") or ())
    per_image = (d + c + width + 2 * lat) + 2 * (lat + c + width + 2 * d)
    need = 2 * 4 * n * per_image + 4 * n * (d + 2 * lat + 3 * c)
    limits.check(need, f"calibrating on {n} images of {h}x{w}", "calib")


def _run_train_config(
    export_dir: Path, man: dict[str, Any], run_dir: str | Path | None, data: str | None
) -> dict[str, Any]:
    """The train config of the run behind an export: its run dir's config.json when that is
    reachable (it names the data with its full path), else the manifest's (data by name)."""
    from .training.runconfig import CONFIG, load_config

    if run_dir is not None:
        return load_config(Path(run_dir))["train"]
    if man.get("run_dir") and (Path(man["run_dir"]) / CONFIG).is_file():
        return load_config(Path(man["run_dir"]))["train"]
    from .data.named import is_named

    train = dict(man.get("train") or {})
    if data is None and train.get("data") not in (None, "default") and not is_named(train["data"]):
        raise UsageError(
            f"{export_dir} was trained on {train['data']!r}, which cannot be found from the "
            "export alone; give the run dir or the data",
            param="data",
        )
    return train


def threshold(
    export_dir: str | Path = "export",
    *,
    fpr: float = 0.01,
    score: str | None = None,
    precision: str = "int8",
    k: int = 64,
    data: str | None = None,
    run_dir: str | Path | None = None,
    images: Any = None,
):
    """Calibrate the anomaly threshold at false-positive rate `fpr` on normal images and store
    it in the export's manifest. The normal images are the run's validation split (found as
    for `quantize`), `data`'s validation split, or `images` given directly. Returns the
    `runtime.anomaly.Threshold`. score: a `runtime.score.SCORES` kind, by default `excess`;
    for the kinds a board computes (`runtime.score.BOARD_SCORES`: excess, elbo) the firmware's own
    threshold is stored too: for its int8 decoder, or its 4-bit one when `precision` is "int4"."""
    from .runtime import anomaly
    from .runtime.manifest import pair_files
    from .runtime.score import BOARD_SCORES, DEFAULT, check_kind

    score = DEFAULT if score is None else score
    check_kind(score, k)  # the options first: the images may take a while to read
    if not 0.0 < fpr < 1.0:
        raise UsageError(f"must be in (0, 1), got {fpr}", param="fpr")
    model = load(export_dir, precision)
    if images is not None:
        x, desc = images, {"source": "images"}
    else:
        from .data.runs import load_run_data

        man = model.manifest
        train_cfg = _run_train_config(Path(export_dir), man, run_dir, data)
        x = load_run_data(train_cfg, man["image_shape"], data).valid
        desc = {"source": data or train_cfg.get("data") or "default", "split": "valid"}
    found = anomaly.calibrate(model, x, fpr=fpr, kind=score, k=k, data=desc)
    if score in BOARD_SCORES:
        board = "int4" if precision == "int4" else "firmware"  # the board pair scored
        found.firmware = anomaly.firmware_threshold(
            Path(export_dir), model.as_input(x), fpr, score, 4 if board == "int4" else 8
        )
        if found.firmware is not None:  # the static pair it was computed with
            names = pair_files(model.manifest, board)
            files = model.manifest.get("files") or {}
            found.models.update({n: files[n]["sha256"] for n in names if n in files})
    anomaly.store(Path(export_dir), found)
    return found


def evaluate(
    run_dir: str | Path = "runs/default",
    *,
    data: str | None = None,
    split: str = "test",
    k: int = 5000,
    limit: int | None = None,
    seed: int = 0,
    threads: int = 0,
    progress: Callable[[int, int], None] | None = None,
):
    """Score a trained run with torch in nats per image: -ELBO (one sample and z = mu), its
    reconstruction and KL parts, the k-sample importance-weighted NLL and the active units.
    Returns `runtime.metrics.Bounds`."""
    _need_train_extra("evaluation", ("torch", "safetensors"))
    from .training.evaluate import evaluate_run

    return evaluate_run(Path(run_dir), data, split, k, seed, limit, threads, progress)
