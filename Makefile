# edgevae: `make demo` trains, exports, quantizes and samples; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pytest workers: the suite is CPU-bound and this machine has 2 cores.
JOBS   ?= 2

.PHONY: install demo test lint figures figures-paper bench clean help ci-export ci-export-cond \
        firmware wheel-check

help:
	@echo "make demo | test | test-arm | lint | install | figures | bench | clean"

install: $(STAMP)

# Re-installs only when the dependency list changes; the package itself is editable.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq -e '.[train,plots,dev]'
	@touch $@

demo: install
	$(BIN)/edgevae train --run-dir runs/demo --overwrite --epochs 10 --export-dir export
	$(BIN)/edgevae eval --run-dir runs/demo --k 500
	$(BIN)/edgevae sample --n 16 --out grid.png
	$(BIN)/edgevae bench --export-dir export

test: install
	$(BIN)/python -m pytest -q -n $(JOBS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The paper's pictures (Kingma & Welling 2014) with a fixed seed, into docs/figures/.
figures: install
	$(BIN)/edgevae figures --out docs/figures --work runs/figures

figures-paper: install
	$(BIN)/edgevae figures --out docs/figures --work runs/figures-paper \
	    --data ../shared/data/mnist --frey ../shared/data/frey_face

# Benchmarks that need ../shared/data (see bench/README.md); results go to build/bench/.
bench: install
	@test -f export/manifest.json || $(MAKE) demo
	$(BIN)/edgevae bench --export-dir export --json build/bench/bench.json \
	    --markdown build/bench/bench.md --plot build/bench/bench.png

# A small real model for the emulated-ARM and firmware checks in CI (about a minute). The
# recipe is pinned to one that is bit-exact on every CPU (7-bit weights): `auto` picks by this
# machine's CPU, and on an AVX-512 VNNI host its full-range choice is not exact on AVX2 x86.
CI_DIR := build/ci
ci-export: install
	$(BIN)/edgevae train --epochs 3 --run-dir $(CI_DIR)/run --overwrite --no-export
	$(BIN)/edgevae export --run-dir $(CI_DIR)/run --export-dir $(CI_DIR)/export --no-quantize
	$(BIN)/edgevae quantize --export-dir $(CI_DIR)/export --run-dir $(CI_DIR)/run \
	    --recipe static-pc-rr --budget-nats 1

# The same for a conditional model (encoder x, y; decoder z, y): test-arm and the firmware.
ci-export-cond: install
	$(BIN)/edgevae train --conditional --epochs 3 --run-dir $(CI_DIR)/run-cond --overwrite \
	    --no-export
	$(BIN)/edgevae export --run-dir $(CI_DIR)/run-cond --export-dir $(CI_DIR)/export-cond \
	    --no-quantize
	$(BIN)/edgevae quantize --export-dir $(CI_DIR)/export-cond --run-dir $(CI_DIR)/run-cond \
	    --recipe static-pc-rr --budget-nats 1

# The C weights of export/ for firmware_demo/ (built with the kernel the package ships,
# edgevae/firmware/kernel/), the host decoder (edgevae parity --firmware ...) and the demo.
# FIRMWARE_FLAGS=--score adds the int8 encoder and the anomaly score (host edgevae_score);
# FIRMWARE_FLAGS="--weight-bits 4" deploys the 4-bit decoder (decoder.int4.static.onnx).
FIRMWARE_FLAGS ?=
firmware: install
	$(BIN)/edgevae firmware --export-dir export --weights-only --out firmware_demo/generated \
	    $(FIRMWARE_FLAGS)
	$(MAKE) -C firmware_demo host run-host

# The wheel alone is enough for a board: build it, install it (base deps only) into a fresh
# venv, sample from $(EXPORT) and build the firmware host decoder from the printed cc line.
# Last line PASS/FAIL. In CI: make ci-export && make wheel-check EXPORT=build/ci/export
wheel-check: install
	bash .ci/wheel_check.sh $(EXPORT)

# Raspberry Pi-class ARM (and AVX2) bit-exactness under qemu-user: see arm/README.md.
ARM_PYTHON := $(BIN)/python
include arm/arm.mk
test-arm: install

clean:
	rm -rf runs/demo build .pytest_cache
