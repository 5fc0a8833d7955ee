"""Timing on a shared, noisy machine: warm-up, interleaved rounds, medians and spread.

Contenders run in alternating rounds, so drift (another process, frequency changes) hits all
of them alike and their ratio stays meaningful even when absolute times wander.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class Timing:
    samples_ns: list[int]

    def pct(self, q: float) -> float:
        return float(np.percentile(self.samples_ns, q)) / 1e3

    @property
    def p50_us(self) -> float:
        return self.pct(50)

    @property
    def p90_us(self) -> float:
        return self.pct(90)

    @property
    def p99_us(self) -> float:
        return self.pct(99)

    @property
    def spread(self) -> float:
        """Interquartile range over the median: 0.05 is a quiet machine, 0.3 a busy one."""
        q1, q2, q3 = np.percentile(self.samples_ns, [25, 50, 75])
        return float((q3 - q1) / q2) if q2 else 0.0


def interleaved(
    contenders: dict[str, Callable[[], object]],
    *,
    rounds: int = 10,
    reps: int = 20,
    warmup: int = 5,
    budget_s: float | None = None,
    on_round: Callable[[int, int], None] | None = None,
) -> dict[str, Timing]:
    """Each round runs every contender `reps` times in turn; per-call times are collected.

    `budget_s` caps the wall time: rounds stop early (never before 3) once it is spent.
    """
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[int]] = {name: [] for name in contenders}
    start = time.perf_counter()
    for r in range(rounds):
        for name, fn in contenders.items():
            out = samples[name]
            for _ in range(reps):
                t0 = time.perf_counter_ns()
                fn()
                out.append(time.perf_counter_ns() - t0)
        if on_round is not None:
            on_round(r + 1, rounds)
        if budget_s is not None and r >= 2 and time.perf_counter() - start > budget_s:
            break
    return {name: Timing(s) for name, s in samples.items()}
