"""Choosing the int8 recipe under an accuracy budget, and writing the winners into the export.

The search, in order:
1. calibration data, and this CPU's int8 ceilings (`bench.peak`, the formats the candidates
   use; a fraction of a second);
2. each candidate recipe (`recipes.auto_candidates` for this CPU, or the one asked for) is
   applied to both models and its accuracy scored (`paired`): chunk by chunk until it is
   clearly within or over the budget; one clearly over is dropped there;
3. the rest are timed against fp32 together (`measure.time_candidates`); one clearly slower
   after the first rounds is dropped;
4. the best score within the budget wins (`measure.Candidate.score`: the fastest); its
   accuracy is then scored on `REPORT_IMAGES` images, with the encoder's and decoder's parts;
5. when none fits, mixed precision: the closest candidate with its costliest Gemm nodes kept
   in float (`explain`), fewest first; `BudgetError` when even that fails (unless forced);
6. the firmware pair (`decoder.int8.static.onnx`, `encoder.int8.static.onnx`: fixed scales
   everywhere) and the 4-bit firmware decoder (`decoder.int4.static.onnx`, `int4.py`) are
   always written too, and with `explain` the chosen recipe's per-node costs.
Files move into the export dir atomically, the manifest last.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EdgeVAEError, ModelFileError, UsageError
from ..runtime import manifest
from . import int4, measure
from .apply import apply_recipe, calibration_sets
from .explain import ExplainItem, explain_models
from .measure import Candidate, Context
from .mixed import mixed_precision
from .paired import EVAL_K
from .recipes import FIRMWARE, RECIPES, Recipe, auto_candidates, cpu_info, gemm_format

Progress = Callable[[str, int, int], None]
EVAL_IMAGES = 1000  # held-out images at most (the report's; decisions stop earlier)
REPORT_IMAGES = 1000  # the chosen candidate's and the firmware pair's figures
STATIC = {"encoder": manifest.FIRMWARE_ENCODER, "decoder": manifest.FIRMWARE_DECODER}

__all__ = ["BudgetError", "Candidate", "QuantReport", "calibration_sets", "quantize_export"]


@dataclass
class QuantReport:
    chosen: str
    budget_nats: float
    candidates: list[Candidate]
    calibration: dict[str, Any]
    cpu: dict[str, Any]
    firmware_decoder: str
    firmware_nll_delta: float  # fp32 encoder + static decoder
    firmware_encoder: str = STATIC["encoder"]
    firmware_pair_nll_delta: float = math.nan  # static encoder + static decoder
    firmware_decoder_int4: str = int4.NAME
    firmware_int4_pair_nll_delta: float = math.nan  # static encoder + 4-bit static decoder
    ceiling: dict[str, Any] = field(default_factory=dict)
    mixed: dict[str, Any] | None = None
    explain: list[ExplainItem] | None = None
    forced: bool = False
    seconds: float = 0.0

    @property
    def chosen_candidate(self) -> Candidate:
        return next(c for c in self.candidates if c.label == self.chosen_label)

    @property
    def chosen_label(self) -> str:
        kept = (self.mixed or {}).get("label")
        return kept or self.chosen

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for c, cand in zip(d["candidates"], self.candidates, strict=True):
            c["score"] = cand.score
            c["label"] = cand.label
        return d


class BudgetError(EdgeVAEError):
    """No recipe keeps the NLL increase within the budget (and force was not given)."""

    def __init__(self, budget_nats: float, closest: Candidate, mixed_note: str = ""):
        self.budget_nats = budget_nats
        self.closest = closest
        super().__init__(
            f"no recipe keeps the NLL increase within {budget_nats:g} nats; closest is "
            f"{closest.label} at +{closest.nll_delta:.3f} nats{mixed_note}"
        )


def quantize_export(
    export_dir: Path,
    train_images: np.ndarray,
    heldout_images: np.ndarray,
    *,
    train_labels: np.ndarray | None = None,
    heldout_labels: np.ndarray | None = None,
    recipe: str = "auto",
    budget_nats: float = 0.1,
    calib: int = 5000,
    seed: int = 0,
    force: bool = False,
    extra_candidates: list[str] | None = None,
    explain: bool = False,
    progress: Progress | None = None,
) -> QuantReport:
    """Quantize encoder.fp32.onnx/decoder.fp32.onnx into *.int8.onnx under the budget, and
    write the firmware pair (*.int8.static.onnx). With `explain`, the chosen recipe's cost per
    quantized node goes into the report and the manifest. A conditional model (the manifest
    lists `classes`) needs the images' one-hot labels in its classes, `train_labels` and
    `heldout_labels` ([N, C], `runtime.labels.match_one_hot`): calibration feeds them beside
    the images and latents, and the NLL is the conditional -log p(x | y)."""
    start = time.perf_counter()
    progress = progress or (lambda stage, done, total: None)
    check_options(recipe, budget_nats, calib, extra_candidates)
    names = auto_candidates(cpu_info()) if recipe == "auto" else [recipe]
    names += [n for n in (extra_candidates or []) if n not in names]
    man = manifest.read(export_dir)
    for role in ("encoder", "decoder"):
        if not (export_dir / f"{role}.fp32.onnx").exists():
            raise ModelFileError(f"{export_dir}: {role}.fp32.onnx missing; export the run first")
    _check_labels(man, train_images, train_labels, heldout_images, heldout_labels)
    fp32 = manifest.digests(export_dir, ("encoder.fp32.onnx", "decoder.fp32.onnx"))
    heldout = np.ascontiguousarray(heldout_images[:EVAL_IMAGES], dtype=np.float32)
    heldout_y = None if heldout_labels is None else heldout_labels[:EVAL_IMAGES]
    ctx = Context.open(export_dir, man, heldout, cpu_info(), heldout_y)
    progress("calibrating", 0, 1)
    enc_cal, dec_cal = calibration_sets(export_dir, train_images, calib, seed, train_labels)
    cal = {"encoder": enc_cal, "decoder": dec_cal}
    ctx.peak = _probe(ctx, names)
    progress("calibrating", 1, 1)
    with tempfile.TemporaryDirectory(dir=export_dir, prefix=".quantize-") as tmp:
        work = Path(tmp)
        search = _Search(ctx, work, cal, budget_nats, progress)
        results = search.run(names)
        chosen, forced, mixed = search.choose(results, force)
        fw = _firmware(ctx, work, cal, progress)
        items = None
        if explain:
            items = explain_models(
                ctx, RECIPES[chosen.recipe].method, search.paths(chosen), work,
                progress=progress,
            )  # fmt: skip
        moves = [(path, export_dir / f"{r}.int8.onnx") for r, path in search.paths(chosen).items()]
        moves += [(work / name, export_dir / name) for name in (*STATIC.values(), int4.NAME)]
        report = QuantReport(
            chosen=chosen.recipe,
            budget_nats=budget_nats,
            candidates=results,
            calibration=_calibration_info(ctx, cal, seed),
            cpu=ctx.cpu.to_dict(),
            firmware_decoder=STATIC["decoder"],
            firmware_nll_delta=fw["decoder"],
            firmware_pair_nll_delta=fw["pair"],
            firmware_int4_pair_nll_delta=fw["int4_pair"],
            ceiling=_ceiling_info(ctx.peak),
            mixed=mixed,
            explain=items,
            forced=forced,
        )
        report.seconds = time.perf_counter() - start
        manifest.commit(export_dir, moves, lambda man: _record(man, report, chosen), fp32)
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


def _probe(ctx: Context, names: list[str]) -> dict[str, Any]:
    """The int8 ceilings of the formats these candidates run (and the firmware's)."""
    from ..bench.peak import peak_probe

    formats = {gemm_format(RECIPES[n], ctx.cpu) for n in (*names, FIRMWARE.name)}
    return peak_probe(1, formats=tuple(sorted(f for f in formats if f)), runs=9)


def _ceiling_info(peak: dict[str, Any]) -> dict[str, Any]:
    keep = ("ceiling", "shape", "threads", "runs", "seconds")
    info = {k: peak.get(k) for k in keep}
    info["formats"] = {f: v.get("cpu_gmac_per_s") for f, v in (peak.get("formats") or {}).items()}
    return info


def _check_labels(man: dict[str, Any], train, train_y, heldout, heldout_y) -> None:
    """A conditional model needs one-hot labels in its classes, row for row; an
    unconditional one takes none."""
    n_classes = len(man.get("classes") or [])
    for images, y, param in (
        (train, train_y, "train_labels"),
        (heldout, heldout_y, "heldout_labels"),
    ):
        if not n_classes:
            if y is not None:
                raise UsageError("the model is not conditional: it takes no labels", param=param)
            continue
        if y is None:
            raise UsageError(
                f"the model is conditional ({n_classes} classes): give the images' labels",
                param=param,
            )
        if y.shape != (len(images), n_classes):
            raise UsageError(
                f"must be one-hot rows [{len(images)}, {n_classes}], got {list(y.shape)}",
                param=param,
            )


def _calibration_info(ctx: Context, cal: dict[str, dict], seed: int) -> dict[str, Any]:
    base = ctx.paired.base(REPORT_IMAGES)
    labels = " (each with its image's label)" if ctx.conditional else ""
    return {
        "encoder_images": len(cal["encoder"]["x"]),
        "decoder_z": len(cal["decoder"]["z"]),
        "decoder_z_from": f"posterior means of the encoder images + N(0, I) draws{labels}",
        "conditional": ctx.conditional,
        "seed": seed,
        "heldout_images": ctx.paired.n_images,
        "heldout_split": "valid",
        "eval_k": EVAL_K,
        "fp32_nll": float(base.mean()),
        "fp32_nll_images": len(base),
    }


class _Search:
    """The candidates' files, sessions and per-image NLLs while the search runs."""

    def __init__(self, ctx: Context, work: Path, cal, budget: float, progress: Progress):
        self.ctx, self.work, self.cal, self.budget = ctx, work, cal, budget
        self.progress = progress
        self.sessions: dict[str, dict[str, Any]] = {}
        self.nll: dict[str, np.ndarray] = {}
        self.tags: dict[str, str] = {}

    def paths(self, cand: Candidate) -> dict[str, Path]:
        tag = self.tags.get(cand.label, "")
        return {r: self.work / f"{r}.{cand.recipe}{tag}.onnx" for r in ("encoder", "decoder")}

    def add(self, cand: Candidate, keep_float=None, tag: str = "") -> bool:
        """Apply and score one candidate; False when it failed or is clearly over budget."""
        try:
            sess = measure.apply_candidate(self.ctx, cand, self.work, self.cal, keep_float, tag)
            self.nll[cand.label] = measure.score_accuracy(self.ctx, cand, sess, self.budget)
        except EdgeVAEError as exc:
            cand.error = str(exc)
            return False
        self.sessions[cand.label], self.tags[cand.label] = sess, tag
        if not cand.within_budget:
            cand.dropped = f"over budget after {cand.nll_images} images"
        return cand.within_budget

    def run(self, names: list[str]) -> list[Candidate]:
        results = [Candidate(n) for n in names]
        live = []
        for i, cand in enumerate(results):
            self.progress(f"measuring {cand.recipe}", i, len(results))
            if self.add(cand):
                live.append(cand)
        for cand in results:
            cand.score_ceiling = max([c.ceiling or 1.0 for c in results] + [1.0])
        self.progress("timing", 0, 1)
        self.time(live)
        self.progress("timing", 1, 1)
        return results

    def time(self, cands: list[Candidate]) -> None:
        width = self.ctx.paired.x.shape[1]
        measure.time_candidates(self.ctx, [(c, self.sessions[c.label]) for c in cands], width)

    def choose(self, results: list[Candidate], force: bool):
        """(chosen, forced, mixed-precision record or None); the chosen one's accuracy is
        then scored on REPORT_IMAGES images."""
        ok = [c for c in results if c.error is None and c.within_budget and c.dropped is None]
        mixed = None
        if ok:
            chosen, forced = max(ok, key=lambda c: c.score), False
        else:
            measured = [c for c in results if c.error is None]
            if not measured:
                raise EdgeVAEError(
                    "no recipe could be applied: "
                    + "; ".join(f"{c.recipe}: {c.error}" for c in results)
                )
            closest = min(measured, key=lambda c: c.nll_delta)
            chosen, mixed = mixed_precision(self, closest, results)
            forced = chosen is None
            if chosen is None:
                note = (mixed or {}).get("note", "")
                if not force:
                    raise BudgetError(self.budget, closest, f"; {note}" if note else "")
                chosen = closest
                if not closest.speedup:
                    self.time([closest])
        self.progress("scoring the choice", 0, 1)
        measure.report_accuracy(
            self.ctx, chosen, self.sessions[chosen.label], REPORT_IMAGES, self.nll[chosen.label]
        )
        self.progress("scoring the choice", 1, 1)
        return chosen, forced, mixed


def _firmware(ctx: Context, work: Path, cal, progress: Progress) -> dict[str, float]:
    """The firmware pair: fixed scales everywhere, logits and the encoder's heads included."""
    progress("firmware pair", 0, 1)
    sess = {}
    for role, name in STATIC.items():
        apply_recipe(FIRMWARE, ctx.export_dir / f"{role}.fp32.onnx", work / name, cal[role])
        sess[role] = ctx.session(work / name, role)
    dec, _ = ctx.paired.delta(ctx.fp32["encoder"], sess["decoder"], REPORT_IMAGES)
    pair, _ = ctx.paired.delta(sess["encoder"], sess["decoder"], REPORT_IMAGES)
    int4.write_int4_decoder(ctx.export_dir / "decoder.fp32.onnx", work / int4.NAME, cal["decoder"])
    four = ctx.session(work / int4.NAME, "decoder")
    int4_pair, _ = ctx.paired.delta(sess["encoder"], four, REPORT_IMAGES)
    progress("firmware pair", 1, 1)
    return {"decoder": dec.mean, "pair": pair.mean, "int4_pair": int4_pair.mean}


def _record(man: dict[str, Any], report: QuantReport, chosen: Candidate) -> None:
    """The quantization's outcome into the manifest (`manifest.commit` adds the sha256)."""
    rec = RECIPES[chosen.recipe]
    man["quantization"] = report.to_dict()
    man["recipe"] = rec.to_dict()
    man["firmware_decoder"] = STATIC["decoder"]
    man["firmware_encoder"] = STATIC["encoder"]
    man["firmware_decoder_int4"] = int4.NAME
    man["int8_vs_fp32"] = {
        "nll_delta_nats": chosen.nll_delta,
        "speedup": chosen.speedup,
        "kept_float": chosen.kept_float,  # mixed precision: role -> Gemm nodes left in float
    }
    man["cpu_specific"] = None if rec.exact_across_cpus else _why_cpu_specific(rec)
    man["versions"] = manifest.versions()


def _why_cpu_specific(rec: Recipe) -> str:
    if rec.method == "dynamic":
        why = "dynamic quantization computes scales in float per batch; integer kernels differ"
    elif rec.method == "static":
        why = "full-range u8 x s8 pair sums saturate in 16 bits on x86 without VNNI only"
    else:
        why = "float16/int4 kernels differ between CPUs"
    return f"{rec.name} is not bit-exact across CPUs: {why}; decoder.int8.static.onnx is"
