#!/usr/bin/env bash
# Quality: one stochastic layer MLP VAE on dynamically binarized full MNIST, at most 60
# minutes of training here, then test NLL with k = 5000 importance samples
# (published reference for this family: 86.76 nats after 3,280 epochs, Burda et al. 2016).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/mnist}
OUT=${OUT:-build/bench}
MINUTES=${MINUTES:-55}
mkdir -p "$OUT"
.venv/bin/edgevae train --data "$DATA" --binarize dynamic --hidden 400,400 --latent-dim 50 \
    --epochs 100000 --max-minutes "$MINUTES" --lr-patience 10 --kl-warmup 50 --threads 1 --seed 0 \
    --run-dir runs/quality --overwrite --no-export
# Single-threaded eval: ~45 min for 10,000 images x 5,000 samples here.
.venv/bin/edgevae eval --run-dir runs/quality --k 5000 --threads 1 --json "$OUT/quality_eval.json"
