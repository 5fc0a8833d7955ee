"""Latency of `edgevae bench`'s rows: every row timed in interleaved rounds per role and batch
size, in wall and CPU time, against the peak GMAC/s; and how far the times can be trusted.

Rows run interleaved (`timing.interleaved`), so drift on a busy machine hits them alike; the
spread (IQR/median) says how far absolute times can be trusted. CPU time does not grow while
the process waits for a CPU, so CPU-time speedups stay right on an oversubscribed machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..runtime import timing
from ..runtime.labels import cycle_one_hot
from .report import REFERENCE, Latency, Row
from .rows import Contender, Progress

ROLES = ("decoder", "encoder")


def layer_macs(man: dict[str, Any]) -> dict[str, int]:
    """Multiply-accumulates per image from the manifest's model config (a conditional
    model's first layers also read the one-hot label)."""
    model = man.get("model") or {}
    d = int(model.get("input_dim") or np.prod(man["image_shape"]))
    hidden = [int(h) for h in model.get("hidden", [])]
    latent = int(man["latent_dim"])
    c = len(man.get("classes") or [])
    dec = [latent + c, *reversed(hidden), d]
    enc = [d + c, *hidden]
    return {
        "encoder": sum(a * b for a, b in zip(enc[:-1], enc[1:], strict=True))
        + (hidden[-1] if hidden else d) * 2 * latent,
        "decoder": sum(a * b for a, b in zip(dec[:-1], dec[1:], strict=True)),
    }


def _latency(
    t: timing.Timing, bs: int, macs: int, peak: float | None, cpu_peak: float | None
) -> Latency:
    p50_s = t.p50_us * 1e-6
    gmacs = macs * bs / p50_s / 1e9 if p50_s > 0 else math.nan
    cpu_s = t.cpu.p50_us * 1e-6 if t.cpu is not None else 0.0
    cpu_gmacs = macs * bs / cpu_s / 1e9 if cpu_s > 0 else math.nan
    return Latency(
        p50_us=t.p50_us,
        p90_us=t.p90_us,
        p99_us=t.p99_us,
        spread=t.spread,
        n_samples=len(t.samples_ns),
        images_per_s=bs / p50_s if p50_s > 0 else math.nan,
        gmac_per_s=gmacs,
        pct_of_peak=100.0 * gmacs / peak if peak else None,
        cpu_p50_us=cpu_s * 1e6 if cpu_s > 0 else math.nan,
        cpu_pct_of_peak=100.0 * cpu_gmacs / cpu_peak if cpu_peak and cpu_s > 0 else None,
    )


def _reps(probe: Callable[[], object], round_ms: float) -> int:
    """Calls per round so that a round of one contender takes about round_ms (2 to 500)."""
    probe()  # the first call may allocate; time the second
    t0 = time.perf_counter_ns()
    probe()
    per_call = max(time.perf_counter_ns() - t0, 1000) / 1e9
    return int(min(500, max(2, round(round_ms / 1e3 / per_call))))


