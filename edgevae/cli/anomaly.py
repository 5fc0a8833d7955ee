"""`edgevae score`, `threshold`, `detect` and `anomaly-bench`: anomaly detection, torch-free.

Scores are nats per image, higher = more anomalous (see `runtime/score.py` for the kinds).
"""

from __future__ import annotations

import csv
import io
from enum import Enum
from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from .. import api, fsio
from ..runtime.score import BOARD_SCORES, DEFAULT, SCORES
from .common import (
    EXPORT_DIR,
    PRECISION,
    THREADS,
    Precision,
    app,
    check_output_path,
    check_suffix,
    console,
    err_console,
    wrote,
)
from .runtime import DATA, Split, _images

ScoreKind = Enum("ScoreKind", {k.replace("-", "_"): k for k in SCORES}, type=str)  # type: ignore[misc]


SCORE = typer.Option(
    ScoreKind(DEFAULT),
    "--score",
    help="excess: elbo minus the image's own per-pixel entropy (what no decoder can save; "
    "the default: see docs/anomaly.md); excess-ink: excess / sqrt(1 + the image's ink); elbo: "
    "-ELBO at z = mu (1 encoder + 1 decoder pass); iwae: k-sample -log p(x); complexity: elbo "
    "minus the image's PNG length (Serrà et al. 2020). The firmware computes excess or elbo.",
)
K = typer.Option(64, min=1, max=100_000, help="Importance samples (iwae only).")
JSON = typer.Option(None, "--json", help="Also write the result as JSON.")


def _check_json(path: Path | None) -> None:
    if path is not None:
        check_output_path(path, "--json")


def _labels(data: str | None, split: str, n: int) -> np.ndarray | None:
    """The split's labels when the data has them (the export's held-out images have none)."""
    if data is None or split == "all":
        return None
    from ..data.core import load_dataset

    ds = load_dataset(data, seed=0)
    labels = getattr(ds, f"{split}_labels", None)
    return labels if labels is not None and len(labels) == n else None


def _csv_text(result, labels: np.ndarray | None) -> str:
    """index,score_nats[,label],<parts...>: one row per image."""
    parts = sorted(k for k in result.parts if result.parts[k].shape == result.scores.shape)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["index", "score_nats", *(["label"] if labels is not None else []), *parts])
    for i, value in enumerate(result.scores):
        label = [int(labels[i])] if labels is not None else []
        writer.writerow([i, f"{value:.6f}", *label, *(f"{result.parts[p][i]:.6f}" for p in parts)])
    return buf.getvalue()


@app.command(
    epilog="Examples:\n\n  edgevae score --out scores.csv     # the export's held-out images\n\n"
    "  edgevae score --data ./digits.npz --score complexity --out scores.csv\n\n"
    "CSV columns: index, score_nats (higher = more anomalous), label (when the data has labels), "
    "then the parts: recon (-log p(x|z=mu)), kl, and per score floor (the image's own entropy), "
    "ink, excess, nll_iw, elbo, png_nats."
)
def score(
    out: Path = typer.Option(Path("scores.csv"), help="CSV to write, one row per image."),
    export_dir: Path = EXPORT_DIR,
    data: str = DATA,
    split: Split = typer.Option(Split.test, help="Which split of --data."),
    kind: ScoreKind = SCORE,
    k: int = K,
    seed: int = typer.Option(0, min=0, help="Seed for the iwae samples."),
    precision: Precision = PRECISION,
    threads: int = THREADS,
    json_path: Path = JSON,
) -> None:
    """Score images for anomaly detection: nats per image, higher = more anomalous."""
    from ..runtime.score import score_images
    from .progress import stage_progress

    check_suffix(out, (".csv",))
    _check_json(json_path)
    model = api.load(export_dir, precision.value, threads)
    x = _images(model, data, split.value)
    with stage_progress(err_console) as progress:
        result = score_images(
            model, x, kind.value, k=k, seed=seed,
            progress=lambda done, total: progress(f"scoring ({kind.value})", done, total),
        )  # fmt: skip
    fsio.write_text(out, _csv_text(result, _labels(data, split.value, len(x))))
    s = result.scores
    summary = {
        "n_images": len(s), "score": kind.value, "precision": precision.value,
        "k": k if kind == "iwae" else None, "mean": float(s.mean()),
        "median": float(np.median(s)), "min": float(s.min()), "max": float(s.max()),
    }  # fmt: skip
    if json_path is not None:
        fsio.write_json(json_path, {**summary, "csv": str(out)})
    wrote(out, f"{len(s)} {kind.value} scores, median {summary['median']:.2f} nats")


