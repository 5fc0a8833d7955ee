"""Bounds on log p(x) in nats, in numpy, for any encoder/decoder pair.

The same code scores the torch model (`edgevae eval`) and the ONNX fp32/int8 models
(`edgevae quantize`, `edgevae bench`), so float and int8 numbers are directly comparable.
Encoders are callables x -> (mu, logvar); decoders are callables z -> logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np

Encoder = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Decoder = Callable[[np.ndarray], np.ndarray]

LOG_2PI = math.log(2 * math.pi)
# An active unit's posterior mean varies across data (Burda et al., 2016).
ACTIVE_UNIT_THRESHOLD = 1e-2


def log_px_given_z(
    x: np.ndarray, logits: np.ndarray, likelihood: str, gauss_logvar: np.ndarray | None = None
) -> np.ndarray:
    """Sum over pixels of log p(x|z); x broadcasts against logits' leading axes."""
    logits = logits.astype(np.float64)
    if likelihood == "bernoulli":
        # -BCE with logits, stable form: x*l - softplus(l)
        return (x * logits - np.logaddexp(0.0, logits)).sum(-1)
    if gauss_logvar is None:
        raise ValueError("gaussian likelihood needs the decoder's log-variance")
    mean = 1.0 / (1.0 + np.exp(-logits))
    lv = gauss_logvar.astype(np.float64)
    return -0.5 * (LOG_2PI + lv + (x - mean) ** 2 * np.exp(-lv)).sum(-1)


def kl_to_standard_normal(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    mu, logvar = mu.astype(np.float64), logvar.astype(np.float64)
    return 0.5 * (mu**2 + np.exp(logvar) - 1.0 - logvar).sum(-1)


def log_normal(z: np.ndarray, mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * np.exp(-logvar)).sum(-1)


@dataclass
class Bounds:
    """Per-image averages in nats. `nll_iw` is the k-sample importance-weighted -log p(x)."""

    n_images: int
    k: int
    neg_elbo: float
    neg_elbo_mean_z: float
    recon: float
    kl: float
    nll_iw: float
    active_units: int
    latent_dim: int

    def to_dict(self) -> dict:
        return asdict(self)


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def per_image(
    xb: np.ndarray,
    encode: Encoder,
    decode: Decoder,
    likelihood: str,
    *,
    k: int,
    rng: np.random.Generator | None,
    gauss_logvar: np.ndarray | None = None,
    yb: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-image terms in nats for one batch [B, D]: `kl`, `recon_mu` (-log p(x | z = mu)) and
    `mu`; with `rng`, also `recon1` (-log p(x | z) at one sample z) and `nll_iw` (the k-sample
    importance-weighted -log p(x)). Decodes B * k rows at once: callers bound B. With one-hot
    labels `yb` [B, C] the model is conditional: encode(x, y), decode(z, y), and every term is
    conditioned on y (-log p(x | y))."""
    enc = encode if yb is None else (lambda x: encode(x, yb))
    dec = decode if yb is None else (lambda z, y: decode(z, y))
    mu, logvar = enc(xb.astype(np.float32))
    mu64, lv64 = mu.astype(np.float64), logvar.astype(np.float64)
    x64 = xb.astype(np.float64)
    out = {"mu": mu64, "kl": kl_to_standard_normal(mu64, lv64)}
    logits_mu = decode(mu.astype(np.float32)) if yb is None else dec(mu.astype(np.float32), yb)
    out["recon_mu"] = -log_px_given_z(x64, logits_mu, likelihood, gauss_logvar)
    if rng is None:
        return out
    eps = rng.standard_normal((len(xb), k, mu.shape[1]))
    z = mu64[:, None, :] + np.exp(0.5 * lv64)[:, None, :] * eps
    flat = z.reshape(-1, mu.shape[1]).astype(np.float32)
    out_flat = decode(flat) if yb is None else dec(flat, np.repeat(yb, k, axis=0))
    logits = out_flat.reshape(len(xb), k, -1)
    lpx = log_px_given_z(x64[:, None, :], logits, likelihood, gauss_logvar)
    log_w = (
        lpx
        + log_normal(z, 0.0, np.zeros_like(z))
        - log_normal(z, mu64[:, None, :], lv64[:, None, :])
    )
    m = log_w.max(axis=1)
    out["recon1"] = -lpx[:, 0]
    out["nll_iw"] = -(m + np.log(np.exp(log_w - m[:, None]).mean(axis=1)))
    return out


def evaluate(
    x: np.ndarray,
    encode: Encoder,
    decode: Decoder,
    likelihood: str,
    *,
    k: int = 1000,
    seed: int = 0,
    gauss_logvar: np.ndarray | None = None,
    max_decode_rows: int = 65536,
    progress: Callable[[int], None] | None = None,
    y: np.ndarray | None = None,
) -> Bounds:
    """-ELBO (one sample, and at z = mu), its parts, the IWAE bound with k samples, active units.

    Decoding is chunked to at most `max_decode_rows` rows so memory stays bounded for any k.
    `progress(n_done_images)` is called after every batch of images. With one-hot labels `y`
    [N, C] the bounds are on the conditional -log p(x | y) (see `per_image`).
    """
    if x.ndim != 2 or len(x) == 0:
        raise ValueError("evaluate needs a non-empty [N, D] array")
    rng = np.random.default_rng(seed)
    n = len(x)
    tot = {"elbo1": 0.0, "elbo_mu": 0.0, "recon": 0.0, "kl": 0.0, "iw": 0.0}
    mus = []
    for sl in _batches(n, max(1, max_decode_rows // max(k, 1))):
        yb = None if y is None else y[sl]
        t = per_image(
            x[sl], encode, decode, likelihood, k=k, rng=rng, gauss_logvar=gauss_logvar, yb=yb
        )
        mus.append(t["mu"])
        tot["elbo1"] += float((t["kl"] + t["recon1"]).sum())
        tot["elbo_mu"] += float((t["kl"] + t["recon_mu"]).sum())
        tot["recon"] += float(t["recon1"].sum())
        tot["kl"] += float(t["kl"].sum())
        tot["iw"] += float(t["nll_iw"].sum())
        if progress is not None:
            progress(sl.stop)
    all_mu = np.concatenate(mus)
    active = int((all_mu.var(axis=0) > ACTIVE_UNIT_THRESHOLD).sum()) if n > 1 else 0
    return Bounds(
        n_images=n,
        k=k,
        neg_elbo=tot["elbo1"] / n,
        neg_elbo_mean_z=tot["elbo_mu"] / n,
        recon=tot["recon"] / n,
        kl=tot["kl"] / n,
        nll_iw=tot["iw"] / n,
        active_units=active,
        latent_dim=int(all_mu.shape[1]),
    )
