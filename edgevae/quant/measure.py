"""Measuring quantization candidates: each recipe applied to both models, its accuracy in
nats (`paired`, stopping as soon as the budget decision is clear) and its speed against fp32.

Speed: every candidate still in the running and fp32 are timed together, interleaved in
rounds, in CPU time (one thread: the calling thread's clock, which does not count time spent
waiting for a CPU on a shared machine), per role (encoder, decoder) and batch size (1, 256).
After the first `STAGE_ROUNDS[0]` rounds, a candidate whose score is clearly below the best
(`DROP_BELOW`) is dropped; the rest get `STAGE_ROUNDS[1]` more rounds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime import timing
from ..runtime.labels import cycle_one_hot
from ..runtime.session import feeds, open_session
from .apply import Feeds, apply_recipe
from .paired import PairedNLL
from .recipes import RECIPES, CpuInfo, gemm_format

ROLES = ("encoder", "decoder")
BATCHES = (1, 256)
STAGE_ROUNDS = (4, 6)
DROP_BELOW = 0.85  # of the best provisional score: clearly slower
ROUND_MS = 4.0  # per contender, role and batch in a round: long enough to amortize a cold call


@dataclass
class Candidate:
    recipe: str
    nll_delta: float = math.nan  # quantized encoder + decoder vs fp32, nats per image
    nll_delta_se: float = math.nan  # its standard error (paired, over images)
    nll_images: int = 0
    encoder_nll_delta: float = math.nan  # quantized encoder + fp32 decoder
    decoder_nll_delta: float = math.nan  # fp32 encoder + quantized decoder
    speedup: dict[str, float] = field(default_factory=dict)  # "decoder@1" -> fp32/int8 CPU p50
    p50_us: dict[str, float] = field(default_factory=dict)  # CPU time per call
    share: dict[str, float] = field(default_factory=dict)  # speedup / this format's ceiling
    format: str | None = None  # the GEMM format (bench.peak.FORMATS)
    ceiling: float | None = None  # this format's int8 GEMM GMAC/s over fp32's, this CPU
    score_ceiling: float = 1.0  # the best ceiling among the search's formats
    bytes: dict[str, int] = field(default_factory=dict)
    within_budget: bool = False
    dropped: str | None = None  # why it was not measured to the end
    kept_float: dict[str, list[str]] = field(default_factory=dict)  # role -> Gemm node names
    error: str | None = None

    @property
    def score(self) -> float:
        """What auto maximizes: the geometric mean of the speedups (encoder and decoder at
        batch 1 and 256) over `score_ceiling`, i.e. the share of this CPU's best int8
        ceiling the candidate reaches on average. The fastest candidate has the best score."""
        vals = [v for v in self.speedup.values() if v > 0]
        if not vals:
            return 0.0
        return math.exp(sum(math.log(v) for v in vals) / len(vals)) / self.score_ceiling

    @property
    def label(self) -> str:
        """The recipe, plus the nodes it keeps in float (mixed precision)."""
        kept = [n for names in self.kept_float.values() for n in names]
        return self.recipe + (f" (float: {', '.join(kept)})" if kept else "")


@dataclass
class Context:
    """What every candidate is measured against: the fp32 pair, its paired evaluator and
    the CPU's int8 ceilings."""

    export_dir: Path
    fp32: dict[str, Any]  # role -> session
    latent_dim: int
    paired: PairedNLL
    cpu: CpuInfo
    peak: dict[str, Any] = field(default_factory=dict)
    n_classes: int = 0  # a conditional model's classes (its inputs take one-hot `y`); else 0

    @classmethod
    def open(
        cls,
        export_dir: Path,
        man: dict[str, Any],
        heldout: np.ndarray,
        cpu: CpuInfo,
        heldout_y: np.ndarray | None = None,
    ) -> Context:
        """The fp32 pair of the export and its paired evaluator on `heldout` images (with
        their one-hot labels `heldout_y`, which a conditional model needs)."""
        n_classes = len(man.get("classes") or [])
        fp32 = {r: open_session(export_dir / f"{r}.fp32.onnx", r, 1, n_classes > 0) for r in ROLES}
        likelihood = man.get("likelihood", "bernoulli")
        gauss = np.asarray(man["gaussian_logvar"]) if man.get("gaussian_logvar") else None
        paired = PairedNLL(
            heldout, fp32["encoder"], fp32["decoder"], likelihood, gauss, y=heldout_y
        )
        return cls(export_dir, fp32, int(man["latent_dim"]), paired, cpu, n_classes=n_classes)

    @property
    def conditional(self) -> bool:
        return self.n_classes > 0

    def session(self, path: Path, role: str):
        """A one-thread session of one of this export's encoders or decoders."""
        return open_session(path, role, 1, self.conditional)

    def ceiling_of(self, fmt: str | None) -> float | None:
        return (self.peak.get("ceiling") or {}).get(fmt) if fmt else None


