"""Accuracy of `edgevae bench`'s rows in nats, and their verdict against the ORT fp32 reference.

Every row is scored by `metrics.evaluate` with the same seed (common random numbers), so NLL
deltas are much more precise than the NLLs themselves. Accuracy is not timed, so rows are
scored concurrently: numpy and onnxruntime release the GIL. A conditional model is scored on
-log p(x | y) with the images' one-hot labels, and its decoders are compared on the seeded z
with labels cycling through the classes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..quant.recipes import FIRMWARE_INT4
from ..runtime import metrics
from ..threads import set_torch_threads
from .report import FAILED, FAILED_VALIDATION, REFERENCE, Row
from .rows import Contender, Progress, ort_contender

# Decode at most this many rows at once during evaluation: bounded memory for any k.
EVAL_DECODE_ROWS = 8192


@dataclass(frozen=True)
class Labels:
    """A conditional model's one-hot labels: `y` of the test images, `y_diff` of the seeded z
    the decoders are compared on; both None for an unconditional model."""

    y: np.ndarray | None = None
    y_diff: np.ndarray | None = None


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def _accuracy(
    c: Contender,
    x: np.ndarray,
    z_diff: np.ndarray,
    likelihood: str,
    gauss: np.ndarray | None,
    k: int,
    seed: int,
    progress: Callable[[int], None] | None,
    labels: Labels,
) -> np.ndarray:
    """Fill the row's accuracy fields; returns its x_mean on z_diff (float64, [0, 1])."""
    t0 = time.perf_counter()
    b = metrics.evaluate(
        x,
        c.encode,
        c.decode,
        likelihood,
        k=k,
        seed=seed,
        gauss_logvar=gauss,
        max_decode_rows=EVAL_DECODE_ROWS,
        progress=progress,
        y=labels.y,
    )
    row = c.row
    row.neg_elbo, row.nll_iw, row.kl, row.active_units = b.neg_elbo, b.nll_iw, b.kl, b.active_units
    mu, _ = c.encode(x, labels.y)
    logits = c.decode(mu.astype(np.float32), labels.y)
    row.recon_mse = float(((x.astype(np.float64) - _sigmoid(logits)) ** 2).mean())
    lp = metrics.log_px_given_z(x.astype(np.float64), logits, likelihood, gauss)
    row.recon_nats = float(-lp.mean())
    mean = _sigmoid(c.decode(z_diff, labels.y_diff))
    row.accuracy_seconds = time.perf_counter() - t0
    return mean


def accuracy_all(
    live: list[Contender],
    x: np.ndarray,
    z_diff: np.ndarray,
    likelihood: str,
    gauss: np.ndarray | None,
    k: int,
    seed: int,
    workers: int,
    threads: int,
    progress: Progress,
    labels: Labels | None = None,
) -> dict[str, np.ndarray]:
    """Accuracy of every live row, `workers` rows at a time; returns x_mean on z_diff per row.
    A conditional model's rows take `labels` (the images' and z_diff's one-hot labels).

    ORT rows get fresh one-thread sessions here (the timed sessions keep `threads`)."""
    labels = labels or Labels()
    lock = threading.Lock()
    done: dict[str, int] = {}
    total = len(live) * len(x)

    def one(c: Contender) -> np.ndarray | None:
        def tick(n: int) -> None:
            with lock:
                done[c.row.name] = n
                progress("accuracy", sum(done.values()), total)

        try:
            eval_c = c
            if c.paths is not None and threads != 1:
                eval_c = ort_contender(Row("eval", "onnxruntime", "-"), *c.paths, 1, c.conditional)
                eval_c.row = c.row
            return _accuracy(eval_c, x, z_diff, likelihood, gauss, k, seed, tick, labels)
        except Exception as exc:  # a row that cannot be scored is reported, not fatal
            c.row.fail(FAILED, exc)
            return None
        finally:
            tick(len(x))

    progress("accuracy", 0, total)
    set_torch_threads(1)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(live)))) as pool:
        results = list(pool.map(one, live))
    return {c.row.name: m for c, m in zip(live, results, strict=True) if m is not None}


def compare_to_reference(
    rows: list[Row], means: dict[str, np.ndarray], ref: Row, budget: float, budget_from: str
) -> None:
    """Deltas vs the reference (NLL, decoded pixels); a non-finite accuracy or an NLL delta over
    the budget fails validation (the reference itself, and the firmware's 4-bit pair, whose
    cost the int8 budget does not bound, are not held to it)."""
    base, ref_mean = ref.nll_iw, means[REFERENCE]
    for r in rows:
        if r.status == FAILED:
            continue
        d = np.abs(means[r.name] - ref_mean) * 255.0
        r.decoder_max_abs_diff_px, r.decoder_mean_abs_diff_px = float(d.max()), float(d.mean())
        r.nll_delta = r.nll_iw - base if r.nll_iw is not None and base is not None else None
        vals = (r.neg_elbo, r.nll_iw, r.recon_mse)
        if not all(v is not None and math.isfinite(v) for v in vals):
            r.fail(FAILED_VALIDATION, "non-finite accuracy")
        elif (
            r.name != REFERENCE
            and r.recipe != FIRMWARE_INT4.name
            and r.nll_delta is not None
            and r.nll_delta > budget
        ):
            r.fail(
                FAILED_VALIDATION,
                f"NLL delta {r.nll_delta:+.3f} nats > budget {budget:g} ({budget_from})",
            )
