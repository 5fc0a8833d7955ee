"""Choosing the int8 recipe under an accuracy budget, and writing the winners into the export.

Each candidate recipe (`recipes.auto_candidates` for this CPU, or the one asked for) is applied
(`apply`), then measured: accuracy on held-out images in nats with common random numbers
against fp32, speed interleaved with fp32. The fastest within the budget wins; the firmware
decoder (fixed scales everywhere) is always written too. Files move into the export dir
atomically, the manifest last.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import fsio
from ..errors import EdgeVAEError, ModelFileError, UsageError
from ..runtime import manifest, metrics, timing
from ..runtime.session import DECODER_IO, ENCODER_IO, open_session
from .apply import apply_recipe, calibration_sets
from .recipes import FIRMWARE, RECIPES, Recipe, auto_candidates, cpu_info

Progress = Callable[[str, int, int], None]
EVAL_K = 64
EVAL_IMAGES = 1000


@dataclass
class Candidate:
    recipe: str
    nll_delta: float = math.nan  # int8 encoder + int8 decoder vs fp32, nats per image
    encoder_nll_delta: float = math.nan
    decoder_nll_delta: float = math.nan
    speedup: dict[str, float] = field(default_factory=dict)  # "decoder@1" -> fp32/int8 p50
    p50_us: dict[str, float] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    within_budget: bool = False
    error: str | None = None

    @property
    def score(self) -> float:
        """Geometric mean speedup over encoder/decoder at batch 1 and 256."""
        vals = [v for v in self.speedup.values() if v > 0]
        return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else 0.0


@dataclass
class QuantReport:
    chosen: str
    budget_nats: float
    candidates: list[Candidate]
    calibration: dict[str, Any]
    cpu: dict[str, Any]
    firmware_decoder: str
    firmware_nll_delta: float
    forced: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for c, cand in zip(d["candidates"], self.candidates, strict=True):
            c["score"] = cand.score
        return d


class BudgetError(EdgeVAEError):
    """No recipe keeps the NLL increase within the budget (and force was not given)."""

    def __init__(self, budget_nats: float, closest: Candidate):
        self.budget_nats = budget_nats
        self.closest = closest
        super().__init__(
            f"no recipe keeps the NLL increase within {budget_nats:g} nats; closest is "
            f"{closest.recipe} at +{closest.nll_delta:.3f} nats"
        )


def _callables(enc, dec):
    def encode(x):
        mu, lv = enc.run(["mu", "logvar"], {"x": x})
        return mu, lv

    def decode(z):
        return dec.run(["logits"], {"z": z})[0]

    return encode, decode


def nll(enc, dec, x, likelihood, gauss, k=EVAL_K, seed=0) -> float:
    e, d = _callables(enc, dec)
    return metrics.evaluate(x, e, d, likelihood, k=k, seed=seed, gauss_logvar=gauss).nll_iw


def measure(
    recipe: str,
    work: Path,
    fp32: dict[str, Any],
    heldout: np.ndarray,
    likelihood: str,
    gauss,
    base_nll: float,
    budget: float,
    rounds: int = 6,
) -> Candidate:
    """Accuracy (common random numbers with fp32) and speed (interleaved with fp32)."""
    cand = Candidate(recipe)
    enc = open_session(work / f"encoder.{recipe}.onnx", "encoder")
    dec = open_session(work / f"decoder.{recipe}.onnx", "decoder")
    cand.nll_delta = nll(enc, dec, heldout, likelihood, gauss) - base_nll
    cand.encoder_nll_delta = nll(enc, fp32["decoder"], heldout, likelihood, gauss) - base_nll
    cand.decoder_nll_delta = nll(fp32["encoder"], dec, heldout, likelihood, gauss) - base_nll
    cand.within_budget = cand.nll_delta <= budget
    rng = np.random.default_rng(0)
    for role, sess, ref in (("encoder", enc, fp32["encoder"]), ("decoder", dec, fp32["decoder"])):
        name = "x" if role == "encoder" else "z"
        width = heldout.shape[1] if role == "encoder" else fp32["latent_dim"]
        for bs in (1, 256):
            feed = {name: rng.random((bs, width), dtype=np.float32)}
            t = timing.interleaved(
                {
                    "fp32": lambda s=ref, f=feed: s.run(None, f),
                    "int8": lambda s=sess, f=feed: s.run(None, f),
                },
                rounds=rounds,
                reps=40 if bs == 1 else 4,
            )
            cand.speedup[f"{role}@{bs}"] = t["fp32"].p50_us / t["int8"].p50_us
            cand.p50_us[f"{role}@{bs}"] = t["int8"].p50_us
    for role in ("encoder", "decoder"):
        cand.bytes[role] = (work / f"{role}.{recipe}.onnx").stat().st_size
    return cand


def quantize_export(
    export_dir: Path,
    train_images: np.ndarray,
    heldout_images: np.ndarray,
    *,
    recipe: str = "auto",
    budget_nats: float = 0.1,
    calib: int = 5000,
    seed: int = 0,
    force: bool = False,
    extra_candidates: list[str] | None = None,
    progress: Progress | None = None,
) -> QuantReport:
    """Quantize encoder.fp32.onnx/decoder.fp32.onnx into *.int8.onnx under the budget."""
    progress = progress or (lambda stage, done, total: None)
    check_options(recipe, budget_nats, calib, extra_candidates)
    names = auto_candidates(cpu_info()) if recipe == "auto" else [recipe]
    names += [n for n in (extra_candidates or []) if n not in names]
    man = manifest.read(export_dir)
    for role in ("encoder", "decoder"):
        if not (export_dir / f"{role}.fp32.onnx").exists():
            raise ModelFileError(f"{export_dir}: {role}.fp32.onnx missing; export the run first")
    ctx = _Context.open(export_dir, man, heldout_images)
    progress("calibrating", 0, 1)
    x_cal, z_cal = calibration_sets(export_dir, train_images, calib, seed)
    progress("calibrating", 1, 1)
    with tempfile.TemporaryDirectory(dir=export_dir, prefix=".quantize-") as tmp:
        work = Path(tmp)
        results = _measure_all(ctx, names, work, x_cal, z_cal, budget_nats, progress)
        chosen, forced = _choose(results, budget_nats, force)
        fw_delta = _firmware_decoder(ctx, work, z_cal, progress)
        for role in ("encoder", "decoder"):
            fsio.move_into(work / f"{role}.{chosen.recipe}.onnx", export_dir / f"{role}.int8.onnx")
        fsio.move_into(work / "decoder.int8.static.onnx", export_dir / "decoder.int8.static.onnx")
    report = QuantReport(
        chosen=chosen.recipe,
        budget_nats=budget_nats,
        candidates=results,
        calibration={
            "encoder_images": len(x_cal),
            "decoder_z": len(z_cal),
            "decoder_z_from": "posterior means of the encoder images + N(0, I) draws",
            "seed": seed,
            "heldout_images": len(ctx.heldout),
            "heldout_split": "valid",
            "eval_k": EVAL_K,
            "fp32_nll": ctx.base_nll,
        },
        cpu=ctx.cpu.to_dict(),
        firmware_decoder="decoder.int8.static.onnx",
        firmware_nll_delta=fw_delta,
        forced=forced,
    )
    _record(export_dir, report, chosen)
    return report


def check_options(recipe: str, budget_nats: float, calib: int, also: list[str] | None) -> None:
    """Refuse bad options before any work."""
    if not budget_nats > 0:
        raise UsageError(f"must be > 0, got {budget_nats}", param="budget_nats")
    if calib < 1:
        raise UsageError(f"must be >= 1, got {calib}", param="calib")
    if recipe != "auto" and recipe not in RECIPES:
        raise UsageError(f"must be auto or one of {', '.join(RECIPES)}", param="recipe")
    for name in also or []:
        if name not in RECIPES:
            raise UsageError(f"unknown recipe {name!r} ({', '.join(RECIPES)})", param="also")


@dataclass
class _Context:
    """What every candidate is measured against: the fp32 pair and its held-out NLL."""

    export_dir: Path
    fp32: dict[str, Any]
    heldout: np.ndarray
    likelihood: str
    gauss: np.ndarray | None
    base_nll: float
    cpu: Any

    @classmethod
    def open(cls, export_dir: Path, man: dict[str, Any], heldout_images: np.ndarray) -> _Context:
        fp32 = {
            "encoder": open_session(export_dir / "encoder.fp32.onnx", "encoder"),
            "decoder": open_session(export_dir / "decoder.fp32.onnx", "decoder"),
            "latent_dim": int(man["latent_dim"]),
        }
        likelihood = man.get("likelihood", "bernoulli")
        gauss = np.asarray(man["gaussian_logvar"]) if man.get("gaussian_logvar") else None
        heldout = np.ascontiguousarray(heldout_images[:EVAL_IMAGES], dtype=np.float32)
        base = nll(fp32["encoder"], fp32["decoder"], heldout, likelihood, gauss)
        return cls(export_dir, fp32, heldout, likelihood, gauss, base, cpu_info())


def _measure_all(
    ctx: _Context,
    names: list[str],
    work: Path,
    x_cal: np.ndarray,
    z_cal: np.ndarray,
    budget_nats: float,
    progress: Progress,
) -> list[Candidate]:
    """Apply and measure every candidate in `work`; a recipe that fails is kept with its error."""
    results: list[Candidate] = []
    for i, name in enumerate(names):
        progress(f"measuring {name}", i, len(names))
        try:
            for role, data, io_ in (("encoder", x_cal, ENCODER_IO), ("decoder", z_cal, DECODER_IO)):
                src = ctx.export_dir / f"{role}.fp32.onnx"
                apply_recipe(RECIPES[name], src, work / f"{role}.{name}.onnx", data, io_[0][0])
            results.append(
                measure(
                    name,
                    work,
                    ctx.fp32,
                    ctx.heldout,
                    ctx.likelihood,
                    ctx.gauss,
                    ctx.base_nll,
                    budget_nats,
                )
            )
        except EdgeVAEError as exc:
            results.append(Candidate(name, error=str(exc)))
    progress("measuring", len(names), len(names))
    return results


def _choose(results: list[Candidate], budget_nats: float, force: bool) -> tuple[Candidate, bool]:
    """The best-scoring candidate within the budget; else the closest one when forced."""
    ok = [c for c in results if c.error is None and c.within_budget]
    if ok:
        return max(ok, key=lambda c: c.score), False
    measured = [c for c in results if c.error is None]
    if not measured:
        raise EdgeVAEError(
            "no recipe could be applied: " + "; ".join(f"{c.recipe}: {c.error}" for c in results)
        )
    closest = min(measured, key=lambda c: c.nll_delta)
    if not force:
        raise BudgetError(budget_nats, closest)
    return closest, True


def _firmware_decoder(ctx: _Context, work: Path, z_cal: np.ndarray, progress: Progress) -> float:
    """The firmware needs fixed scales everywhere, logits included: always written."""
    progress("firmware decoder", 0, 1)
    path = work / "decoder.int8.static.onnx"
    apply_recipe(FIRMWARE, ctx.export_dir / "decoder.fp32.onnx", path, z_cal, "z")
    dec = open_session(path, "decoder")
    delta = nll(ctx.fp32["encoder"], dec, ctx.heldout, ctx.likelihood, ctx.gauss) - ctx.base_nll
    progress("firmware decoder", 1, 1)
    return delta


def _record(export_dir: Path, report: QuantReport, chosen: Candidate) -> None:
    """The quantization's outcome into the manifest, with the new files' sha256."""
    man = manifest.read(export_dir)
    rec = RECIPES[chosen.recipe]
    man["quantization"] = report.to_dict()
    man["recipe"] = rec.to_dict()
    man["firmware_decoder"] = "decoder.int8.static.onnx"
    man["int8_vs_fp32"] = {"nll_delta_nats": chosen.nll_delta, "speedup": chosen.speedup}
    man["cpu_specific"] = None if rec.exact_across_cpus else _why_cpu_specific(rec)
    manifest.refresh_files(export_dir, man)
    man["versions"] = manifest.versions()
    manifest.write(export_dir, man)


def _why_cpu_specific(rec: Recipe) -> str:
    if rec.method == "dynamic":
        why = "dynamic quantization computes scales in float per batch; integer kernels differ"
    elif rec.method == "static":
        why = "full-range u8 x s8 pair sums saturate in 16 bits on x86 without VNNI only"
    else:
        why = "float16/int4 kernels differ between CPUs"
    return f"{rec.name} is not bit-exact across CPUs: {why}; decoder.int8.static.onnx is"
