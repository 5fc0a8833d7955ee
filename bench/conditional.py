"""How often a conditional sample shows the class it was asked for, over latent sizes and
temperatures, with the conditional NLL beside it (issue 12's measurement).

For each latent size: train `edgevae train --conditional` on MNIST (labels), export and
quantize, then draw `--n` samples of every digit at each temperature from the fp32 and the
int8 decoder, and label them with an independent numpy classifier trained on the real training
images (`edgevae.bench.classifier`, its test accuracy reported). Writes JSON and prints a table.

    .venv/bin/python bench/conditional.py --data mnist --latents 2,5,10,20 --epochs 30
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import edgevae
from edgevae import fsio
from edgevae.bench.classifier import train_classifier
from edgevae.data.core import load_dataset


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist", help="labelled MNIST (a named set or a folder)")
    ap.add_argument("--latents", default="2,5,10,20")
    ap.add_argument("--hidden", default="400")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--temperatures", default="1.0,0.7,0.5")
    ap.add_argument("--n", type=int, default=100, help="samples per class and temperature")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--nll-images", type=int, default=2000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--work", type=Path, default=Path("runs/conditional"))
    ap.add_argument("--json", type=Path, default=Path("build/bench/conditional.json"))
    return ap.parse_args()


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
        hidden=[int(h) for h in args.hidden.split(",")], overwrite=True,
    )  # fmt: skip
    train_s = time.perf_counter() - t0
    edgevae.export(run_dir, export_dir)
    report = edgevae.quantize(export_dir, run_dir=run_dir) if "int8" in args.precisions else None
    row = {"latent": latent, "train_seconds": train_s, "test_neg_elbo": run.test_neg_elbo}
    row["recipe"] = report.chosen if report else None
    x, y = ds.test[: args.nll_images], ds.test_labels[: args.nll_images]
    for precision in args.precisions.split(","):
        model = edgevae.load(export_dir, precision)
        names = np.asarray(ds.classes)[y]
        row[f"{precision}_nll"] = model.evaluate(x, k=args.k, labels=names).nll_iw
        for t in (float(v) for v in args.temperatures.split(",")):
            per_class = _accuracy(model, classifier, args.n, t)
            row[f"{precision}_T{t:g}"] = {"per_class": per_class, "mean": float(np.mean(per_class))}
    return row


def main() -> None:
    args = _args()
    ds = load_dataset(args.data, labels=True)
    t0 = time.perf_counter()
    classifier = train_classifier(ds.train, np.asarray(ds.classes, int)[ds.train_labels])
    test_acc = classifier.accuracy(ds.test, np.asarray(ds.classes, int)[ds.test_labels])
    print(f"classifier: test accuracy {test_acc:.4f} ({time.perf_counter() - t0:.0f} s)")
    rows = []
    for latent in (int(v) for v in args.latents.split(",")):
        rows.append(_one_latent(args, latent, ds, classifier))
        r = rows[-1]
        accs = "  ".join(
            f"{k}: {v['mean']:.3f}" for k, v in r.items() if isinstance(v, dict) and "mean" in v
        )
        print(f"L={latent}: train {r['train_seconds']:.0f} s, {accs}", flush=True)
        nlls = {k: round(v, 2) for k, v in r.items() if k.endswith("_nll")}
        print(f"      NLL (-log p(x|y), k={args.k}): {nlls}", flush=True)
    result = {
        "classifier_test_accuracy": test_acc,
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": rows,
    }
    fsio.write_json(args.json, result)
    print(json.dumps({"json": str(args.json)}))


if __name__ == "__main__":
    main()
