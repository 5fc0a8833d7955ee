"""How well a model's scores separate normal images from anomalies, float and int8 side by side.

Per score kind and precision: AUROC (the probability that an anomaly scores above a normal
image, ties counting half), AUPRC (average precision with the anomalies as positives) and the
false-positive rate at 95 % true-positive rate; per precision, the p50 time per scored image at
batch 1 and 256 (the default score, or the first one asked for). Anomalies are other data (a
data spec) or the normal images transformed: `invert` (1 - x), `rotate` (90 degrees), `noise`
(Gaussian, sigma 0.25, clipped to [0, 1]).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import UsageError
from ..runtime import manifest, timing
from ..runtime.score import DEFAULT, SCORES, score_images

TRANSFORMS = ("invert", "rotate", "noise")
PRECISIONS = ("fp32", "int8")
Progress = Callable[[str, int, int], None]


def auroc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """P(anomalous score > normal score) + 0.5 P(equal), from ranks (Mann-Whitney U)."""
    both = np.concatenate([normal, anomalous])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both), dtype=np.float64)
    ranks[order] = np.arange(1, len(both) + 1)
    values = both[order]
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for s, e in zip(starts, ends, strict=True):
        if e - s > 1:  # ties share their mean rank
            ranks[order[s:e]] = (s + 1 + e) / 2.0
    n, m = len(normal), len(anomalous)
    return float((ranks[n:].sum() - m * (m + 1) / 2.0) / (n * m))


def auprc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """Average precision, anomalies positive, highest score first (ties broken by order)."""
    scores = np.concatenate([normal, anomalous])
    positive = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
    order = np.argsort(-scores, kind="mergesort")
    hits = positive[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def fpr_at_tpr(normal: np.ndarray, anomalous: np.ndarray, tpr: float = 0.95) -> float:
    """The fraction of normal images flagged by the threshold that catches `tpr` of anomalies."""
    cut = np.quantile(anomalous, 1.0 - tpr, method="lower")
    return float((normal >= cut).mean())


def transform(x: np.ndarray, name: str, image_shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """The normal images [N, D] turned into anomalies of one kind."""
    if name == "invert":
        return 1.0 - x
    if name == "rotate":
        imgs = x.reshape(len(x), *image_shape)
        return np.rot90(imgs, k=1, axes=(1, 2)).reshape(len(x), -1).copy()
    if name == "noise":
        rng = np.random.default_rng(seed)
        return np.clip(x + rng.normal(0.0, 0.25, x.shape), 0.0, 1.0).astype(np.float32)
    raise UsageError(f"unknown transform {name!r} ({', '.join(TRANSFORMS)})", param="anomalous")


@dataclass
class Separation:
    anomalies: str
    score: str
    precision: str
    auroc: float
    auprc: float
    fpr_at_95_tpr: float
    n_normal: int
    n_anomalous: int


@dataclass
class AnomalyReport:
    export_dir: str
    rows: list[Separation] = field(default_factory=list)
    latency_us: dict[str, dict[str, float]] = field(default_factory=dict)  # precision -> batch
    k: int = 64
    latency_score: str = DEFAULT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def separation(
    models: dict[str, Any],
    normal: np.ndarray,
    anomalies: dict[str, np.ndarray],
    kinds: tuple[str, ...] = SCORES,
    *,
    k: int = 64,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[Separation]:
    """One row per (anomaly set, score kind, precision). `models`: precision -> Model."""
    progress = progress or (lambda stage, done, total: None)
    rows, total, done = [], len(kinds) * len(models), 0
    for kind in kinds:
        for precision, model in models.items():
            progress("scoring", done, total)
            base = score_images(model, normal, kind, k=k, seed=seed).scores
            for name, x in anomalies.items():
                other = score_images(model, x, kind, k=k, seed=seed).scores
                rows.append(
                    Separation(
                        name, kind, precision, auroc(base, other), auprc(base, other),
                        fpr_at_tpr(base, other), len(base), len(other),
                    )
                )  # fmt: skip
            done += 1
    progress("scoring", total, total)
    return rows


def latency(
    models: dict[str, Any], x: np.ndarray, rounds: int = 7, kind: str = DEFAULT
) -> dict[str, dict[str, float]]:
    """p50 microseconds per scored image of `kind` at batch 1 and 256, precisions interleaved
    in rounds."""
    out: dict[str, dict[str, float]] = {p: {} for p in models}
    for batch in (1, 256):
        xb = np.resize(x, (batch, x.shape[1])).astype(np.float32)
        calls = {p: (lambda m=m, xb=xb: score_images(m, xb, kind)) for p, m in models.items()}
        reps = 20 if batch == 1 else 2
        result = timing.interleaved(calls, rounds=rounds, reps=reps)
        for precision, t in result.items():
            out[precision][str(batch)] = t.p50_us / batch
    return out


def _check_names(names: tuple[str, ...], known: tuple[str, ...], what: str, param: str) -> None:
    if not names:
        raise UsageError(f"name at least one {what}", param=param)
    for name in names:
        if name not in known:
            raise UsageError(f"unknown {what} {name!r} ({', '.join(known)})", param=param)


def anomaly_bench(
    export_dir,
    *,
    normal: str | None = None,
    anomalous: tuple[str, ...] = TRANSFORMS,
    kinds: tuple[str, ...] = SCORES,
    precisions: tuple[str, ...] = PRECISIONS,
    k: int = 64,
    seed: int = 0,
    limit: int | None = 2000,
    progress: Progress | None = None,
) -> AnomalyReport:
    """Separation and latency for the export's models. `normal`: a data spec whose test split
    is the normal set (default: the export's held-out images); `anomalous`: transform names
    (`TRANSFORMS`) or data specs (their test split), each an anomaly set of its own."""
    from ..api import load
    from ..data.core import load_images

    _check_names(kinds, SCORES, "score kind", "kinds")
    _check_names(precisions, manifest.PRECISIONS, "precision", "precisions")
    models = {p: load(export_dir, p).open() for p in dict.fromkeys(precisions)}
    first = next(iter(models.values()))
    if normal is None:
        x = first.heldout().reshape(-1, first.input_dim)
    else:
        x = first.as_input(load_images(normal, split="test", seed=seed)[0])
    x = x[:limit] if limit else x
    sets = {}
    for name in anomalous:
        if name in TRANSFORMS:
            sets[name] = transform(x, name, first.image_shape, seed)
        else:
            other = first.as_input(load_images(name, split="test", seed=seed)[0])
            sets[name] = other[:limit] if limit else other
    rows = separation(models, x, sets, kinds, k=k, seed=seed, progress=progress)
    timed = DEFAULT if DEFAULT in kinds else kinds[0]
    return AnomalyReport(str(export_dir), rows, latency(models, x, kind=timed), k, timed)
