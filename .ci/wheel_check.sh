#!/usr/bin/env bash
# wheel_check.sh [EXPORT_DIR]: `pip install edgevae` alone is enough for a board.
#
# Builds the wheel, installs only that wheel into a fresh venv (base dependencies from the
# registry, no extras: no torch, no onnx), then, from an empty folder outside the checkout:
# `edgevae sample --n 16` from EXPORT_DIR, `edgevae firmware` into a new folder, the exact `cc`
# line that command printed, the run line it printed, and a few hundred z vectors through the
# built decoder, checked against the numpy integer reference (bit for bit) and onnxruntime.
# Then, when the export has the static encoder, the same for `edgevae firmware --score`: the
# printed cc line builds the score program, and its scores of the export's held-out images
# equal edgevae.firmware.score.score_images bit for bit (mu and logvar equal onnxruntime's).
# With decoder.int4.static.onnx, `edgevae firmware --weight-bits 4` likewise: its printed cc
# line builds a decoder equal to the numpy reference and to onnxruntime on every pixel.
# EXPORT_DIR defaults to $EXPORT, else build/ci/export (`make ci-export`). The last line is
# "wheel-check: PASS ..." or "wheel-check: FAIL ...".
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-.venv/bin/python}  # builds the wheel
BASE_PYTHON=${BASE_PYTHON:-python3} # creates the fresh venv
EXPORT_DIR=${1:-${EXPORT:-build/ci/export}}
OUT=$ROOT/build/wheel
VENV=$OUT/venv
start=$SECONDS
step="setup"
WORK=""

cleanup() { [ -z "$WORK" ] || rm -rf "$WORK"; }
trap cleanup EXIT
trap 'echo "wheel-check: FAIL: $step (after $((SECONDS - start)) s)"' ERR
fail() {
    trap - ERR
    echo "wheel-check: FAIL: $step: $*"
    exit 1
}

step="export dir $EXPORT_DIR"
[ -f "$EXPORT_DIR/manifest.json" ] || fail "no manifest.json (run: make ci-export)"
EXPORT_DIR=$(cd "$EXPORT_DIR" && pwd)

