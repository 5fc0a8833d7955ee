#!/usr/bin/env bash
# The classic setting: 784-400-20 ReLU, Adam 1e-3, batch 128, 10 epochs, full MNIST
# intensities in [0, 1] (continuous BCE, one-sample -ELBO on the test set; reference ~105.6).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/mnist}
OUT=${OUT:-build/bench}
mkdir -p "$OUT"
.venv/bin/edgevae train --data "$DATA" --hidden 400 --latent-dim 20 --activation relu \
    --optimizer adam --lr 1e-3 --batch-size 128 --epochs 10 --seed 0 --threads 1 \
    --run-dir runs/classic --overwrite --export-dir export-classic
.venv/bin/edgevae eval --run-dir runs/classic --k 1000 --json "$OUT/classic_eval.json"
tail -n 1 runs/classic/metrics.jsonl > "$OUT/classic_last_epoch.json"
# Quantize again with the per-node table (docs/quantization.md shows it), then the targets.
.venv/bin/edgevae quantize --export-dir export-classic --run-dir runs/classic --explain \
    | tee "$OUT/classic_explain.txt"
.venv/bin/python bench/quant_targets.py --export-dir export-classic --data "$DATA" --search \
    --json "$OUT/quant_targets.json"
