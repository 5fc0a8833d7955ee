"""The fixed inputs of the cross-CPU check: encoder images `x` and decoder latents `z` that
are the same bits on every CPU for a given seed and numpy version, and for a conditional
model the one-hot labels of those rows, `y_x` and `y_z` (fed as each model's `y`)."""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from .compare import CrosscheckError


def _levels_to_float(levels: np.ndarray) -> np.ndarray:
    """8-bit levels -> float32 k/255 (one correctly rounded division: same bits on every CPU)."""
    return levels.astype(np.float32) / np.float32(255.0)


def make_inputs(
    seed: int = 0,
    *,
    input_dim: int = 784,
    latent_dim: int = 20,
    image_shape: tuple[int, int] | None = None,
    n_random: int = 24,
    n_classes: int = 0,
) -> dict[str, np.ndarray]:
    """Deterministic encoder inputs `x` [N, D] in [0, 1] and decoder inputs `z` [N, L].

    `x` holds 8-bit intensities k/255 like real images: an all-0 row, an all-1 row, a
    checkerboard, a ramp, a half-grey row, strokes (soft discs), sparse binary pixels and uniform
    noise. `z` holds N(0, 1) draws rounded to multiples of 1/1024 plus extremes: 0, +4, -4,
    alternating +-4 and one-hot +-4 rows. Only +, -, *, / and rounding touch the random draws,
    so the same seed gives the same bits on every platform with the same numpy version.
    With `n_classes` (a conditional model), `y_x` and `y_z` are one-hot rows, row i of class
    i mod n_classes, beside `x` and `z` (exact 0s and 1s: the same bits everywhere).
    """
    if seed < 0:
        raise UsageError(f"must be >= 0, got {seed}", param="seed")
    if n_classes < 0:
        raise UsageError(f"must be >= 0, got {n_classes}", param="n_classes")
    if image_shape is None:
        side = int(round(input_dim**0.5))
        image_shape = (side, side) if side * side == input_dim else (1, input_dim)
    h, w = image_shape
    if h * w != input_dim:
        raise CrosscheckError(f"image shape {h}x{w} does not match input dim {input_dim}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    rows: list[np.ndarray] = [
        np.zeros(input_dim, np.uint8),
        np.full(input_dim, 255, np.uint8),
        (((yy + xx) % 2) * 255).astype(np.uint8).ravel(),
        (np.arange(input_dim) * 255 // max(input_dim - 1, 1)).astype(np.uint8),
        np.full(input_dim, 128, np.uint8),
    ]
    n_strokes = n_random // 2
    for _ in range(n_strokes):
        img = np.zeros((h, w))
        for _ in range(int(rng.integers(2, 6))):
            cy, cx = rng.integers(0, h), rng.integers(0, w)
            r2 = float(rng.integers(4, 26))
            img = np.maximum(img, 1.0 - ((yy - cy) ** 2 + (xx - cx) ** 2) / r2)
        rows.append(np.rint(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8).ravel())
    for _ in range(n_random - n_strokes - n_random // 4):
        rows.append(((rng.random(input_dim) < 0.2) * 255).astype(np.uint8))
    for _ in range(n_random // 4):
        rows.append(rng.integers(0, 256, input_dim).astype(np.uint8))
    x = _levels_to_float(np.stack(rows))

    zrows = [
        np.zeros(latent_dim),
        np.full(latent_dim, 4.0),
        np.full(latent_dim, -4.0),
        np.where(np.arange(latent_dim) % 2 == 0, 4.0, -4.0),
    ]
    for i in range(min(4, latent_dim)):
        one_hot = np.zeros(latent_dim)
        one_hot[i * latent_dim // 4] = 4.0 if i % 2 == 0 else -4.0
        zrows.append(one_hot)
    normal = np.round(rng.standard_normal((n_random, latent_dim)) * 1024.0) / 1024.0
    z = np.concatenate([np.stack(zrows), normal]).astype(np.float32)
    out = {"x": np.ascontiguousarray(x), "z": np.ascontiguousarray(z)}
    if n_classes:
        for name in ("x", "z"):
            n = len(out[name])
            y = np.zeros((n, n_classes), np.float32)
            y[np.arange(n), np.arange(n) % n_classes] = 1.0
            out[f"y_{name}"] = y
    return out


def rows(latent_dim: int, n_random: int = 24) -> tuple[int, int]:
    """The number of rows of `x` and of `z` that `make_inputs` makes."""
    return 5 + n_random, 4 + min(4, latent_dim) + n_random


def memory_bytes(
    input_dim: int, latent_dim: int, n_classes: int, n_models: int, n_random: int = 24
) -> int:
    """An upper bound of what generating the inputs and running `n_models` models on them
    holds at once: the pixel grids and one stroke's float64 temporaries, the rows (levels and
    float32), the labels, and per model its outputs (x_mean and logits, or mu and logvar) for
    the whole batch and again row by row."""
    rows_x, rows_z = rows(latent_dim, n_random)
    make = 48 * input_dim + 5 * rows_x * input_dim + 12 * rows_z * latent_dim
    make += 4 * (rows_x + rows_z) * n_classes
    outputs = n_models * 2 * 4 * max(rows_x, rows_z) * 2 * max(input_dim, latent_dim)
    return make + outputs
