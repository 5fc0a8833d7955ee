"""A calibrated anomaly threshold, kept in the export's manifest, and detection with it.

`calibrate` scores normal images (the run's validation split: data the model never trained on)
and puts the threshold at the (1 - fpr) quantile of their scores, so that at most `fpr` of
normal images score above it; the fraction measured on those images is stored beside it.
The manifest's `threshold` entry holds the score kind, precision, k, value, target and measured
FPR, how many images and the sha256 of their float32 pixels, and (when the export has the
firmware models and the kind is one a board computes: excess or elbo) the same threshold for
the microcontroller's own score of that kind, which `edgevae firmware --score` writes into
the C header as EDGEVAE_THRESHOLD_NATS.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import fsio
from ..errors import ModelFileError, UsageError
from . import manifest as manifest_mod
from .score import SCORES, Scores, check_kind, score_images


@dataclass
class Threshold:
    score: str
    precision: str
    value: float
    fpr_target: float
    fpr_measured: float
    n_images: int
    data: dict[str, Any] = field(default_factory=dict)
    k: int | None = None
    firmware: float | None = None
    models: dict[str, str] = field(default_factory=dict)  # file name -> sha256 scored with

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Detection:
    """Which images score above the threshold."""

    flagged: np.ndarray  # bool [N]
    scores: Scores
    threshold: Threshold

    @property
    def n_flagged(self) -> int:
        return int(self.flagged.sum())


def quantile_threshold(scores: np.ndarray, fpr: float) -> tuple[float, float]:
    """(threshold, measured fpr): the smallest observed score with at most `fpr` of the
    scores strictly above it."""
    if not 0.0 < fpr < 1.0:
        raise UsageError(f"must be in (0, 1), got {fpr}", param="fpr")
    ordered = np.sort(scores)
    keep = int(np.ceil((1.0 - fpr) * len(ordered))) - 1
    value = float(ordered[min(max(keep, 0), len(ordered) - 1)])
    return value, float((scores > value).mean())


def calibrate(
    model,
    x_normal: np.ndarray,
    *,
    fpr: float = 0.01,
    kind: str = "elbo",
    k: int = 64,
    data: dict[str, Any] | None = None,
) -> Threshold:
    """The threshold at false-positive rate `fpr` on normal images `x_normal`."""
    check_kind(kind, k)
    if not 0.0 < fpr < 1.0:
        raise UsageError(f"must be in (0, 1), got {fpr}", param="fpr")
    x = model.as_input(x_normal)
    if len(x) < 2:
        raise UsageError("calibration needs at least 2 normal images", param="data")
    scores = score_images(model, x, kind, k=k).scores
    value, measured = quantile_threshold(scores, fpr)
    info = {**(data or {}), "sha256": fsio.sha256_of(np.ascontiguousarray(x).tobytes())}
    files = model.manifest.get("files") or {}
    used = (model.path("encoder").name, model.path("decoder").name)
    return Threshold(
        score=kind,
        precision=model.precision,
        value=value,
        fpr_target=fpr,
        fpr_measured=measured,
        n_images=len(x),
        data=info,
        k=k if kind == "iwae" else None,
        models={n: files[n]["sha256"] for n in used if "sha256" in (files.get(n) or {})},
    )


def firmware_threshold(
    export_dir, x_normal: np.ndarray, fpr: float, kind: str = "excess", weight_bits: int = 8
) -> float | None:
    """The same threshold for the microcontroller's own score of `kind` ("excess" or "elbo":
    the static int8 encoder and decoder, `firmware.score`; `weight_bits` 4: with the 4-bit
    decoder), on the same normal images; None when the export has no firmware pair or their
    pixels are not whole 8-bit levels (the firmware reads uint8)."""
    from ..firmware.score import check_kind, load_score_model, score_parts

    check_kind(kind)
    man = manifest_mod.read(export_dir)
    if not (man.get("firmware_encoder") and man.get("firmware_decoder")) or man.get("classes"):
        return None
    levels = np.rint(np.asarray(x_normal, np.float32) * 255.0)
    if not np.array_equal((levels / 255.0).astype(np.float32), np.asarray(x_normal, np.float32)):
        return None
    model = load_score_model(export_dir, weight_bits, kind=kind)
    scores = score_parts(model, levels.astype(np.uint8)).score.astype(np.float64)
    return quantile_threshold(scores, fpr)[0]


def store(export_dir, threshold: Threshold) -> None:
    """Write the threshold into the export's manifest (atomically)."""
    entry = threshold.to_dict()
    manifest_mod.commit(Path(export_dir), [], lambda man: man.update(threshold=entry))


def stored(man: dict[str, Any], where: str = "manifest.json") -> Threshold:
    """The manifest's threshold, checked; ModelFileError when absent or malformed."""
    entry = man.get("threshold")
    if entry is None:
        raise ModelFileError(f"{where}: no anomaly threshold; calibrate one first")
    try:
        t = Threshold(**entry)
        ok = (
            t.score in SCORES
            and t.precision in manifest_mod.PRECISIONS
            and _number(t.value)
            and _number(t.fpr_target)
            and 0.0 < t.fpr_target < 1.0
            and (t.k is None or (_int(t.k) and t.k >= 1))
            and (t.score != "iwae" or t.k is not None)
            and (t.firmware is None or _number(t.firmware))
            and isinstance(t.models, dict)
            and all(isinstance(v, str) for v in t.models.values())
        )
    except TypeError:
        ok = False
    if not ok:
        raise ModelFileError(f"{where}: malformed threshold entry")
    return t


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def check_models(
    models: dict[str, str], man: dict[str, Any], where: str, names: tuple[str, ...] | None = None
) -> None:
    """The threshold was calibrated with the models this manifest lists: `models`, the
    threshold's record (file name -> sha256), checked for `names` of them or all it recorded.
    A threshold stored before a re-quantization, or copied from another export, belongs to
    other models. Thresholds that recorded no models pass."""
    files = man.get("files") or {}
    for name, digest in models.items():
        if names is not None and name not in names:
            continue
        if (files.get(name) or {}).get("sha256") != digest:
            raise ModelFileError(
                f"{where}: the threshold was calibrated with another {name} (sha256 "
                f"{digest[:12]}...): the models changed since, or the threshold comes from "
                "another export; calibrate it again"
            )


def detect(model, x: np.ndarray, threshold: Threshold | None = None) -> Detection:
    """Score `x` as the threshold was calibrated (kind, k) and flag what lies above it. The
    model's precision must be the threshold's: scores of int8 and fp32 models differ."""
    where = str(model.export_dir / manifest_mod.NAME)
    t = threshold or stored(model.manifest, where)
    names = (model.path("encoder").name, model.path("decoder").name)
    check_models(t.models, model.manifest, where, names)
    if t.precision != model.precision:
        raise UsageError(
            f"the threshold was calibrated for the {t.precision} models, not {model.precision}",
            param="precision",
        )
    scores = score_images(model, x, t.score, k=t.k or 64)
    return Detection(scores.scores > t.value, scores, t)
