"""Latent grids and draws shared by the runtime, the parity picture and the paper's figures."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from ..errors import UsageError


def prior_z(n: int, latent_dim: int, seed: int, temperature: float = 1.0) -> np.ndarray:
    """n seeded draws of z ~ N(0, temperature^2 I), float32 [n, latent_dim]."""
    if n < 1:
        raise UsageError(f"must be >= 1, got {n}", param="n")
    if not temperature > 0:
        raise UsageError(f"must be > 0, got {temperature}", param="temperature")
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, latent_dim)) * temperature).astype(np.float32)


def manifold_z(latent_dim: int, steps: int, dims: tuple[int, int] = (0, 1)) -> np.ndarray:
    """The paper's Fig. 4 grid: the unit square through the inverse Gaussian CDF.

    Row r varies `dims[1]` (top = high), column c varies `dims[0]`; other dims are 0.
    """
    if steps < 2:
        raise UsageError(f"must be >= 2, got {steps}", param="steps")
    if latent_dim < 2:
        raise UsageError("the manifold needs a latent space of at least 2 dims")
    d0, d1 = dims
    if not (0 <= d0 < latent_dim and 0 <= d1 < latent_dim) or d0 == d1:
        raise UsageError(f"must be two different dims in 0..{latent_dim - 1}", param="dims")
    # Centres of `steps` equal cells, so the corners stay finite.
    q = np.array([NormalDist().inv_cdf((i + 0.5) / steps) for i in range(steps)])
    z = np.zeros((steps * steps, latent_dim), dtype=np.float32)
    z[:, d0] = np.tile(q, steps)  # row r, column c: q[c] ...
    z[:, d1] = np.repeat(q[::-1], steps)  # ... and q[steps - 1 - r]
    return z
