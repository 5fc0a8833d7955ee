"""Timing on a shared, noisy machine: warm-up, interleaved rounds, medians and spread.

Contenders run in alternating rounds, so drift (another process, frequency changes) hits all
of them alike and their ratio stays meaningful even when absolute times wander. Rounds can also
be timed in CPU time, which does not grow while the process waits for a CPU: on an
oversubscribed machine CPU-time ratios stay right when wall-time ones do not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Timing:
    samples_ns: list[int]  # wall time of each call
    # With a cpu_clock: one sample per round, the round's CPU time / reps (mean ns per call).
    cpu_samples_ns: list[int] = field(default_factory=list)

    @property
    def cpu(self) -> Timing | None:
        """The CPU-time samples as a Timing of their own; None if no cpu_clock was given."""
        return Timing(self.cpu_samples_ns) if self.cpu_samples_ns else None

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


def cpu_clock_for(threads: int) -> Callable[[], int]:
    """The CPU clock that measures onnxruntime with `threads` intra-op threads. One thread: all
    work runs on the calling thread, whose clock is exact. More: the process clock, which also
    counts onnxruntime's spinning workers, so it over-counts."""
    return time.thread_time_ns if threads == 1 else time.process_time_ns


def interleaved(
    contenders: dict[str, Callable[[], object]],
    *,
    rounds: int = 10,
    reps: int = 20,
    warmup: int = 5,
    budget_s: float | None = None,
    on_round: Callable[[int, int], None] | None = None,
    cpu_clock: Callable[[], int] | None = None,
) -> dict[str, Timing]:
    """Each round runs every contender `reps` times in turn; per-call times are collected.

    `budget_s` caps the wall time: rounds stop early (never before 3) once it is spent.
    `cpu_clock` (e.g. `cpu_clock_for(threads)`), if given, is read before and after each
    contender's block of `reps` calls, giving `Timing.cpu_samples_ns`. It is read per block,
    not per call, and outside the wall-timed calls: a read can cost microseconds (a system
    call), which would inflate short wall-time samples.
    """
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[int]] = {name: [] for name in contenders}
    cpu_samples: dict[str, list[int]] = {name: [] for name in contenders}
    start = time.perf_counter()
    for r in range(rounds):
        for name, fn in contenders.items():
            out = samples[name]
            cpu0 = cpu_clock() if cpu_clock is not None else 0
            for _ in range(reps):
                t0 = time.perf_counter_ns()
                fn()
                out.append(time.perf_counter_ns() - t0)
            if cpu_clock is not None:
                cpu_samples[name].append((cpu_clock() - cpu0) // reps)
        if on_round is not None:
            on_round(r + 1, rounds)
        if budget_s is not None and r >= 2 and time.perf_counter() - start > budget_s:
            break
    return {name: Timing(s, cpu_samples[name]) for name, s in samples.items()}
