"""How often a conditional sample shows the class it was asked for, over latent sizes and
temperatures, fp32 and int8 side by side, with the conditional NLL beside it (issue 12).

For each latent size: train `edgevae train --conditional` on MNIST (labels) with the CLI's
defaults but the latent size (784-400-L, 10 epochs, seed 0), export and quantize (`auto`,
0.1 nats), then draw `--n` samples of every digit at each temperature from the fp32 and the
int8 decoder (`Model.sample(n, seed=1000 + digit, temperature=t, label=digit)`) and label them
with an independent numpy classifier trained on the real training images
(`edgevae.bench.classifier`; its test accuracy is reported, its weights cached in `--work`).
The NLL is the IWAE bound on -log p(x | y) over the first `--nll-images` test images with
their labels, the same noise for both precisions (so the int8 - fp32 difference is paired).
Writes JSON and a Markdown table (docs/conditional.md carries it).

    .venv/bin/python bench/conditional.py --data /work/shared/data/mnist
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import edgevae
from edgevae import fsio
from edgevae.bench.classifier import Classifier, train_classifier
from edgevae.data.core import load_dataset
from edgevae.quant.recipes import cpu_info


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist", help="labelled MNIST (a named set or a folder)")
    ap.add_argument("--latents", default="2,3,4,5,10,20")
    ap.add_argument("--hidden", default="400")
    ap.add_argument("--epochs", type=int, default=10, help="the CLI's default")
    ap.add_argument("--temperatures", default="1.0,0.7,0.5")
    ap.add_argument("--n", type=int, default=500, help="samples per class and temperature")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--nll-images", type=int, default=2000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--work", type=Path, default=Path("runs/conditional"))
    ap.add_argument("--json", type=Path, default=Path("build/bench/conditional.json"))
    ap.add_argument("--markdown", type=Path, default=Path("build/bench/conditional.md"))
    return ap.parse_args()


def _classifier(args, ds) -> tuple[Classifier, float, float]:
    """(classifier, its test accuracy, seconds to train it; 0 when cached)."""
    digits = np.asarray(ds.classes, int)
    path = args.work / "classifier.npz"
    cached = path.is_file()
    t0 = time.perf_counter()
    clf = Classifier.load(path) if cached else train_classifier(ds.train, digits[ds.train_labels])
    seconds = 0.0 if cached else time.perf_counter() - t0
    if not cached:
        clf.save(path)
    return clf, clf.accuracy(ds.test, digits[ds.test_labels]), seconds


def _accuracy(model, classifier, n: int, temperature: float) -> list[float]:
    """Per class: the fraction of n samples the classifier labels as that class."""
    out = []
    for c in range(len(model.classes)):
        images = model.sample(n, seed=1000 + c, temperature=temperature, label=c)
        out.append(float((classifier.predict(images) == int(model.classes[c])).mean()))
    return out


def _one_latent(args, latent: int, ds, classifier) -> dict:
    run_dir, export_dir = args.work / f"L{latent}", args.work / f"L{latent}-export"
    t0 = time.perf_counter()
    run = edgevae.train(
        args.data, run_dir=run_dir, epochs=args.epochs, conditional=True, latent_dim=latent,
        hidden=[int(h) for h in args.hidden.split(",")], seed=args.seed, overwrite=True,
    )  # fmt: skip
    train_s = time.perf_counter() - t0
    edgevae.export(run_dir, export_dir)
    report = edgevae.quantize(export_dir, run_dir=run_dir) if "int8" in args.precisions else None
    row = {"latent": latent, "train_seconds": train_s, "test_neg_elbo": run.test_neg_elbo}
    if report is not None:
        row["recipe"] = report.chosen
        row["search_pair_nll_delta"] = report.chosen_candidate.nll_delta
        row["firmware_pair_nll_delta"] = report.firmware_pair_nll_delta
    x, y = ds.test[: args.nll_images], ds.test_labels[: args.nll_images]
    names = np.asarray(ds.classes)[y]
    for precision in args.precisions.split(","):
        model = edgevae.load(export_dir, precision)
        row[f"{precision}_nll"] = model.evaluate(x, k=args.k, labels=names).nll_iw
        for t in (float(v) for v in args.temperatures.split(",")):
            per_class = _accuracy(model, classifier, args.n, t)
            row[f"{precision}_T{t:g}"] = {"per_class": per_class, "mean": float(np.mean(per_class))}
    if "fp32_nll" in row and "int8_nll" in row:
        row["int8_nll_delta"] = row["int8_nll"] - row["fp32_nll"]
    return row


def markdown(result: dict) -> str:
    """The table docs/conditional.md shows: mean share of samples classified as the asked
    digit, fp32 / int8, per temperature, with the NLL."""
    temps = result["args"]["temperatures"].split(",")
    head = ["latent", "train s"]
    head += [f"T={float(t):g} fp32 / int8" for t in temps]
    head += ["NLL fp32", "NLL int8 - fp32", "recipe"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        cells = [str(r["latent"]), f"{r['train_seconds']:.0f}"]
        for t in temps:
            key = f"T{float(t):g}"
            fp, q = r.get(f"fp32_{key}"), r.get(f"int8_{key}")
            cells.append(" / ".join(f"{100 * v['mean']:.1f} %" if v else "-" for v in (fp, q)))
        cells.append(f"{r['fp32_nll']:.2f}" if "fp32_nll" in r else "-")
        cells.append(f"{r['int8_nll_delta']:+.3f}" if "int8_nll_delta" in r else "-")
        cells.append(r.get("recipe") or "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = _args()
    args.work.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(args.data, labels=True)
    classifier, test_acc, clf_s = _classifier(args, ds)
    print(f"classifier: test accuracy {test_acc:.4f} ({clf_s:.0f} s)", flush=True)
    rows = []
    for latent in (int(v) for v in args.latents.split(",")):
        rows.append(_one_latent(args, latent, ds, classifier))
        r = rows[-1]
        accs = "  ".join(
            f"{k}: {v['mean']:.3f}" for k, v in r.items() if isinstance(v, dict) and "mean" in v
        )
        print(f"L={latent}: train {r['train_seconds']:.0f} s, {accs}", flush=True)
        nlls = {k: round(v, 3) for k, v in r.items() if "nll" in k and isinstance(v, float)}
        print(f"      NLL (-log p(x|y), k={args.k}): {nlls}", flush=True)
    result = {
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "cpu": cpu_info().to_dict(),
        "classifier_test_accuracy": test_acc,
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": rows,
    }
    fsio.write_json(args.json, result)
    table = markdown(result)
    fsio.write_text(args.markdown, table)
    print(table)
    print(json.dumps({"json": str(args.json), "markdown": str(args.markdown)}))


if __name__ == "__main__":
    main()
