"""An independent digit classifier in numpy, to say which class a generated image shows.

A 784-256-10 ReLU MLP trained with Adam on real training images (seeded, float32), nothing
shared with the VAE. `conditional_accuracy` labels the images a conditional model draws for
each asked-for class and reports how often the classifier agrees. Weights are saved as .npz
(no pickle) so a benchmark can reuse them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import fsio
from ..errors import ModelFileError


@dataclass
class Classifier:
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    def logits(self, x: np.ndarray) -> np.ndarray:
        h = np.maximum(x.astype(np.float32) @ self.w1 + self.b1, 0.0)
        return h @ self.w2 + self.b2

    def predict(self, x: np.ndarray, batch: int = 4096) -> np.ndarray:
        x = x.reshape(len(x), -1)
        return np.concatenate(
            [self.logits(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)]
        )

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.predict(x) == y).mean())

    def save(self, path: str | Path) -> None:
        import io

        buf = io.BytesIO()
        np.savez(buf, w1=self.w1, b1=self.b1, w2=self.w2, b2=self.b2)
        fsio.write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> Classifier:
        import io

        data = fsio.read_regular(path, 64 << 20, ModelFileError)
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls(z["w1"], z["b1"], z["w2"], z["b2"])


def train_classifier(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_classes: int = 10,
    hidden: int = 256,
    epochs: int = 8,
    batch: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
) -> Classifier:
    """Softmax cross-entropy, Adam (beta 0.9/0.999), He-initialized weights."""
    rng = np.random.default_rng(seed)
    x = np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)
    d = x.shape[1]
    params = [
        (rng.standard_normal((d, hidden)) * np.sqrt(2.0 / d)).astype(np.float32),
        np.zeros(hidden, np.float32),
        (rng.standard_normal((hidden, n_classes)) * np.sqrt(2.0 / hidden)).astype(np.float32),
        np.zeros(n_classes, np.float32),
    ]
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            step += 1
            grads = _gradients(params, x[idx], y[idx], n_classes)
            for p, g, (m, v) in zip(params, grads, moments, strict=True):
                m *= 0.9
                m += 0.1 * g
                v *= 0.999
                v += 0.001 * g * g
                p -= lr * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    return Classifier(*params)


def _gradients(params, xb, yb, n_classes):
    w1, b1, w2, b2 = params
    pre = xb @ w1 + b1
    h = np.maximum(pre, 0.0)
    logits = h @ w2 + b2
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(yb)), yb] -= 1.0
    p /= len(yb)
    dh = (p @ w2.T) * (pre > 0)
    return [xb.T @ dh, dh.sum(0), h.T @ p, p.sum(0)]