step="build the wheel"
rm -rf "$OUT" build/lib build/bdist.* # setuptools reuses build/lib: no stale modules in the wheel
"$PYTHON" -m pip wheel --no-deps -q -w "$OUT" .
wheels=("$OUT"/edgevae-*.whl)
[ ${#wheels[@]} -eq 1 ] && [ -f "${wheels[0]}" ] || fail "expected one wheel in $OUT"
wheel=${wheels[0]}

step="install the wheel into a fresh venv"
"$BASE_PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$wheel"
"$VENV/bin/python" - <<'EOF' || fail "an extra's package is installed"
import importlib.util
import sys

extras = [m for m in ("torch", "onnx", "onnxscript", "safetensors") if importlib.util.find_spec(m)]
sys.exit(f"found {extras}" if extras else 0)
EOF

WORK=$(mktemp -d) # an empty folder outside the checkout
cd "$WORK"
edgevae=$VENV/bin/edgevae

step="edgevae firmware --print-kernel-dir"
kernel=$("$edgevae" firmware --print-kernel-dir)
case "$kernel" in
"$VENV"/*) ;;
*) fail "the kernel is at $kernel, not inside the wheel's venv" ;;
esac

step="edgevae sample --n 16"
"$edgevae" sample --n 16 --export-dir "$EXPORT_DIR" --out grid.png >sample.txt
[ -s grid.png ] || fail "no grid.png"

step="reconstruct, interpolate, encode and bench from the export alone (no dataset package)"
"$edgevae" reconstruct --export-dir "$EXPORT_DIR" --n 8 --out recon.png >/dev/null
"$edgevae" interpolate --export-dir "$EXPORT_DIR" --steps 5 --out interp.png >/dev/null
"$edgevae" encode --export-dir "$EXPORT_DIR" --out z.npy >/dev/null
"$edgevae" bench --export-dir "$EXPORT_DIR" --limit 20 --k 8 --rounds 2 --batch-sizes 1 \
    --json bench.json >/dev/null 2>bench.log
[ -s recon.png ] && [ -s interp.png ] && [ -s z.npy ] && [ -s bench.json ] || fail "missing output"

step="commands of the train extra refuse in one line"
for cmd in "train --epochs 1" "export" "quantize --export-dir $EXPORT_DIR" "eval" \
    "figures --quick --out figs"; do
    code=0
    err=$(trap - ERR; "$edgevae" $cmd 2>&1 >/dev/null) || code=$?
    [ "$code" -ne 0 ] || fail "edgevae $cmd exited 0 on a base install"
    [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] || fail "edgevae $cmd: not one line: $err"
    case "$err" in
    *"pip install 'edgevae[train]'"* | *"pip install 'edgevae[plots]'"*) ;;
    *) fail "edgevae $cmd does not name the extra: $err" ;;
    esac
done

step="edgevae firmware"
"$edgevae" firmware --export-dir "$EXPORT_DIR" --out fw --json fw.json >firmware.txt
build=$(sed -n 's/^  \(cc .*\)$/\1/p' firmware.txt)
run=$(sed -n 's/^  \(printf .*\)$/\1/p' firmware.txt)
[ "$(printf '%s\n' "$build" | wc -l)" -eq 1 ] && [ -n "$build" ] || fail "no single cc line printed"
[ -n "$run" ] || fail "no run line printed"

step="the printed cc line: $build"
bash -c "$build"

step="the printed run line"
pixels=$(bash -c "$run")
[ "$(printf '%s\n' "$pixels" | wc -l)" -eq 1 ] || fail "expected one line of pixels"

step="decoder vs intref and onnxruntime"
summary=$("$VENV/bin/python" - "$EXPORT_DIR" fw.json "$build" <<'EOF'
import json
import subprocess
import sys

import numpy as np

from edgevae.firmware.codegen import find_firmware_decoder
from edgevae.firmware.deploy import program_path
from edgevae.firmware.intref import decode_int, load_int_model
from edgevae.runtime.session import create_session

export, report_path, printed = sys.argv[1:4]
report = json.loads(open(report_path, encoding="utf-8").read())
if report["build_command"] != printed:
    sys.exit(f"--json build_command {report['build_command']!r} != printed {printed!r}")
path = find_firmware_decoder(export)
model = load_int_model(path)
rng = np.random.default_rng(0)
latent = model.latent_dim
z = np.concatenate(
    [
        rng.standard_normal((240, latent)),
        3.0 * rng.standard_normal((12, latent)),
        np.zeros((1, latent)),
        -np.zeros((1, latent)),
        np.full((1, latent), 1e3),
        np.full((1, latent), -1e3),
    ]
).astype(np.float32)
text = "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in z)
program = program_path("fw")
done = subprocess.run([program], input=text, capture_output=True, text=True, check=True)
got = np.array(done.stdout.split(), np.int64).reshape(len(z), -1)
want = decode_int(model, z).astype(np.int64)
if not np.array_equal(got, want):
    bad = int((got != want).sum())
    sys.exit(f"{bad} of {got.size} pixels differ from edgevae.firmware.intref.decode_int")
session = create_session(path)
x_mean = session.run(["x_mean"], {session.get_inputs()[0].name: z})[0]
ort = np.rint(x_mean.astype(np.float64) * 255).astype(np.int64)
diff = int(np.abs(got - ort).max())
if diff > 1:
    sys.exit(f"C vs onnxruntime differ by up to {diff} grey levels (expected <= 1)")
print(
    f"{len(z)} z vectors x {got.shape[1]} pixels bit-exact vs intref, "
    f"max |C - onnxruntime| = {diff}"
)
EOF
) || fail "see above"

score_summary="score program not checked: the export has no encoder.int8.static.onnx"
if [ -f "$EXPORT_DIR/encoder.int8.static.onnx" ]; then
    step="edgevae firmware --score"
    "$edgevae" firmware --export-dir "$EXPORT_DIR" --out fws --score --json fws.json >score.txt
    builds=$(sed -n 's/^  \(cc .*\)$/\1/p' score.txt)
    [ "$(printf '%s\n' "$builds" | wc -l)" -eq 2 ] || fail "expected two cc lines (decode, score)"
    score_build=$(printf '%s\n' "$builds" | sed -n 2p)
    score_run=$(sed -n 's/^  \(head -c .*\)$/\1/p' score.txt)
    [ -n "$score_run" ] || fail "no score run line printed"

    step="the printed score cc line: $score_build"
    bash -c "$score_build"

    step="the printed score run line"
    [ "$(bash -c "$score_run" | wc -l)" -eq 1 ] || fail "expected one score"

    step="score program vs edgevae.firmware.score and onnxruntime"
    score_summary=$("$VENV/bin/python" - "$EXPORT_DIR" fws.json "$score_build" <<'EOF'
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgevae.firmware.deploy import SCORE_PROGRAM, program_path
from edgevae.firmware.encoder import encode_int
from edgevae.firmware.score import load_score_model, score_images
from edgevae.runtime.session import create_session

export, report_path, printed = sys.argv[1:4]
report = json.loads(open(report_path, encoding="utf-8").read())
if report["score_build_command"] != printed:
    sys.exit(f"--json score_build_command {report['score_build_command']!r} != {printed!r}")
pixels = np.load(Path(export) / "heldout.npy", allow_pickle=False)
if pixels.dtype != np.uint8:
    pixels = np.rint(pixels * 255).astype(np.uint8)
pixels = np.concatenate([pixels[:300], 255 - pixels[:100]])
done = subprocess.run(
    [program_path("fws", SCORE_PROGRAM)], input=pixels.tobytes(), capture_output=True, check=True
)
got = np.array(done.stdout.split(), np.float64).astype(np.float32)
model = load_score_model(export)
want = score_images(model, pixels)
if not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
    sys.exit(f"{int((got != want).sum())} of {len(want)} scores differ from score_images")
session = create_session(Path(export) / "encoder.int8.static.onnx")
mu, logvar = session.run(["mu", "logvar"], {"x": pixels.astype(np.float32) / np.float32(255)})
ref_mu, ref_logvar = encode_int(model.encoder, pixels)
if not (np.array_equal(mu, ref_mu) and np.array_equal(logvar, ref_logvar)):
    sys.exit("mu/logvar differ from onnxruntime's")
print(f"{len(want)} images scored bit-exact vs score_images, mu/logvar equal onnxruntime's")
EOF
) || fail "see above"
fi

int4_summary="4-bit decoder not checked: the export has no decoder.int4.static.onnx"
if [ -f "$EXPORT_DIR/decoder.int4.static.onnx" ]; then
    step="edgevae firmware --weight-bits 4"
    "$edgevae" firmware --export-dir "$EXPORT_DIR" --out fw4 --weight-bits 4 >int4.txt
    build4=$(sed -n 's/^  \(cc .*\)$/\1/p' int4.txt)
    [ "$(printf '%s\n' "$build4" | wc -l)" -eq 1 ] && [ -n "$build4" ] || fail "no single cc line"

    step="the printed 4-bit cc line: $build4"
    bash -c "$build4"

    step="4-bit decoder vs intref and onnxruntime"
    int4_summary=$("$VENV/bin/python" - "$EXPORT_DIR" <<'EOF'
import subprocess
import sys

import numpy as np

from edgevae.firmware.codegen import find_firmware_decoder
from edgevae.firmware.deploy import program_path
from edgevae.firmware.intref import decode_int, load_int_model
from edgevae.runtime.session import create_session

path = find_firmware_decoder(sys.argv[1], 4)
model = load_int_model(path, 4)
z = np.random.default_rng(1).standard_normal((256, model.latent_dim)).astype(np.float32)
text = "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in z)
done = subprocess.run([program_path("fw4")], input=text, capture_output=True, text=True, check=True)
got = np.array(done.stdout.split(), np.int64).reshape(len(z), -1)
if not np.array_equal(got, decode_int(model, z)):
    sys.exit("the 4-bit decoder differs from edgevae.firmware.intref.decode_int")
x_mean = create_session(path).run(["x_mean"], {"z": z})[0]
if not np.array_equal(got, np.rint(x_mean.astype(np.float64) * 255).astype(np.int64)):
    sys.exit("the 4-bit decoder differs from onnxruntime")
bits = "/".join(str(layer.weight_bits) for layer in model.layers)
print(f"4-bit decoder ({bits}-bit layers) bit-exact vs intref and onnxruntime")
EOF
) || fail "see above"
fi

trap - ERR
echo "wheel-check: PASS ($(basename "$wheel"), base deps only, no torch/onnx; printed cc line" \
    "built the decoder; $summary; $score_summary; $int4_summary; $((SECONDS - start)) s)"
