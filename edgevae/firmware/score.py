"""The firmware's anomaly score in numpy, bit for bit what the kernel's edgevae_score computes.

A board computes one of two scores (chosen when the C weights are generated), in nats, higher
= more anomalous, both from one encoder and one decoder pass with z = mu:

    elbo(x)   = -log p(x | z = mu(x)) + KL(q(z|x) || N(0, I))
    excess(x) = elbo(x) - floor(x)

where floor(x) is the least -log p(x | z) any decoder of the likelihood reaches
(runtime/score.py, the runtime's default score): for Bernoulli pixels the image's entropy
sum_i H(x_i), H(x) = -x log x - (1 - x) log(1 - x) (0 for a binary image); for a Gaussian
likelihood the constant 0.5 * sum(log 2 pi + lv), so the Gaussian excess keeps the squared
errors alone.

- mu, logvar: the int8 encoder with fixed scales (encoder.int8.static.onnx), run in integers
  (`encoder.py`); the pixels are x = p / 255 for uint8 p.
- logits at z = mu: the int8 decoder with fixed scales (decoder.int8.static.onnx). mu goes
  from the encoder's quantization to the decoder's through a 256-entry table (DequantizeLinear
  then QuantizeLinear in float32, as onnxruntime runs the two models one after the other).
- Bernoulli: -log p(x|z) = sum over pixels of softplus(l) - x * l (the continuous-BCE form of
  runtime.metrics.log_px_given_z); Gaussian (Frey Face, the manifest's gaussian_logvar):
  0.5 * sum(log 2 pi + lv + (x - sigmoid(l))**2 * exp(-lv)).
- KL = 0.5 * sum(mu**2 + exp(logvar) - 1 - logvar).
- floor: a 256-entry table of H(p / 255) summed over the pixels, or the Gaussian's constant.

Both the integer networks and the sums are exact (fixed-point tables, `scoretables.py`), and
the one float conversion at the end is rounded in integers, so `score_images` equals the C
kernel's output to the last bit on every target. The tables' rounding is the only difference
from the float64 formula on the same integer outputs (`float64_score`): a few 1e-5 nats per
image for the models here (README).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelFileError, UsageError
from ..runtime.manifest import pair_files
from ..runtime.score import BOARD_SCORES as KINDS
from ..runtime.score import DEFAULT as DEFAULT_KIND
from .codegen import find_firmware_decoder
from .encoder import IntEncoder, check_pixels, encode_q, load_int_encoder
from .fixedpoint import dequantize_linear
from .intref import IntModel, load_int_model, logits_q
from .scoretables import (
    LIKELIHOODS,
    LOG_2PI,
    ScoreTables,
    build_tables,
    pixel_entropy,
    to_float32,
)


@dataclass
class ScoreModel:
    """An int8 encoder/decoder pair and the tables of the firmware's score."""

    encoder: IntEncoder
    decoder: IntModel
    likelihood: str
    gauss_logvar: np.ndarray | None
    tables: ScoreTables
    kind: str = DEFAULT_KIND  # "excess" or "elbo": what score_images and the kernel compute
    threshold: float | None = None  # the manifest's firmware threshold for `kind`, nats
    threshold_note: str = ""  # why there is none, when there is none


@dataclass
class ScoreParts:
    score: np.ndarray  # float32 [N], nats: the model's kind (excess: recon - floor + kl)
    recon: np.ndarray  # float32 [N]: -log p(x | z = mu), whatever the kind
    kl: np.ndarray  # float32 [N]
    floor: np.ndarray  # float32 [N]: the least -log p(x | z) of any decoder (what excess takes)
    mu_q: np.ndarray  # int64 [N, L]: the encoder heads' quantized outputs
    logvar_q: np.ndarray  # int64 [N, L]
    logits_q: np.ndarray  # int64 [N, D]: the decoder's quantized logits at z = mu


def find_firmware_encoder(export_dir: str | Path, man: dict | None = None) -> Path:
    """The manifest's firmware_encoder, else encoder.int8.static.onnx in the export
    (`man`: the manifest, when the caller has read it)."""
    from ..runtime import manifest

    export_dir = Path(export_dir)
    if man is None and (export_dir / manifest.NAME).is_file():
        man = manifest.read(export_dir)
    name = pair_files(man or {}, "firmware")[0]
    if not isinstance(name, str) or Path(name).name != name:
        raise ModelFileError(
            f"{export_dir}: manifest firmware_encoder {name!r:.60} is not a file name"
        )
    path = export_dir / name
    if not path.is_file():
        raise ModelFileError(
            f"{export_dir}: no {name}; the firmware score needs the statically quantized encoder "
            "(written by `edgevae quantize`)"
        )
    return path


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise UsageError(
            f"must be one of {', '.join(KINDS)} (the scores a board computes), got {kind!r}",
            param="kind",
        )