@app.command(
    epilog="Examples:\n\n  edgevae threshold --fpr 0.01\n\n"
    "  edgevae threshold --score complexity --data ./normal.npz\n\n"
    "The normal images are the run's validation split (or --data's): never trained on. The "
    "threshold, score kind, FPR target and measured FPR and the images' sha256 go into the "
    "export's manifest; for the scores a board computes (excess, the default, and elbo) also "
    "the firmware's own threshold at the same rate, for the header `edgevae firmware --score` "
    "writes (its kernel then computes that kind)."
)
def threshold(
    export_dir: Path = EXPORT_DIR,
    fpr: float = typer.Option(0.01, help="False-positive rate to allow on normal images."),
    kind: ScoreKind = SCORE,
    k: int = K,
    precision: Precision = PRECISION,
    data: str = typer.Option(None, help="Normal images (default: the run's own data)."),
    run_dir: Path = typer.Option(None, help="The run the export came from (to find its data)."),
    json_path: Path = JSON,
) -> None:
    """Calibrate the anomaly threshold on normal images and store it in the export."""
    _check_json(json_path)
    found = api.threshold(
        export_dir, fpr=fpr, score=kind.value, precision=precision.value, k=k, data=data,
        run_dir=run_dir,
    )  # fmt: skip
    if json_path is not None:
        fsio.write_json(json_path, found.to_dict())
    console.print(
        f"threshold {found.value:.3f} nats ({found.score}, {found.precision}): "
        f"{found.fpr_measured:.2%} of {found.n_images} normal images above it "
        f"(target {found.fpr_target:.2%}) -> {export_dir}/manifest.json",
        highlight=False,
        markup=False,
    )
    if found.firmware is not None:
        console.print(
            f"firmware threshold {found.firmware:.3f} nats ({found.score}, the board's integer "
            "score) for `edgevae firmware --score`",
            highlight=False,
            markup=False,
        )
    elif _has_firmware_pair(export_dir):
        why = (
            "the normal images are not whole 8-bit grey levels (the board reads uint8)"
            if found.score in BOARD_SCORES
            else f"a board computes {' or '.join(BOARD_SCORES)}, not {found.score} "
            f"(`edgevae threshold --score {BOARD_SCORES[0]}` stores one for "
            "`edgevae firmware --score`)"
        )
        console.print(f"no firmware threshold: {why}", highlight=False, markup=False)


def _has_firmware_pair(export_dir: Path) -> bool:
    from ..runtime import manifest

    man = manifest.read(export_dir)
    pair = man.get("firmware_encoder") and man.get("firmware_decoder")
    return bool(pair) and not man.get("classes")  # the firmware score is unconditional


