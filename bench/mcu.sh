#!/usr/bin/env bash
# The mcu preset (8-128-784) next to the default model (20-400-784) on full MNIST: NLL, a
# sample grid each, and the firmware size/instruction report for both.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/mnist}
OUT=${OUT:-build/bench}
mkdir -p "$OUT" docs/figures
for preset in default mcu; do
    .venv/bin/edgevae train --data "$DATA" --preset "$preset" --epochs 10 --seed 0 --threads 1 \
        --run-dir "runs/$preset-mnist" --overwrite --export-dir "export-$preset"
    .venv/bin/edgevae eval --run-dir "runs/$preset-mnist" --k 1000 --limit 2000 \
        --json "$OUT/${preset}_eval.json"
    .venv/bin/edgevae sample --export-dir "export-$preset" --n 16 --seed 0 \
        --out "docs/figures/samples_${preset}_int8.png"
    .venv/bin/edgevae firmware --export-dir "export-$preset" --out "build/fw-$preset/weights" \
        --json "$OUT/${preset}_firmware.json"
    make -s -C firmware_demo WEIGHTS="$PWD/build/fw-$preset/weights" \
        BUILD="$PWD/build/fw-$preset/build" size icount | tee "$OUT/${preset}_firmware_size.txt"
done