def manifest_threshold(man: dict, kind: str | None = None) -> tuple[float | None, str, str]:
    """(value, kind, note): the manifest's firmware threshold (nats) for score `kind`, or None
    and why not. `kind` None takes the kind of the manifest's threshold when a board computes
    it (elbo or excess), else DEFAULT_KIND."""
    entry = man.get("threshold")
    stored = entry.get("score") if isinstance(entry, dict) else None
    if kind is None:
        kind = stored if stored in KINDS else DEFAULT_KIND
    check_kind(kind)
    if entry is None:
        return None, kind, "no threshold in the manifest"
    if stored not in KINDS:
        return (
            None,
            kind,
            f"the manifest's threshold is for score {stored!r}, which a board does not compute "
            f"(it computes {' or '.join(KINDS)})",
        )
    if stored != kind:
        return None, kind, f"the manifest's threshold is for score {stored!r}, not {kind}"
    value = entry.get("firmware")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None, kind, "the manifest's threshold has no finite 'firmware' value"
    return float(value), kind, ""


def score_model(
    encoder: str | Path | IntEncoder,
    decoder: str | Path | IntModel,
    likelihood: str = "bernoulli",
    gauss_logvar: np.ndarray | None = None,
    weight_bits: int = 8,
    kind: str = DEFAULT_KIND,
) -> ScoreModel:
    """A ScoreModel from the two QDQ files (or their loaded integer models); `weight_bits`
    4 stores the decoder's 4-bit layers as such (the encoder stays int8); `kind` the score,
    "excess" or "elbo"."""
    check_kind(kind)
    enc = encoder if isinstance(encoder, IntEncoder) else load_int_encoder(encoder)
    dec = decoder if isinstance(decoder, IntModel) else load_int_model(decoder, weight_bits)
    if dec.classes:
        raise ModelFileError(
            f"{dec.source} is a conditional decoder (labels {', '.join(dec.class_names)}); the "
            "firmware score supports unconditional models (anomaly models are unconditional)"
        )
    if enc.latent_dim != dec.latent_dim or enc.input_dim != dec.output_dim:
        raise ModelFileError(
            f"{enc.source} ({enc.input_dim} -> {enc.latent_dim}) does not pair with "
            f"{dec.source} ({dec.latent_dim} -> {dec.output_dim})"
        )
    if likelihood not in LIKELIHOODS:
        raise ModelFileError(f"likelihood must be one of {', '.join(LIKELIHOODS)}: {likelihood!r}")
    logvar = None if gauss_logvar is None else np.asarray(gauss_logvar, np.float64).reshape(-1)
    tables = build_tables(enc, dec, likelihood, logvar if likelihood == "gaussian" else None)
    return ScoreModel(enc, dec, likelihood, logvar, tables, kind)


def load_score_model(
    export_dir: str | Path,
    weight_bits: int = 8,
    kind: str | None = None,
    check_threshold: bool = False,
) -> ScoreModel:
    """The firmware score of an export folder: its static encoder and decoder (with
    `weight_bits` 4 the int4 recipe's decoder), likelihood, Gaussian log-variances and
    firmware threshold from the manifest. `kind` ("excess" or "elbo"); None: the kind of the
    manifest's threshold when a board computes it, else excess (`manifest_threshold`). The
    threshold goes with the model when it is of the model's kind; with `check_threshold`
    (deploying it) only when it was calibrated with these model files (`_threshold_of`):
    scoring alone, or calibrating a new threshold, does not depend on the old one."""
    from ..runtime import manifest

    export_dir = Path(export_dir)
    man = manifest.read(export_dir)
    if man.get("classes"):
        raise ModelFileError(
            f"{export_dir}: a conditional model; the firmware score supports unconditional "
            "models (anomaly models are unconditional)"
        )
    threshold, kind, note = manifest_threshold(man, kind)
    encoder, decoder = (
        find_firmware_encoder(export_dir, man),
        find_firmware_decoder(export_dir, weight_bits),
    )
    if threshold is not None and check_threshold:
        threshold, note = _threshold_of(man, threshold, (encoder.name, decoder.name), export_dir)
    likelihood = man.get("likelihood", "bernoulli")
    logvar = man.get("gaussian_logvar")
    model = score_model(
        encoder,
        decoder,
        likelihood,
        None if logvar is None else np.asarray(logvar, np.float64),
        weight_bits,
        kind,
    )
    model.threshold, model.threshold_note = threshold, note
    return model


def _threshold_of(
    man: dict, value: float, names: tuple[str, str], export_dir: Path
) -> tuple[float | None, str]:
    """The firmware threshold when it was calibrated with these two model files: a
    threshold whose recorded sha256 differ from the files' is refused (the models changed
    since, or it was copied from another export); one calibrated with another decoder (the
    int8 pair's threshold for a 4-bit decoder) is left out, with the reason."""
    from ..runtime import anomaly, manifest

    where = str(export_dir / manifest.NAME)
    models = man["threshold"].get("models") or {}
    if not isinstance(models, dict) or not all(isinstance(v, str) for v in models.values()):
        raise ModelFileError(f"{where}: the threshold's models are not file name -> sha256")
    anomaly.check_models(models, man, where, names)
    missing = [n for n in names if n not in models]
    if models and missing:
        again = " (calibrate it at precision int4 for the 4-bit decoder)"
        return None, (
            f"the threshold was calibrated with {', '.join(sorted(models))}, "
            f"not {', '.join(missing)}{again if pair_files(man, 'int4')[1] in missing else ''}"
        )
    return value, ""