@app.command(
    epilog="Example:\n\n  edgevae detect --data ./inspection.npz --out flagged.png --json f.json"
)
def detect(
    out: Path = typer.Option(Path("flagged.png"), help="PNG grid of the flagged images."),
    export_dir: Path = EXPORT_DIR,
    data: str = DATA,
    split: Split = typer.Option(Split.test, help="Which split of --data."),
    precision: Precision = typer.Option(
        None, help="The models to score with (default: those the threshold was calibrated for)."
    ),
    max_images: int = typer.Option(64, min=1, max=10_000, help="Most images in the grid."),
    threads: int = THREADS,
    json_path: Path = JSON,
) -> None:
    """Flag the images that score above the export's threshold; a grid of them with scores."""
    from ..runtime import anomaly, manifest
    from .anomaly_render import flagged_grid

    check_suffix(out, (".png",))
    _check_json(json_path)
    stored = anomaly.stored(manifest.read(export_dir), str(export_dir / manifest.NAME))
    model = api.load(export_dir, precision.value if precision else stored.precision, threads)
    x = _images(model, data, split.value)
    found = model.detect(x)
    index = np.flatnonzero(found.flagged)
    if json_path is not None:
        fsio.write_json(
            json_path,
            {
                "threshold": found.threshold.to_dict(), "n_images": len(x),
                "n_flagged": found.n_flagged, "flagged": index.tolist(),
                "scores": [float(found.scores.scores[i]) for i in index],
            },
        )  # fmt: skip
    console.print(
        f"{found.n_flagged} of {len(x)} images above the threshold "
        f"{found.threshold.value:.3f} nats ({found.threshold.score})",
        highlight=False,
    )
    if found.n_flagged:
        shown = index[np.argsort(-found.scores.scores[index])][:max_images]
        size = flagged_grid(out, model.images(x[shown]), found.scores.scores[shown], shown)
        wrote(out, f"{len(shown)} flagged images, most anomalous first", size)


@app.command(
    name="anomaly-bench",
    epilog="Examples:\n\n  edgevae anomaly-bench                   # vs inverted/rotated/noisy\n\n"
    "  edgevae anomaly-bench --anomalous fashion-mnist --json anomaly.json\n\n"
    "  edgevae anomaly-bench --precisions int8,firmware,int4   # what a board keeps",
)
def anomaly_bench(
    export_dir: Path = EXPORT_DIR,
    normal: str = typer.Option(
        None, help="Normal images: a data spec's test split (default: the export's held-out)."
    ),
    anomalous: str = typer.Option(
        "invert,rotate,noise",
        help="Comma-separated anomaly sets: invert, rotate, noise (transforms of the normal "
        "images) or data specs (their test split).",
    ),
    kinds: str = typer.Option(
        ",".join(SCORES), "--scores", help=f"Comma-separated score kinds ({', '.join(SCORES)})."
    ),
    precisions: str = typer.Option(
        "fp32,int8",
        help="Comma-separated precisions to compare: fp32, int8, firmware (the static pair the "
        "C firmware runs), int4 (with its 4-bit decoder).",
    ),
    k: int = K,
    limit: int = typer.Option(2000, min=0, help="Images per set (0 = all)."),
    seed: int = typer.Option(0, min=0, help="Seed for noise and iwae samples."),
    json_path: Path = JSON,
) -> None:
    """AUROC, AUPRC, FPR at 95 % TPR per score kind and precision side by side; latency."""
    from ..bench.anomaly import anomaly_bench as run
    from .progress import stage_progress

    _check_json(json_path)
    sets = tuple(a.strip() for a in anomalous.split(",") if a.strip())
    names = tuple(s.strip() for s in kinds.split(",") if s.strip())
    chosen = tuple(p.strip() for p in precisions.split(",") if p.strip())
    with stage_progress(err_console) as progress:
        report = run(
            export_dir, normal=normal, anomalous=sets, kinds=names, precisions=chosen, k=k,
            seed=seed, limit=limit or None, progress=progress,
        )  # fmt: skip
    table = Table(title=f"anomaly detection, {export_dir} (k={k} for iwae)")
    for col in ("anomalies", "score", "precision", "AUROC", "AUPRC", "FPR@95%TPR"):
        table.add_column(col, justify="left" if col in ("anomalies", "score") else "right")
    for r in report.rows:
        table.add_row(
            r.anomalies, r.score, r.precision, f"{r.auroc:.4f}", f"{r.auprc:.4f}",
            f"{r.fpr_at_95_tpr:.4f}",
        )  # fmt: skip
    console.print(table)
    for precision, lat in report.latency_us.items():
        console.print(
            f"{precision}: {report.latency_score} score p50 {lat['1']:.1f} us/image at batch 1, "
            f"{lat['256']:.1f} us/image at batch 256",
            highlight=False,
        )
    if json_path is not None:
        fsio.write_json(json_path, report.to_dict())