def apply_candidate(
    ctx: Context,
    cand: Candidate,
    work: Path,
    calib: dict[str, Feeds],
    keep_float: dict[str, list[str]] | None = None,
    tag: str = "",
) -> dict[str, Any]:
    """Write the candidate's encoder and decoder under `work` (`{role}.{recipe}{tag}.onnx`),
    calibrated on `calib` ({role: feeds}), keeping `keep_float`'s Gemm nodes in float;
    returns the two sessions."""
    recipe = RECIPES[cand.recipe]
    cand.format = gemm_format(recipe, ctx.cpu)
    cand.ceiling = ctx.ceiling_of(cand.format)
    cand.kept_float = {r: list(v) for r, v in (keep_float or {}).items() if v}
    sessions = {}
    for role in ROLES:
        path = work / f"{role}.{cand.recipe}{tag}.onnx"
        src = ctx.export_dir / f"{role}.fp32.onnx"
        apply_recipe(recipe, src, path, calib[role], keep_float=cand.kept_float.get(role, ()))
        sessions[role] = ctx.session(path, role)
        cand.bytes[role] = path.stat().st_size
    return sessions


def score_accuracy(
    ctx: Context, cand: Candidate, sessions: dict[str, Any], budget: float, done=None
) -> np.ndarray:
    """The pair's NLL increase, scored until the budget decision is clear; returns the
    per-image NLLs (to be extended later)."""
    d, nll = ctx.paired.sequential(sessions["encoder"], sessions["decoder"], budget, done)
    cand.nll_delta, cand.nll_delta_se, cand.nll_images = d.mean, d.se, d.n
    cand.within_budget = d.mean <= budget
    return nll


def report_accuracy(
    ctx: Context, cand: Candidate, sessions: dict[str, Any], n: int, done=None
) -> None:
    """The pair's increase on `n` images, and the encoder's and decoder's shares of it."""
    nll = ctx.paired.per_image(sessions["encoder"], sessions["decoder"], n, done)
    d = _delta(ctx, nll)
    cand.nll_delta, cand.nll_delta_se, cand.nll_images = d.mean, d.se, d.n
    enc = ctx.paired.per_image(sessions["encoder"], ctx.fp32["decoder"], n)
    dec = ctx.paired.per_image(ctx.fp32["encoder"], sessions["decoder"], n)
    cand.encoder_nll_delta = _delta(ctx, enc).mean
    cand.decoder_nll_delta = _delta(ctx, dec).mean


def _delta(ctx: Context, nll: np.ndarray):
    from .paired import summarize

    return summarize(nll - ctx.paired.base(len(nll)))


# --------------------------------------------------------------------------- speed


def _feeds(ctx: Context, width: int) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    """Timing inputs per (role, batch): random rows, and for a conditional model one-hot
    labels cycling through the classes."""
    rng = np.random.default_rng(0)
    out = {}
    for role in ROLES:
        w = width if role == "encoder" else ctx.latent_dim
        for bs in BATCHES:
            data = rng.random((bs, w), dtype=np.float32)
            out[(role, bs)] = feeds(role, data, cycle_one_hot(bs, ctx.n_classes))
    return out


def _reps(fn) -> int:
    fn()
    t0 = time.perf_counter_ns()
    fn()
    per_call = max(time.perf_counter_ns() - t0, 1000) / 1e6
    return int(min(200, max(2, round(ROUND_MS / per_call))))


def time_candidates(
    ctx: Context, live: list[tuple[Candidate, dict[str, Any]]], width: int, drop: bool = True
) -> None:
    """Speedups (CPU time, fp32 p50 / candidate p50) of every live candidate, in two stages;
    with `drop`, a candidate clearly slower after the first is marked `dropped` and not timed
    further."""
    inputs = _feeds(ctx, width)
    samples: dict[tuple[str, str, int], list[int]] = {}
    running = list(live)
    for stage, rounds in enumerate(STAGE_ROUNDS):
        for (role, bs), feed in inputs.items():
            calls = {"fp32": lambda s=ctx.fp32[role], f=feed: s.run(None, f)}
            for cand, sess in running:
                calls[cand.label] = lambda s=sess[role], f=feed: s.run(None, f)
            res = timing.interleaved(
                calls,
                rounds=rounds,
                reps=_reps(calls["fp32"]),
                warmup=2 if stage == 0 else 0,
                cpu_clock=time.thread_time_ns,
            )
            for name, t in res.items():
                samples.setdefault((name, role, bs), []).extend(t.cpu_samples_ns)
        for cand, _ in running:
            _fill_speed(ctx, cand, samples)
        if stage == 0 and running and drop:
            best = max(c.score for c, _ in running)
            for cand, _ in running:
                if cand.score < DROP_BELOW * best:
                    cand.dropped = (
                        f"slower: {cand.score / best:.0%} of the best score after "
                        f"{STAGE_ROUNDS[0]} rounds"
                    )
            running = [(c, s) for c, s in running if c.dropped is None]


def _fill_speed(ctx: Context, cand: Candidate, samples: dict) -> None:
    for role in ROLES:
        for bs in BATCHES:
            key = f"{role}@{bs}"
            ref = float(np.median(samples[("fp32", role, bs)]))
            mine = float(np.median(samples[(cand.label, role, bs)]))
            cand.p50_us[key] = mine / 1e3
            cand.speedup[key] = ref / mine if mine > 0 else math.nan
            if cand.ceiling:
                cand.share[key] = cand.speedup[key] / cand.ceiling
