"""What the exported models make: samples, reconstructions, interpolations, the 2-D manifold."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from ..errors import UsageError
from .session import ExportedModel


def prior_z(n: int, latent_dim: int, seed: int, temperature: float = 1.0) -> np.ndarray:
    if n < 1:
        raise UsageError(f"--n must be >= 1, got {n}")
    if not temperature > 0:
        raise UsageError(f"--temperature must be > 0, got {temperature}")
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, latent_dim)) * temperature).astype(np.float32)


def sample(model: ExportedModel, n: int, seed: int = 0, temperature: float = 1.0) -> np.ndarray:
    """n images decoded from z ~ N(0, T^2 I), [n, H, W] in [0, 1]."""
    return model.images(model.decode(prior_z(n, model.latent_dim, seed, temperature)))


def reconstruct(model: ExportedModel, x: np.ndarray) -> np.ndarray:
    """Originals stacked above their reconstructions through z = mu: [2n, H, W]."""
    mu, _ = model.encode(x)
    recon = model.images(model.decode(mu))
    return np.concatenate([model.images(x.reshape(len(x), -1)), recon])


def interpolate(model: ExportedModel, a: np.ndarray, b: np.ndarray, steps: int = 10) -> np.ndarray:
    """Decoded straight line between the posterior means of images a and b: [steps, H, W]."""
    if steps < 2:
        raise UsageError(f"--steps must be >= 2, got {steps}")
    mu, _ = model.encode(np.stack([a.reshape(-1), b.reshape(-1)]))
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    return model.images(model.decode((1 - t) * mu[0] + t * mu[1]))


def manifold_z(latent_dim: int, steps: int, dims: tuple[int, int] = (0, 1)) -> np.ndarray:
    """The paper's Fig. 4 grid: the unit square through the inverse Gaussian CDF.

    Row r varies `dims[1]` (top = high), column c varies `dims[0]`; other dims are 0.
    """
    if steps < 2:
        raise UsageError(f"--steps must be >= 2, got {steps}")
    if latent_dim < 2:
        raise UsageError("the manifold needs a latent space of at least 2 dims")
    d0, d1 = dims
    if not (0 <= d0 < latent_dim and 0 <= d1 < latent_dim) or d0 == d1:
        raise UsageError(f"--dims must be two different dims in 0..{latent_dim - 1}")
    # Centres of `steps` equal cells, so the corners stay finite.
    q = [NormalDist().inv_cdf((i + 0.5) / steps) for i in range(steps)]
    z = np.zeros((steps * steps, latent_dim), dtype=np.float32)
    for r in range(steps):
        for c in range(steps):
            z[r * steps + c, d0] = q[c]
            z[r * steps + c, d1] = q[steps - 1 - r]
    return z


def manifold(model: ExportedModel, steps: int = 20, dims: tuple[int, int] = (0, 1)) -> np.ndarray:
    return model.images(model.decode(manifold_z(model.latent_dim, steps, dims)))
