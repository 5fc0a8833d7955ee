#!/usr/bin/env bash
# The 4-bit firmware decoder on both presets (firmware_demo/README.md, "4-bit weights"), from
# the repository root:
#
#   DATA=../shared/data/mnist firmware_demo/scripts/int4_bench.sh
#
# Per preset: train EPOCHS (10) on full MNIST; copy the run and fine-tune it QAT_EPOCHS (4)
# more with 4-bit quantization-aware training (`--qat-bits 4`); copy it again and train the
# same epochs without QAT (the control); export and quantize each. Then the NLL of every
# firmware pair against the first run's int8 firmware pair (scripts/int4_nll.py), and the
# fine-tuned run's 4-bit firmware (decoder alone and with the score): the checksum on every
# target, flash / RAM / stack (`make size`) and instructions per MAC (`make icount`).
# Results go to OUT (build/int4): <preset>_nll.{txt,json}, <preset>/fw4*.{json,txt}.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data/mnist}
OUT=${OUT:-build/int4}
EPOCHS=${EPOCHS:-10}
QAT_EPOCHS=${QAT_EPOCHS:-4}
TARGETS="run-host run-m4 run-m33 run-aarch64 run-armv7"
edgevae=.venv/bin/edgevae

for preset in ${PRESETS:-mcu default}; do
    base=$OUT/$preset
    mkdir -p "$base"
    "$edgevae" train --data "$DATA" --preset "$preset" --epochs "$EPOCHS" --seed 0 --threads 1 \
        --run-dir "$base/run" --overwrite --export-dir "$base/export"
    for kind in qat control; do
        rm -rf "$base/$kind-run"
        cp -r "$base/run" "$base/$kind-run"
        qat=0
        [ "$kind" = qat ] && qat=4
        "$edgevae" train --resume --run-dir "$base/$kind-run" --epochs $((EPOCHS + QAT_EPOCHS)) \
            --threads 1 --qat-bits "$qat" --export-dir "$base/$kind-export"
    done
    .venv/bin/python firmware_demo/scripts/int4_nll.py --baseline "$base/export" \
        --export "$base/export" --export "$base/qat-export" --export "$base/control-export" \
        --data "$DATA" --json "$OUT/${preset}_nll.json" | tee "$OUT/${preset}_nll.txt"
    for score in "" --score; do
        weights=$base/fw4${score:+-score}
        # shellcheck disable=SC2086 # $score is one flag or nothing
        "$edgevae" firmware --export-dir "$base/qat-export" --weights-only --weight-bits 4 \
            $score --out "$weights" --json "$weights.json"
        # shellcheck disable=SC2086 # $TARGETS is a list of make targets
        make -s -C firmware_demo WEIGHTS="$PWD/$weights" BUILD="$PWD/$weights-build" \
            $TARGETS size icount | tee "$weights.txt"
    done
done
