"""Out-of-distribution pairs (issue 13), both directions, fp32 and int8 side by side; score speed.

Trains one model on all of MNIST and one on all of Fashion-MNIST (export, quantize: the int8
pair `edgevae quantize` chooses on this CPU), then `edgevae.bench.anomaly.anomaly_bench` on
each: normal = the model's own test split; anomalies = the other data set's test split (the
known failure: a likelihood model of clothing ranks digits as *more* likely), and the normal
images inverted, rotated 90 degrees and with Gaussian noise. AUROC, AUPRC, FPR at 95 % TPR per
score kind and precision.

Then the speed of `edgevae score` (the same `score_images` call): the MNIST model scoring
10,000 test images at batch 256, int8 vs fp32, interleaved medians in one run, images/s and
their ratio (the issue's goal: >= 1.3x).

Training: `edgevae train`'s defaults (784-400-20, batch 100, seed 0) except 30 epochs, the
same as bench/one_class.py. The JSON records the command, the CPU (model, kind, flags) and the
total seconds.

Usage: .venv/bin/python bench/ood_pairs.py [--mnist mnist | DIR] [--fashion fashion-mnist | DIR]
       [--epochs 30]
       [--latent 20] [--hidden 400] [--scores excess,elbo] [--limit 0] [--reuse]
       [--work build/bench/ood] [--json build/bench/ood_pairs.json]
       [--markdown build/bench/ood_pairs.md]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from trained import add_model_args, parse_model_args, trained_export, write_results

import edgevae
from edgevae.bench.anomaly import TRANSFORMS, anomaly_bench
from edgevae.data.core import load_dataset
from edgevae.quant.recipes import cpu_info
from edgevae.runtime import timing
from edgevae.runtime.score import DEFAULT, score_images

PRECISIONS = ("fp32", "int8")
SHOWN = {"invert": "inverted", "rotate": "rotated 90 degrees", "noise": "Gaussian noise 0.25"}


def train_one(a: argparse.Namespace, name: str, spec: str) -> tuple[Path, dict]:
    """Train, export and quantize a model of all of `spec` (or reuse it); its export dir."""
    want = {
        "data": spec, "epochs": a.epochs, "latent": a.latent, "hidden": a.hidden,
        "seed": a.seed,
    }  # fmt: skip
    kwargs = {
        "data": spec, "epochs": a.epochs, "latent_dim": a.latent, "hidden": a.hidden,
        "seed": a.seed,
    }  # fmt: skip
    return trained_export(a.work / name, want, kwargs, reuse=a.reuse)


def speed(export_dir: Path, spec: str, kinds: tuple[str, ...], rounds: int) -> dict:
    """Images/s of score_images on 10,000 test images (batch 256), int8 vs fp32, one run."""
    x = load_dataset(spec).test[:10000]
    models = {p: edgevae.load(export_dir, p) for p in PRECISIONS}
    out = {"n_images": len(x), "batch": 256, "rounds": rounds}
    for kind in kinds:
        for m in models.values():
            score_images(m, x[:256], kind)  # sessions created, caches warm
        calls = {p: (lambda m=m, k=kind: score_images(m, x, k)) for p, m in models.items()}
        t = timing.interleaved(calls, rounds=rounds, reps=1)
        per_s = {p: len(x) / (t[p].p50_us * 1e-6) for p in PRECISIONS}
        out[kind] = {"images_per_s": per_s, "int8_over_fp32": per_s["int8"] / per_s["fp32"]}
    return out


def markdown(result: dict) -> str:
    kinds = result["scores"]
    lines = [
        f"Out-of-distribution pairs: AUROC fp32 / int8, {result['epochs']} epochs, "
        f"784-{result['hidden']}-{result['latent']}, all test images; CPU {result['cpu']}.",
        f"Command: `{result['command']}`",
        "",
        "| model | anomalies | " + " | ".join(kinds) + " |",
        "|" + "---|" * (len(kinds) + 2),
    ]
    for model, rep in result["models"].items():
        sets = list(dict.fromkeys(r["anomalies"] for r in rep["rows"]))
        for s in sets:
            cells = []
            for k in kinds:
                got = {r["precision"]: r["auroc"] for r in rep["rows"]
                       if r["anomalies"] == s and r["score"] == k}  # fmt: skip
                cells.append(f"{got['fp32']:.4f} / {got['int8']:.4f}")
            shown = SHOWN.get(s, result["names"].get(s, s))
            lines.append(f"| {model} | {shown} | " + " | ".join(cells) + " |")
    sp = result.get("speed")
    if sp:
        lines.append("")
        for k in kinds:
            if k in sp:
                v = sp[k]["images_per_s"]
                lines.append(
                    f"`score_images` ({k}), {sp['n_images']} MNIST test images at batch "
                    f"{sp['batch']}: fp32 {v['fp32']:,.0f} images/s, int8 {v['int8']:,.0f} "
                    f"images/s: **{sp[k]['int8_over_fp32']:.2f}x** (median of {sp['rounds']} "
                    "interleaved rounds)."
                )
    return "\n".join(lines) + "\n"


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", default="mnist")
    ap.add_argument("--fashion", default="fashion-mnist")
    ap.add_argument("--limit", type=int, default=0, help="Images per set (0 = all).")
    ap.add_argument("--speed-rounds", type=int, default=7, help="0 skips the speed part.")
    add_model_args(ap, "ood_pairs", "ood")
    return parse_model_args(ap)


def main() -> int:
    a = parse()
    t_start = time.perf_counter()
    pairs = {"MNIST": (a.mnist, a.fashion), "Fashion-MNIST": (a.fashion, a.mnist)}
    names = {a.mnist: "MNIST", a.fashion: "Fashion-MNIST"}
    models, exports = {}, {}
    for name, (spec, other) in pairs.items():
        export_dir, info = train_one(a, name.lower(), spec)
        exports[name] = export_dir
        report = anomaly_bench(
            export_dir, normal=spec, anomalous=(other, *TRANSFORMS), kinds=a.scores, k=a.k,
            seed=a.seed, limit=a.limit or None,
        )  # fmt: skip
        models[name] = {**info, **report.to_dict()}
        for r in report.rows:
            print(f"{name} vs {names.get(r.anomalies, r.anomalies)}: {r.score} {r.precision} "
                  f"AUROC {r.auroc:.4f}", flush=True)  # fmt: skip
    cpu = cpu_info()
    result = {
        "command": shlex.join(["python", *sys.argv]), "cpu_info": cpu.to_dict(),
        "epochs": a.epochs, "latent": a.latent, "hidden": "-".join(map(str, a.hidden)),
        "seed": a.seed, "k": a.k, "scores": list(a.scores), "default_score": DEFAULT,
        "cpu": f"{cpu.model} ({cpu.kind})", "names": names, "models": models,
    }  # fmt: skip
    if a.speed_rounds:
        timed = tuple(k for k in (DEFAULT, "elbo") if k in a.scores) or a.scores[:1]
        result["speed"] = speed(exports["MNIST"], a.mnist, timed, a.speed_rounds)
    result["seconds"] = time.perf_counter() - t_start
    write_results(a, result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
