"""A quantized copy of the session's conditional export (tests/conftest.py: tiny_cond_export),
shared by the quant, bench and crosscheck tests of conditional models."""

from __future__ import annotations

import shutil
from pathlib import Path

# One fixed recipe (no search over candidates) with few calibration images: a few seconds.
RECIPE = "static-pc-rr"


def quantized_copy(cond_export: Path, cond_run: Path, dst: Path) -> Path:
    """dst: the fp32 conditional export quantized with RECIPE (and the firmware pair)."""
    import edgevae

    shutil.copytree(cond_export, dst)
    edgevae.quantize(dst, run_dir=cond_run, recipe=RECIPE, budget_nats=10.0, calib=300)
    return dst
