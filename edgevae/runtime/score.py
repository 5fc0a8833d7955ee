"""Anomaly scores in nats per image, higher = more anomalous, from an exported model.

- `excess` (the default): the elbo score minus the least -log p(x | z) any decoder of this
  likelihood could reach for the image: for Bernoulli pixels the image's own per-pixel entropy
  sum_i H(x_i), so the reconstruction part becomes sum_i KL(Bernoulli(x_i) || Bernoulli(p_i)),
  zero for a perfect reconstruction. With intensities in [0, 1] a grey pixel costs H(x_i) nats
  even when the decoder predicts it exactly; that cost measures the image's stroke width and
  anti-aliasing, not how well the model knows it, and it ranks thin or small foreign images as
  normal. For a Gaussian likelihood the least cost is the constant 0.5 sum_i (log 2 pi + lv_i).
  Same cost as `elbo` (the entropy is elementwise on the input); the firmware computes it too.
- `excess-ink`: the excess divided by sqrt(1 + the image's ink), ink = sum_i x_i: nats per
  square root of an inked pixel. A foreign image with little ink has little to get wrong, so
  its excess stays small; this scale undoes that. It helps where the anomalies carry less ink
  than the normal images (one-class MNIST: other digits against an 8) and is about neutral
  elsewhere (docs/anomaly.md has both measured); a heuristic, so not the default.
- `elbo`: -ELBO with z = mu: -log p(x | z = mu) + KL(q(z|x) || N(0, I)). One encoder and one
  decoder pass per image: what a board can afford (the firmware computes it, or excess).
- `iwae`: the k-sample importance-weighted estimate of -log p(x) (k decoder passes).
- `complexity`: the elbo score minus the image's own lossless-compression length in nats
  (Serrà et al., ICLR 2020). A likelihood model can rank simple out-of-distribution images as
  *more* likely than its training data (Nalisnick et al., ICLR 2019); subtracting what a generic
  compressor needs for the image removes the part of the likelihood that only measures how
  simple the image is. The compressor is PNG (deflate after per-row prediction filters, level 9,
  via Pillow, a base dependency): a real image codec like the paper's, deterministic, and
  available on every board; the length counted is the whole PNG file, so a constant header
  shifts every score alike.

Scoring runs in batches, so any number of images takes bounded memory. The Bernoulli
log-likelihood is computed elementwise in float32 and summed in float64 (numpy's float32 exp
and log are vectorised; float64 `logaddexp` took ~35x longer per batch here and dominated the
int8 pair's time): within ~1e-4 nats of the float64 formula in `metrics`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError
from . import metrics

SCORES = ("excess", "excess-ink", "elbo", "iwae", "complexity")
DEFAULT = "excess"
#: The scores the firmware kernel computes too (`edgevae.firmware.score`).
BOARD_SCORES = ("excess", "elbo")
BATCH = 256
MAX_DECODE_ROWS = 65536
_TINY = np.float32(1e-30)


@dataclass
class Scores:
    """Per-image scores [N] (float64, nats) and the parts they are made of."""

    kind: str
    scores: np.ndarray
    parts: dict[str, np.ndarray] = field(default_factory=dict)
    k: int | None = None


def png_nats(images_uint8: np.ndarray) -> np.ndarray:
    """The PNG length of each uint8 [N, H, W] image, in nats (bytes * 8 * ln 2)."""
    from PIL import Image

    out = np.empty(len(images_uint8), dtype=np.float64)
    for i, img in enumerate(images_uint8):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(img), mode="L").save(
            buf, format="PNG", compress_level=9
        )
        out[i] = len(buf.getvalue()) * 8 * math.log(2)
    return out


def bernoulli_nats(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """-log p(x | logits) per row [N] (float64): sum of softplus(l) - x * l, in float32."""
    x = np.asarray(x, dtype=np.float32)
    logits = np.asarray(logits, dtype=np.float32)
    t = np.abs(logits)  # softplus(l) = max(l, 0) + log1p(exp(-|l|)), in place
    np.negative(t, out=t)
    np.exp(t, out=t)
    np.log1p(t, out=t)
    t += np.maximum(logits, 0.0)
    t -= x * logits
    return t.sum(axis=-1, dtype=np.float64)


def entropy_nats(x: np.ndarray) -> np.ndarray:
    """sum_i H(x_i) per row [N] (float64): the per-pixel Bernoulli entropy of intensities
    x in [0, 1], the least -log p(x | z) any Bernoulli decoder reaches (0 for binary images)."""
    x = np.asarray(x, dtype=np.float32)
    y = 1.0 - x
    h = x * np.log(np.maximum(x, _TINY))
    h += y * np.log(np.maximum(y, _TINY))
    return -h.sum(axis=-1, dtype=np.float64)


def ink(x: np.ndarray) -> np.ndarray:
    """sum_i x_i per row [N] (float64): how many fully inked pixels the image amounts to."""
    return np.asarray(x, dtype=np.float32).sum(axis=-1, dtype=np.float64)


def floor_nats(model, x: np.ndarray) -> np.ndarray:
    """The least -log p(x | z) a decoder of the model's likelihood can reach, per image: the
    entropy for Bernoulli pixels, the constant 0.5 sum_i (log 2 pi + lv_i) for Gaussian ones."""
    if model.likelihood == "bernoulli":
        return entropy_nats(x)
    const = 0.5 * float((metrics.LOG_2PI + model.gauss_logvar).sum())
    return np.full(len(x), const)


def check_kind(kind: str, k: int) -> None:
    if kind not in SCORES:
        raise UsageError(f"must be one of {', '.join(SCORES)}, got {kind!r}", param="score")
    if k < 1:
        raise UsageError(f"must be >= 1, got {k}", param="k")


def _batch_terms(model, xb: np.ndarray, kind: str, rng: np.random.Generator | None, k: int):
    """recon (-log p(x | z = mu)), kl and, per kind, nll_iw or floor for one batch."""
    if rng is not None:
        t = metrics.per_image(
            xb, model.encode, model.decode_logits, model.likelihood, k=k, rng=rng,
            gauss_logvar=model.gauss_logvar,
        )  # fmt: skip
        return {"recon": t["recon_mu"], "kl": t["kl"], "nll_iw": t["nll_iw"]}
    mu, logvar = model.encode(xb)
    logits = model.decode_logits(mu)
    if model.likelihood == "bernoulli":
        recon = bernoulli_nats(xb, logits)
    else:
        recon = -metrics.log_px_given_z(xb, logits, model.likelihood, model.gauss_logvar)
    terms = {"recon": recon, "kl": metrics.kl_to_standard_normal(mu, logvar)}
    if kind.startswith("excess"):  # batch by batch: the temporaries stay in cache
        terms["floor"] = floor_nats(model, xb)
    if kind == "excess-ink":
        terms["ink"] = ink(xb)
    return terms


def score_images(
    model,
    x: np.ndarray,
    kind: str = DEFAULT,
    *,
    k: int = 64,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Scores:
    """Scores of images `x` ([N, H, W] or [N, D]; float in [0, 1] or uint8) under `model`
    (an `edgevae.Model`). `k` and `seed` matter for `iwae` only."""
    check_kind(kind, k)
    x = model.as_input(x)
    rng = np.random.default_rng(seed) if kind == "iwae" else None
    batch = BATCH if rng is None else max(1, min(BATCH, MAX_DECODE_ROWS // k))
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(x), batch):
        for name, value in _batch_terms(model, x[start : start + batch], kind, rng, k).items():
            parts.setdefault(name, []).append(value)
        if progress is not None:
            progress(min(start + batch, len(x)), len(x))
    joined = {name: np.concatenate(v) for name, v in parts.items()}
    elbo = joined["recon"] + joined["kl"]
    if kind == "iwae":
        return Scores(kind, joined["nll_iw"], {**joined, "elbo": elbo}, k)
    if kind == "complexity":
        pixels = np.rint(x * 255.0).astype(np.uint8).reshape(len(x), *model.image_shape)
        joined["png_nats"] = png_nats(pixels)
        return Scores(kind, elbo - joined["png_nats"], {**joined, "elbo": elbo})
    if kind == "excess":
        return Scores(kind, elbo - joined["floor"], {**joined, "elbo": elbo})
    if kind == "excess-ink":
        excess = elbo - joined["floor"]
        scaled = excess / np.sqrt(1.0 + joined["ink"])
        return Scores(kind, scaled, {**joined, "elbo": elbo, "excess": excess})
    return Scores(kind, elbo, joined)