def time_all(
    contenders: list[Contender],
    batch_sizes: list[int],
    x: np.ndarray,
    latent_dim: int,
    macs: dict[str, int],
    peak: dict[str, Any],
    rounds: int,
    round_ms: float,
    warmup: int,
    progress: Progress,
    cpu_clock: Callable[[], int],
    n_classes: int = 0,
) -> None:
    """Interleaved timing of every timed row, per role and batch size (wall and CPU time);
    a conditional model (`n_classes` > 0) is fed one-hot labels cycling through the classes."""
    ref = next(c for c in contenders if c.row.name == REFERENCE)
    rng = np.random.default_rng(12345)
    steps = [(role, bs) for bs in batch_sizes for role in ROLES]
    for i, (role, bs) in enumerate(steps):
        progress(f"timing {role} @ batch {bs}", i, len(steps))
        if role == "decoder":
            data = rng.standard_normal((bs, latent_dim)).astype(np.float32)
        else:
            data = np.ascontiguousarray(np.resize(x, (bs, x.shape[1])), dtype=np.float32)
        y = cycle_one_hot(bs, n_classes)
        fns: dict[str, Callable[[], object]] = {}
        owners: dict[str, list[Contender]] = {}
        for c in contenders:
            # Rows sharing one encoder file share its timing.
            key = c.row.name if role == "decoder" else c.encoder_key
            owners.setdefault(key, []).append(c)
            if key not in fns:
                fns[key] = c.timer(role, data) if y is None else c.timer(role, data, y)
        reps = _reps(fns[REFERENCE if role == "decoder" else ref.encoder_key], round_ms)
        budget = 4 * rounds * len(fns) * round_ms / 1e3
        res = timing.interleaved(
            fns, rounds=rounds, reps=reps, warmup=warmup, budget_s=budget, cpu_clock=cpu_clock
        )
        for key, t in res.items():
            for c in owners[key]:
                pk, cpu_pk = _row_peak(c.row, peak)
                getattr(c.row, role)[str(bs)] = _latency(t, bs, macs[role], pk, cpu_pk)
    progress("timing", len(steps), len(steps))
    for c in contenders:
        for role in ROLES:
            ref_lat = getattr(ref.row, role)
            for bs, lat in getattr(c.row, role).items():
                if bs in ref_lat and lat.p50_us > 0:
                    lat.speedup_vs_fp32 = ref_lat[bs].p50_us / lat.p50_us
                if bs in ref_lat and lat.cpu_p50_us > 0:
                    lat.cpu_speedup_vs_fp32 = ref_lat[bs].cpu_p50_us / lat.cpu_p50_us
                if c.row.ceiling:
                    lat.share_of_ceiling = _over(lat.speedup_vs_fp32, c.row.ceiling)
                    lat.cpu_share_of_ceiling = _over(lat.cpu_speedup_vs_fp32, c.row.ceiling)


def _over(v: float | None, ceiling: float) -> float | None:
    return None if v is None else v / ceiling


def _row_peak(row: Row, peak: dict[str, Any]) -> tuple[float | None, float | None]:
    """(wall, CPU-time) peak GMAC/s of the row's own format: fp32, or the int8 format its
    recipe runs; None for int4/fp16, which the probe does not measure."""
    fmt = "fp32" if row.precision == "fp32" else row.format
    got = (peak.get("formats") or {}).get(fmt) if fmt else None
    if not got:
        return None, None
    return got.get("gmac_per_s"), got.get("cpu_gmac_per_s")


def noise_verdict(rows: list[Row]) -> dict[str, Any]:
    """How far the times can be trusted: spread (IQR/median) and wall/CPU time of the p50s."""
    lats = [lat for r in rows for lat in (*r.decoder.values(), *r.encoder.values())]
    if not lats:
        return {
            "max_spread": None,
            "median_spread": None,
            "max_wall_over_cpu": None,
            "verdict": "not timed",
        }
    spreads = [lat.spread for lat in lats]
    worst, med = float(max(spreads)), float(np.median(spreads))
    ratios = [lat.p50_us / lat.cpu_p50_us for lat in lats if lat.cpu_p50_us > 0]
    wall_cpu = float(max(ratios)) if ratios else None
    if wall_cpu is not None and wall_cpu > 1.25:
        verdict = (
            f"noisy: the CPU is oversubscribed (a wall p50 is {wall_cpu:.1f}x its CPU time), so "
            "trust the CPU-time speedups (cpu ×), not absolute times or wall ratios"
        )
    elif med <= 0.05 and worst <= 0.15:
        verdict = "quiet: absolute times and ratios are both trustworthy"
    elif med <= 0.20:
        verdict = f"moderate: ratios reliable, absolute times within about ±{50 * med:.0f}%"
    else:
        verdict = "noisy: ratios still comparable (interleaved), absolute times not"
    return {
        "max_spread": worst,
        "median_spread": med,
        "max_wall_over_cpu": wall_cpu,
        "verdict": verdict,
    }
