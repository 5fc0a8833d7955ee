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

from .. import limits

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
    importance-weighted -log p(x)). With one-hot labels `yb` [B, C] the model is conditional:
    encode(x, y), decode(z, y), and every term is conditioned on y (-log p(x | y)).

    Decodes B * k rows at once when they fit in one chunk (`limits.chunk_rows`), else each
    image's k samples in chunks; the noise is drawn in the same order either way (image by
    image, sample by sample), so the chunking does not change which z are drawn."""
    enc = encode if yb is None else (lambda x: encode(x, yb))
    mu, logvar = enc(xb.astype(np.float32))
    mu64, lv64 = mu.astype(np.float64), logvar.astype(np.float64)
    x64 = xb.astype(np.float64)
    out = {"mu": mu64, "kl": kl_to_standard_normal(mu64, lv64)}
    logits_mu = decode(mu.astype(np.float32)) if yb is None else decode(mu.astype(np.float32), yb)
    out["recon_mu"] = -_log_px_rows(x64, logits_mu, likelihood, gauss_logvar)
    if rng is None:
        return out
    if len(xb) * k <= limits.chunk_rows(xb.shape[1]):
        recon1, nll = _iw_terms(x64, mu64, lv64, decode, likelihood, k, rng, gauss_logvar, yb)
    else:
        rows = [
            _iw_chunked(x64[i], mu64[i], lv64[i], decode, likelihood, k, rng, gauss_logvar,
                        None if yb is None else yb[i : i + 1])
            for i in range(len(xb))
        ]  # fmt: skip
        recon1, nll = (np.array(v, dtype=np.float64) for v in zip(*rows, strict=True))
    out["recon1"], out["nll_iw"] = recon1, nll
    return out


def _log_px_rows(x64, logits, likelihood, gauss_logvar, rows: int = 4096) -> np.ndarray:
    """`log_px_given_z` of images x [B, D] against logits [B, D] ([B]) or [B, k, D] ([B, k]),
    a few thousand rows at a time: the float64 temporaries stay small however many rows were
    decoded (each row's sum is the same as in one call)."""
    many = logits if logits.ndim == 3 else logits[:, None, :]
    b, k = many.shape[:2]
    out = np.empty((b, k), dtype=np.float64)
    step = max(1, rows // k)
    for i in range(0, b, step):  # several images at a time, all their k rows
        for j in range(0, k, rows):  # or a part of one image's k rows
            out[i : i + step, j : j + rows] = log_px_given_z(
                x64[i : i + step, None, :], many[i : i + step, j : j + rows], likelihood,
                gauss_logvar,
            )  # fmt: skip
    return out if logits.ndim == 3 else out[:, 0]


def _iw_terms(x64, mu64, lv64, decode, likelihood, k, rng, gauss_logvar, yb):
    """(recon1 [B], nll_iw [B]) with all B * k samples decoded at once."""
    eps = rng.standard_normal((len(x64), k, mu64.shape[1]))
    z = mu64[:, None, :] + np.exp(0.5 * lv64)[:, None, :] * eps
    flat = z.reshape(-1, mu64.shape[1]).astype(np.float32)
    out_flat = decode(flat) if yb is None else decode(flat, np.repeat(yb, k, axis=0))
    lpx = _log_px_rows(x64, out_flat.reshape(len(x64), k, -1), likelihood, gauss_logvar)
    log_w = (
        lpx
        + log_normal(z, 0.0, np.zeros_like(z))
        - log_normal(z, mu64[:, None, :], lv64[:, None, :])
    )
    m = log_w.max(axis=1)
    return -lpx[:, 0], -(m + np.log(np.exp(log_w - m[:, None]).mean(axis=1)))


def _iw_chunked(x64, mu64, lv64, decode, likelihood, k, rng, gauss_logvar, y1):
    """(recon1, nll_iw) of ONE image [D], its k samples decoded a chunk at a time, the
    log-mean-exp of the importance weights accumulated as it goes (memory: one chunk)."""
    size = limits.chunk_rows(len(x64))
    top, total, recon1 = -np.inf, 0.0, 0.0
    for start in range(0, k, size):
        n = min(size, k - start)
        eps = rng.standard_normal((1, n, len(mu64)))[0]
        z = mu64 + np.exp(0.5 * lv64) * eps
        zf = z.astype(np.float32)
        logits = decode(zf) if y1 is None else decode(zf, np.repeat(y1, n, axis=0))
        lpx = _log_px_rows(x64[None], logits[None], likelihood, gauss_logvar)[0]
        log_w = lpx + log_normal(z, 0.0, np.zeros_like(z)) - log_normal(z, mu64, lv64)
        if start == 0:
            recon1 = -float(lpx[0])
        new_top = max(top, float(log_w.max()))
        total = total * math.exp(top - new_top) + float(np.exp(log_w - new_top).sum())
        top = new_top
    return recon1, -(top + math.log(total / k))


def evaluate(
    x: np.ndarray,
    encode: Encoder,
    decode: Decoder,
    likelihood: str,
    *,
    k: int = 1000,
    seed: int = 0,
    gauss_logvar: np.ndarray | None = None,
    max_decode_rows: int = limits.MAX_CHUNK_ROWS,
    progress: Callable[[int], None] | None = None,
    y: np.ndarray | None = None,
) -> Bounds:
    """-ELBO (one sample, and at z = mu), its parts, the IWAE bound with k samples, active units.

    Images go in batches of about `max_decode_rows` / k (fewer for wide images,
    `limits.chunk_rows`), one image at a time when k is larger, so memory stays bounded for
    any k and any number of images.
    `progress(n_done_images)` is called after every batch of images. With one-hot labels `y`
    [N, C] the bounds are on the conditional -log p(x | y) (see `per_image`).
    """
    if x.ndim != 2 or len(x) == 0:
        raise ValueError("evaluate needs a non-empty [N, D] array")
    rng = np.random.default_rng(seed)
    n = len(x)
    tot = {"elbo1": 0.0, "elbo_mu": 0.0, "recon": 0.0, "kl": 0.0, "iw": 0.0}
    mus = []
    rows = min(max_decode_rows, limits.chunk_rows(x.shape[1]))
    for sl in _batches(n, max(1, rows // max(k, 1))):
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
