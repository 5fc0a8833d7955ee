"""The numpy classifier that judges conditional samples: it learns, and it round-trips."""

from __future__ import annotations

import numpy as np

from edgevae.bench.classifier import Classifier, train_classifier


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.random((4, 64)).astype(np.float32)
    y = rng.integers(0, 4, n)
    x = np.clip(centres[y] + 0.15 * rng.standard_normal((n, 64)), 0, 1).astype(np.float32)
    return x, y


def test_it_learns_separable_classes_and_is_seeded():
    x, y = _blobs(2000, 0)
    xt, yt = _blobs(500, 0)
    a = train_classifier(x, y, n_classes=4, hidden=32, epochs=3, seed=1)
    b = train_classifier(x, y, n_classes=4, hidden=32, epochs=3, seed=1)
    assert a.accuracy(xt, yt) > 0.95
    np.testing.assert_array_equal(a.w1, b.w1)


def test_save_and_load_without_pickle(tmp_path):
    x, y = _blobs(300, 2)
    c = train_classifier(x, y, n_classes=4, hidden=8, epochs=1)
    c.save(tmp_path / "c.npz")
    loaded = Classifier.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(loaded.predict(x), c.predict(x))
