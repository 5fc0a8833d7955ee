"""Fixed-point tables of the firmware's anomaly score (see score.py for the definition).

Every float function of the score has a quantized argument with 256 possible values (a logit,
a mu, a logvar), or is a per-pixel constant (the Gaussian weights), so each becomes a table
computed here once, in float64, and rounded to integers in units of 2**-F nats. The kernel and
the numpy reference then only add integers (exact, in any order) and convert one int64 to
float32 at the end, with the rounding done in integers (`to_float32`): C and numpy agree to
the last bit on every target, whatever the compiler does with floating-point contraction,
and no libm function (expf, log1pf) is involved.

Each F is the largest that keeps every table entry within int32 (the kernel's loads) and
every sum within 2**62; the tables' rounding costs at most a few 1e-6 nats per pixel (the
Gaussian mean, kept in 1/256 grey levels, slightly more: see README).

The excess score subtracts the least -log p(x | z) any decoder reaches (runtime/score.py):
for Bernoulli pixels the image's entropy sum_i H(p_i / 255), one more 256-entry table indexed
by the pixel value; for a Gaussian likelihood the constant part gauss_const of the sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ModelFileError
from .encoder import IntEncoder
from .fixedpoint import dequantize_linear, keep_24_bits, quantize_linear
from .intmodel import IntModel
from .qdq import QType

LIKELIHOODS = ("bernoulli", "gaussian")
LOG_2PI = math.log(2 * math.pi)
LN2 = math.log(2)
INT32_LIMIT = 2**31 - 1
UINT32_LIMIT = 2**32 - 1
SUM_LIMIT = 2**61  # the reconstruction sum and the KL sum: their total stays below 2**62
MAX_FRAC = 48
GAUSS_ONE = 255 * 256  # Gaussian mean and residual in 1/256 grey levels: |e| < 2**16


@dataclass
class ScoreTables:
    """The integers the kernel's score adds up (index = quantized value - qmin)."""

    likelihood: str
    frac_bits: int  # R: reconstruction and total in units of 2**-R nats
    kl_frac_bits: int  # the KL tables' units, 2**-kl_frac_bits nats (<= R)
    kl_mu: np.ndarray  # int32 [256]: 0.5 * mu**2
    kl_logvar: np.ndarray  # int32 [256]: 0.5 * (exp(lv) - 1 - lv)
    mu_to_zq: np.ndarray  # int64 [256]: quantized mu -> the decoder's quantized input
    # bernoulli: sum softplus(l) (units 2**-softplus_frac_bits) - x * l (units 2**-R)
    softplus_frac_bits: int = 0
    softplus: np.ndarray | None = None  # int32 [256]
    neg_logit: np.ndarray | None = None  # int32 [256]: -l / 255, times the pixel value
    # bernoulli, excess score: the floor sum_i H(p_i / 255), units 2**-entropy_frac_bits
    entropy_frac_bits: int = 0
    entropy: np.ndarray | None = None  # int32 [256]: H(p / 255), indexed by the pixel value
    # gaussian: const + sum weight[i] * (256 * p - mean[l])**2, units 2**-R
    gauss_mean: np.ndarray | None = None  # int32 [256]: sigmoid(l) in 1/256 grey levels
    gauss_weight: np.ndarray | None = None  # uint32 [D]: 0.5 * exp(-lv_i) / GAUSS_ONE**2
    gauss_const: int = 0  # sum of 0.5 * (log 2 pi + lv_i)


def _values(qt: QType) -> np.ndarray:
    """The 256 dequantized values of `qt` (float32, as DequantizeLinear), as float64."""
    return dequantize_linear(np.arange(qt.qmin, qt.qmax + 1), qt).astype(np.float64)


def _frac_for(largest: float, limit: int = INT32_LIMIT) -> int:
    """Most fractional bits (<= MAX_FRAC) with largest * 2**F <= limit."""
    if largest <= 0:
        return MAX_FRAC
    return min(MAX_FRAC, math.floor(math.log2(limit / largest)))


def _fixed(values: np.ndarray, frac: int, dtype=np.int32) -> np.ndarray:
    return np.rint(values * 2.0**frac).astype(dtype)


def pixel_entropy() -> np.ndarray:
    """H(p / 255) in nats for p = 0..255, float64: -x log x - (1 - x) log(1 - x), 0 at 0 and 255."""
    x = np.arange(1, 255) / 255.0
    h = np.zeros(256)
    h[1:255] = -(x * np.log(x) + (1.0 - x) * np.log1p(-x))
    return h


