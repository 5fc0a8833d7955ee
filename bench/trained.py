"""One trained, exported (and quantized) model per benchmark setting, kept for --reuse.

Shared by bench/one_class.py and bench/ood_pairs.py (run as scripts: this folder is on their
import path).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import edgevae
from edgevae import fsio
from edgevae.runtime.score import SCORES


def trained_export(
    work: Path, settings: dict, train_kwargs: dict, *, quantize: bool = True, reuse: bool = False
) -> tuple[Path, dict]:
    """`edgevae.train(**train_kwargs)` into work/run, export to work/export and, with
    `quantize`, `edgevae.quantize` there; work/settings.json records `settings`, the seconds,
    the validation -ELBO and the chosen recipe. With `reuse`, a model recorded with the same
    settings (and quantized, when asked) is kept. Returns (export dir, that record)."""
    run_dir, export_dir, stamp = work / "run", work / "export", work / "settings.json"
    if reuse and stamp.is_file() and (export_dir / "manifest.json").is_file():
        info = json.loads(stamp.read_text())
        if info["settings"] == settings and (info["recipe"] or not quantize):
            return export_dir, info
    t0 = time.perf_counter()
    run = edgevae.train(**train_kwargs, run_dir=run_dir, overwrite=True)
    edgevae.export(run_dir, export_dir)
    recipe = edgevae.quantize(export_dir, run_dir=run_dir).chosen if quantize else None
    info = {
        "settings": settings, "seconds": time.perf_counter() - t0, "train_seconds": run.seconds,
        "valid_neg_elbo": run.valid_neg_elbo, "recipe": recipe,
    }  # fmt: skip
    fsio.write_json(stamp, info)
    return export_dir, info


def add_model_args(ap: argparse.ArgumentParser, stem: str, work: str) -> None:
    """The options both scripts share: the model trained, the scores, and where things go
    (build/bench/<work> for models, build/bench/<stem>.json and .md for the results)."""
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--latent", type=int, default=20)
    ap.add_argument("--hidden", default="400", help="Hidden sizes, comma-separated.")
    ap.add_argument("--scores", default=",".join(SCORES))
    ap.add_argument("--k", type=int, default=64, help="Importance samples for iwae.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("build/bench") / work)
    ap.add_argument(
        "--reuse", action="store_true", help="Keep models trained with the same settings."
    )
    ap.add_argument("--json", type=Path, default=Path(f"build/bench/{stem}.json"))
    ap.add_argument("--markdown", type=Path, default=Path(f"build/bench/{stem}.md"))


def parse_model_args(ap: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, with --hidden as a list of ints and --scores as a tuple of names."""
    a = ap.parse_args()
    a.hidden = [int(h) for h in a.hidden.split(",")]
    a.scores = tuple(s.strip() for s in a.scores.split(",") if s.strip())
    return a


def write_results(a: argparse.Namespace, result: dict, markdown) -> None:
    """result as JSON at --json, markdown(result) at --markdown and on stdout."""
    text = markdown(result)
    fsio.write_json(a.json, result)
    fsio.write_text(a.markdown, text)
    print(text)
