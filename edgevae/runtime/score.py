"""Anomaly scores in nats per image, higher = more anomalous, from an exported model.

- `elbo`: -ELBO with z = mu: -log p(x | z = mu) + KL(q(z|x) || N(0, I)). One encoder and one
  decoder pass per image: what a board can afford (the firmware computes the same score).
- `iwae`: the k-sample importance-weighted estimate of -log p(x) (k decoder passes).
- `complexity`: the elbo score minus the image's own lossless-compression length in nats
  (Serrà et al., ICLR 2020). A likelihood model can rank simple out-of-distribution images as
  *more* likely than its training data (Nalisnick et al., ICLR 2019); subtracting what a generic
  compressor needs for the image removes the part of the likelihood that only measures how
  simple the image is. The compressor is PNG (deflate after per-row prediction filters, level 9,
  via Pillow, a base dependency): a real image codec like the paper's, deterministic, and
  available on every board; the length counted is the whole PNG file, so a constant header
  shifts every score alike.

Scoring runs in batches, so any number of images takes bounded memory.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError
from . import metrics

SCORES = ("elbo", "iwae", "complexity")
BATCH = 256
MAX_DECODE_ROWS = 65536


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


def check_kind(kind: str, k: int) -> None:
    if kind not in SCORES:
        raise UsageError(f"must be one of {', '.join(SCORES)}, got {kind!r}", param="score")
    if k < 1:
        raise UsageError(f"must be >= 1, got {k}", param="k")


def score_images(
    model,
    x: np.ndarray,
    kind: str = "elbo",
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
    parts: dict[str, list[np.ndarray]] = {"recon": [], "kl": []}
    if kind == "iwae":
        parts["nll_iw"] = []
    for start in range(0, len(x), batch):
        terms = metrics.per_image(
            x[start : start + batch],
            model.encode,
            model.decode_logits,
            model.likelihood,
            k=k,
            rng=rng,
            gauss_logvar=model.gauss_logvar,
        )
        parts["recon"].append(terms["recon_mu"])
        parts["kl"].append(terms["kl"])
        if rng is not None:
            parts["nll_iw"].append(terms["nll_iw"])
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
    return Scores(kind, elbo, joined)