def _bernoulli(tables: ScoreTables, logits: np.ndarray, dim: int) -> None:
    softplus = np.logaddexp(0.0, logits)
    neg = -logits / 255.0
    entropy = pixel_entropy()
    frac = _frac_for(float(np.abs(neg).max()))
    # the reconstruction sum, and the entropy sum (<= dim * ln 2) the excess score subtracts
    largest = max(float(softplus.max()), LN2) + 255 * float(np.abs(neg).max())
    while frac > 0 and dim * largest * 2.0**frac >= SUM_LIMIT:
        frac -= 1
    tables.frac_bits = frac
    tables.softplus_frac_bits = min(_frac_for(float(softplus.max())), frac)
    tables.softplus = _fixed(softplus, tables.softplus_frac_bits)
    tables.neg_logit = _fixed(neg, frac)
    tables.entropy_frac_bits = min(_frac_for(float(entropy.max())), frac)
    tables.entropy = _fixed(entropy, tables.entropy_frac_bits)


def _gaussian(tables: ScoreTables, logits: np.ndarray, logvar: np.ndarray) -> None:
    mean = 1.0 / (1.0 + np.exp(-logits))
    weight = 0.5 * np.exp(-logvar) / GAUSS_ONE**2
    const = float(np.sum(0.5 * (LOG_2PI + logvar)))
    frac = _frac_for(float(weight.max()), UINT32_LIMIT)
    while (
        frac > 0
        and (logvar.size * GAUSS_ONE**2 * weight.max() + abs(const)) * 2.0**frac >= SUM_LIMIT
    ):
        frac -= 1
    tables.frac_bits = frac
    tables.gauss_mean = np.rint(mean * GAUSS_ONE).astype(np.int32)
    tables.gauss_weight = _fixed(weight, frac, np.uint32)
    tables.gauss_const = int(round(const * 2.0**frac))


def build_tables(
    enc: IntEncoder, dec: IntModel, likelihood: str, gauss_logvar: np.ndarray | None = None
) -> ScoreTables:
    """The score's tables for this encoder/decoder pair; ModelFileError if they cannot fit."""
    if likelihood not in LIKELIHOODS:
        raise ModelFileError(f"likelihood must be one of {', '.join(LIKELIHOODS)}: {likelihood!r}")
    mu, lv = _values(enc.mu.out_q), _values(enc.logvar.out_q)
    kl_mu = 0.5 * mu**2
    kl_lv = 0.5 * (np.expm1(lv) - lv)
    mu_to_zq = quantize_linear(
        dequantize_linear(np.arange(256) + enc.mu.out_q.qmin, enc.mu.out_q), dec.input_q
    )
    tables = ScoreTables(likelihood, 0, 0, kl_mu, kl_lv, mu_to_zq)
    logits = _values(dec.logit_q)
    if likelihood == "bernoulli":
        _bernoulli(tables, logits, dec.output_dim)
    else:
        if gauss_logvar is None or np.asarray(gauss_logvar).size != dec.output_dim:
            raise ModelFileError(
                f"a Gaussian decoder needs {dec.output_dim} per-pixel log-variances "
                "(the manifest's gaussian_logvar)"
            )
        _gaussian(tables, logits, np.asarray(gauss_logvar, np.float64).reshape(-1))
    kl_max = float(max(kl_mu.max(), kl_lv.max()))
    tables.kl_frac_bits = min(_frac_for(kl_max), tables.frac_bits)
    if enc.latent_dim * 2 * kl_max * 2.0**tables.frac_bits >= SUM_LIMIT or tables.frac_bits < 8:
        raise ModelFileError(
            f"{enc.source} / {dec.source}: the score's terms are too large for the kernel's "
            f"fixed point (KL up to {kl_max:.3g} nats per latent)"
        )
    tables.kl_mu = _fixed(kl_mu, tables.kl_frac_bits)
    tables.kl_logvar = _fixed(kl_lv, tables.kl_frac_bits)
    return tables


def to_float32(total: np.ndarray, frac: int) -> np.ndarray:
    """int64 fixed point (units 2**-frac) -> float32, correctly rounded (half to even).

    The rounding to 24 significant bits is done in integers, so the float conversion that
    follows is exact; the kernel's ev_to_float does the same steps.
    """
    total = np.asarray(total, np.int64)
    magnitude = keep_24_bits(np.abs(total).astype(np.uint64))
    value = magnitude.astype(np.float64).astype(np.float32) * np.float32(2.0**-frac)
    return np.where(total < 0, -value, value).astype(np.float32)