def fixed_point_sums(
    model: ScoreModel, pixels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, ScoreParts]:
    """The kernel's int64 sums: reconstruction and floor (units 2**-frac_bits) and KL (units
    2**-kl_frac_bits), and the integer parts they came from (float fields left empty)."""
    t = model.tables
    p = check_pixels(pixels, model.encoder.input_dim)
    mu_q, lv_q = encode_q(model.encoder, p)
    mu_k, lv_k = mu_q - model.encoder.mu.out_q.qmin, lv_q - model.encoder.logvar.out_q.qmin
    kl = t.kl_mu[mu_k].astype(np.int64).sum(axis=1) + t.kl_logvar[lv_k].astype(np.int64).sum(1)
    lq = logits_q(model.decoder, t.mu_to_zq[mu_k])
    k = lq - model.decoder.logit_q.qmin
    p64 = p.astype(np.int64)
    if t.likelihood == "bernoulli":
        sp = t.softplus[k].astype(np.int64).sum(axis=1)
        rec = sp * (1 << (t.frac_bits - t.softplus_frac_bits)) + (
            p64 * t.neg_logit[k].astype(np.int64)
        ).sum(axis=1)
        floor = t.entropy[p].astype(np.int64).sum(axis=1) << (t.frac_bits - t.entropy_frac_bits)
    else:
        e = 256 * p64 - t.gauss_mean[k].astype(np.int64)
        rec = t.gauss_const + (e * e * t.gauss_weight.astype(np.int64)).sum(axis=1)
        floor = np.full(len(p), t.gauss_const, np.int64)
    empty = np.zeros(0, np.float32)
    return rec, floor, kl, ScoreParts(empty, empty, empty, empty, mu_q, lv_q, lq)


def score_parts(model: ScoreModel, pixels: np.ndarray) -> ScoreParts:
    """The score of the model's kind, its terms and the integer parts, for uint8 images
    [N, D] or [N, H, W].

    score is the exact fixed-point total (elbo: recon + kl; excess: recon - floor + kl)
    rounded once, so it can differ from the same sum of the rounded terms by one unit in the
    last place."""
    t = model.tables
    rec, floor, kl, parts = fixed_point_sums(model, pixels)
    total = rec + kl * (1 << (t.frac_bits - t.kl_frac_bits))
    if model.kind == "excess":
        total = total - floor
    parts.score = to_float32(total, t.frac_bits)
    parts.recon = to_float32(rec, t.frac_bits)
    parts.kl = to_float32(kl, t.kl_frac_bits)
    parts.floor = to_float32(floor, t.frac_bits)
    return parts


def score_images(
    model: str | Path | ScoreModel, pixels: np.ndarray, kind: str | None = None
) -> np.ndarray:
    """Firmware anomaly scores (float32 [N], nats, higher = more anomalous) of uint8 images
    [N, D] or [N, H, W], bit-identical to edgevae_score() in C.

    `model` is an export folder (its static encoder and decoder) or a ScoreModel; `kind`
    ("excess" or "elbo") for a folder, by default the kind `edgevae firmware --score`
    generates for it (load_score_model). Images held as floats in [0, 1] from uint8 data
    convert exactly with np.rint(x * 255).
    """
    if not isinstance(model, ScoreModel):
        model = load_score_model(model, kind=kind)
    elif kind is not None and kind != model.kind:
        raise UsageError(f"the model computes the {model.kind} score, not {kind}", param="kind")
    return score_parts(model, pixels).score


def float64_score(model: ScoreModel, pixels: np.ndarray) -> np.ndarray:
    """The formula of the model's score kind in float64 on the same integer outputs (no
    fixed-point tables): what the tables approximate, for measuring their rounding."""
    p = check_pixels(pixels, model.encoder.input_dim)
    *_, parts = fixed_point_sums(model, p)
    enc = model.encoder
    mu = dequantize_linear(parts.mu_q, enc.mu.out_q).astype(np.float64)
    lv = dequantize_linear(parts.logvar_q, enc.logvar.out_q).astype(np.float64)
    logits = dequantize_linear(parts.logits_q, model.decoder.logit_q).astype(np.float64)
    x = p.astype(np.float64) / 255.0
    kl = 0.5 * (mu**2 + np.exp(lv) - 1.0 - lv).sum(axis=1)
    if model.likelihood == "bernoulli":
        rec = (np.logaddexp(0.0, logits) - x * logits).sum(axis=1)
        floor = pixel_entropy()[p].sum(axis=1)
    else:
        mean = 1.0 / (1.0 + np.exp(-logits))
        lvp = model.gauss_logvar
        rec = 0.5 * (LOG_2PI + lvp + (x - mean) ** 2 * np.exp(-lvp)).sum(axis=1)
        floor = np.full(len(p), 0.5 * float(np.sum(LOG_2PI + lvp)))
    return rec + kl - floor if model.kind == "excess" else rec + kl
