"""int8 (and opt-in int4/fp16) models from the fp32 export, chosen under an accuracy budget.

All quantization is onnxruntime's own tooling; this module feeds it calibration data, picks
among recipes by measuring them (accuracy on held-out images in nats, speed interleaved with
fp32), and writes the winners into the export dir atomically, manifest last.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import fsio
from ..errors import EdgeVAEError, UsageError
from ..runtime import manifest, metrics, timing
from ..runtime.session import DECODER_IO, ENCODER_IO, open_session
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


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantizer logs advice and prints progress; the CLI shows its own."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


class _Reader:
    """Equal-sized calibration batches: onnxruntime's histogram calibrators stack them."""

    def __init__(self, name: str, data: np.ndarray, batch: int = 256):
        if len(data) > batch:
            data = data[: len(data) - len(data) % batch]
        batch = min(batch, len(data))
        self.items = iter([{name: data[i : i + batch]} for i in range(0, len(data), batch)])

    def get_next(self):
        return next(self.items, None)


def calibration_sets(
    export_dir: Path, train_images: np.ndarray, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Encoder: n training images. Decoder: their posterior means plus as many prior draws."""
    if n < 1:
        raise UsageError(f"--calib must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(train_images))[: min(n, len(train_images))]
    x = np.ascontiguousarray(train_images[idx], dtype=np.float32)
    enc = open_session(export_dir / "encoder.fp32.onnx", "encoder")
    mu = np.concatenate(
        [enc.run(["mu"], {"x": x[i : i + 1024]})[0] for i in range(0, len(x), 1024)]
    )
    z = np.concatenate([mu, rng.standard_normal(mu.shape).astype(np.float32)])
    return x, z


def _gemm_to_matmul(model):
    """Gemm(transB=1) -> MatMul + Add, so MatMulNBits can see the weights."""
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    nodes = []
    for node in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Gemm" or attrs.get("transA", 0) or node.input[1] not in inits:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            w = w.T
        alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
        wname = node.input[1] + "_kn"
        g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w * alpha), wname))
        mm_out = node.output[0] + "_mm"
        nodes.append(
            helper.make_node("MatMul", [node.input[0], wname], [mm_out], node.name + "_mm")
        )
        if len(node.input) > 2 and node.input[2]:
            b = numpy_helper.to_array(inits[node.input[2]]) * beta
            bname = node.input[2] + "_b"
            g.initializer.append(numpy_helper.from_array(b.astype(np.float32), bname))
            nodes.append(
                helper.make_node("Add", [mm_out, bname], [node.output[0]], node.name + "_add")
            )
        else:
            nodes[-1].output[0] = node.output[0]
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.checker.check_model(model)
    return model


def apply_recipe(recipe: Recipe, src: Path, dst: Path, calib: np.ndarray, input_name: str) -> None:
    """Write dst, the recipe applied to the fp32 model src, with edgevae metadata."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    qt = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        out = Path(tmp) / "q.onnx"
        if recipe.method == "static" and recipe.defaults:
            quantize_static(str(src), str(out), _Reader(input_name, calib))
        elif recipe.method == "static":
            extra: dict[str, Any] = {}
            if recipe.float_output:
                extra["OpTypesToExcludeOutputQuantization"] = ["Gemm", "MatMul"]
            quantize_static(
                str(src),
                str(out),
                _Reader(input_name, calib),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Gemm"],
                per_channel=recipe.per_channel,
                reduce_range=recipe.reduce_range,
                activation_type=qt[recipe.activation],
                weight_type=qt[recipe.weight],
                calibrate_method=CalibrationMethod.Percentile
                if recipe.calibration == "percentile"
                else CalibrationMethod.MinMax,
                extra_options=extra,
            )
        elif recipe.method == "dynamic":
            quantize_dynamic(
                str(src),
                str(out),
                per_channel=recipe.per_channel,
                weight_type=qt[recipe.weight],
                op_types_to_quantize=["Gemm", "MatMul"],
            )
        elif recipe.method == "int4":
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            q = MatMulNBitsQuantizer(
                _gemm_to_matmul(onnx.load(str(src))), block_size=32, is_symmetric=True
            )
            q.process()
            q.model.save_model_to_file(str(out), use_external_data_format=False)
        elif recipe.method == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(out))
        else:  # pragma: no cover - recipes are a closed set
            raise ValueError(recipe.method)
        model = onnx.load(str(out))
        meta = {p.key: p.value for p in onnx.load(str(src)).metadata_props}
        meta.update(
            {
                "edgevae.precision": "int8"
                if recipe.method in ("static", "dynamic")
                else recipe.method,
                "edgevae.recipe": recipe.name,
            }
        )
        del model.metadata_props[:]
        for k, v in sorted(meta.items()):
            model.metadata_props.add(key=k, value=v)
        model.producer_name = "edgevae"
        fsio.write_bytes(dst, model.SerializeToString())


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
    if not budget_nats > 0:
        raise UsageError(f"--budget-nats must be > 0, got {budget_nats}")
    if recipe != "auto" and recipe not in RECIPES:
        raise UsageError(f"--recipe must be auto or one of {', '.join(RECIPES)}")
    man = manifest.read(export_dir)
    for role in ("encoder", "decoder"):
        if not (export_dir / f"{role}.fp32.onnx").exists():
            raise EdgeVAEError(f"{export_dir}: {role}.fp32.onnx missing; run `edgevae export`")
    cpu = cpu_info()
    names = auto_candidates(cpu) if recipe == "auto" else [recipe]
    names += [n for n in (extra_candidates or []) if n not in names]
    likelihood = man.get("likelihood", "bernoulli")
    gauss = np.asarray(man["gaussian_logvar"]) if man.get("gaussian_logvar") else None
    heldout = np.ascontiguousarray(heldout_images[:EVAL_IMAGES], dtype=np.float32)

    progress("calibrating", 0, 1)
    x_cal, z_cal = calibration_sets(export_dir, train_images, calib, seed)
    progress("calibrating", 1, 1)
    fp32 = {
        "encoder": open_session(export_dir / "encoder.fp32.onnx", "encoder"),
        "decoder": open_session(export_dir / "decoder.fp32.onnx", "decoder"),
        "latent_dim": int(man["latent_dim"]),
    }
    base = nll(fp32["encoder"], fp32["decoder"], heldout, likelihood, gauss)

    with tempfile.TemporaryDirectory(dir=export_dir, prefix=".quantize-") as tmp:
        work = Path(tmp)
        results: list[Candidate] = []
        for i, name in enumerate(names):
            progress(f"measuring {name}", i, len(names))
            try:
                for role, data, io_ in (
                    ("encoder", x_cal, ENCODER_IO),
                    ("decoder", z_cal, DECODER_IO),
                ):
                    apply_recipe(
                        RECIPES[name],
                        export_dir / f"{role}.fp32.onnx",
                        work / f"{role}.{name}.onnx",
                        data,
                        io_[0][0],
                    )
                results.append(
                    measure(name, work, fp32, heldout, likelihood, gauss, base, budget_nats)
                )
            except EdgeVAEError as exc:
                results.append(Candidate(name, error=str(exc)))
        progress("measuring", len(names), len(names))
        ok = [c for c in results if c.error is None and c.within_budget]
        forced = False
        if ok:
            chosen = max(ok, key=lambda c: c.score)
        else:
            measured = [c for c in results if c.error is None]
            if not measured:
                raise EdgeVAEError(
                    "no recipe could be applied: "
                    + "; ".join(f"{c.recipe}: {c.error}" for c in results)
                )
            closest = min(measured, key=lambda c: c.nll_delta)
            if not force:
                raise EdgeVAEError(
                    f"no recipe keeps the NLL increase within {budget_nats:g} nats; closest is "
                    f"{closest.recipe} at +{closest.nll_delta:.3f} nats (raise --budget-nats, "
                    "or pass --force to accept it)"
                )
            chosen, forced = closest, True

        # The firmware needs fixed scales everywhere, logits included.
        progress("firmware decoder", 0, 1)
        apply_recipe(
            FIRMWARE,
            export_dir / "decoder.fp32.onnx",
            work / "decoder.int8.static.onnx",
            z_cal,
            "z",
        )
        fw_dec = open_session(work / "decoder.int8.static.onnx", "decoder")
        fw_delta = nll(fp32["encoder"], fw_dec, heldout, likelihood, gauss) - base
        progress("firmware decoder", 1, 1)

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
            "heldout_images": len(heldout),
            "heldout_split": "valid",
            "eval_k": EVAL_K,
            "fp32_nll": base,
        },
        cpu=cpu.to_dict(),
        firmware_decoder="decoder.int8.static.onnx",
        firmware_nll_delta=fw_delta,
        forced=forced,
    )
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
    return report


def _why_cpu_specific(rec: Recipe) -> str:
    if rec.method == "dynamic":
        why = "dynamic quantization computes scales in float per batch; integer kernels differ"
    elif rec.method == "static":
        why = "full-range u8 x s8 pair sums saturate in 16 bits on x86 without VNNI only"
    else:
        why = "float16/int4 kernels differ between CPUs"
    return f"{rec.name} is not bit-exact across CPUs: {why}; decoder.int8.static.onnx is"
