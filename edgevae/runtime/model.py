"""`edgevae.Model`: an export dir's encoder and decoder, run with onnxruntime and numpy only.

What `edgevae.load()` returns and every runtime command (sample, reconstruct, interpolate,
manifold, encode, decode) calls. Images go in as [N, H, W] or [N, H*W], float in [0, 1] or
uint8 0-255; images come out as float32 [N, H, W] in [0, 1]. A conditional model (`classes`
not empty) takes labels wherever it encodes or decodes: one label for all, or one per image,
each a class position or name.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .. import fsio, limits
from ..errors import ModelFileError, UsageError
from . import heldout, metrics
from . import labels as labels_mod
from . import manifest as manifest_mod
from .generate import manifold_z, prior_z
from .session import open_session, run_session


class Model:
    """An exported VAE of one precision; sessions are created on first use, once.

    >>> model = edgevae.load("export")          # int8 by default
    >>> images = model.sample(16, seed=0)       # [16, 28, 28] float32 in [0, 1]
    """

    def __init__(self, export_dir: str | Path, precision: str = "int8", threads: int = 1):
        if precision not in manifest_mod.PRECISIONS:
            choices = ", ".join(manifest_mod.PRECISIONS)
            raise UsageError(f"must be one of {choices}", param="precision")
        if threads < 1:
            raise UsageError(f"must be >= 1, got {threads}", param="threads")
        self.export_dir = Path(export_dir)
        self.precision = precision
        self.threads = threads
        with fsio.dir_lock(self.export_dir, shared=True):  # not while a writer commits
            self.manifest: dict[str, Any] = manifest_mod.read(self.export_dir)
        self.latent_dim = int(self.manifest["latent_dim"])
        h, w = self.manifest["image_shape"]
        self.image_shape = (int(h), int(w))
        self.likelihood: str = self.manifest.get("likelihood", "bernoulli")
        gl = self.manifest.get("gaussian_logvar")
        self.gauss_logvar = np.asarray(gl, dtype=np.float64) if gl is not None else None
        self.classes: list[str] = list(self.manifest.get("classes") or [])

    @property
    def conditional(self) -> bool:
        return bool(self.classes)

    def __repr__(self) -> str:
        return (
            f"Model({str(self.export_dir)!r}, precision={self.precision!r}, "
            f"latent_dim={self.latent_dim}, image_shape={self.image_shape})"
        )

    @property
    def input_dim(self) -> int:
        return self.image_shape[0] * self.image_shape[1]

    def path(self, role: str) -> Path:
        """The ONNX file of `role` ("encoder" or "decoder") at this precision."""
        encoder, decoder = manifest_mod.pair_files(self.manifest, self.precision)
        return self.export_dir / (encoder if role == "encoder" else decoder)

    # ------------------------------------------------------------------ sessions

    def _session(self, role: str):
        path = self.path(role)
        with fsio.dir_lock(self.export_dir, shared=True):
            sess = open_session(path, role, self.threads, self.conditional)  # vetted first
            self._check_unchanged(path)
        width_in, width_out = (
            (self.input_dim, self.latent_dim)
            if role == "encoder"
            else (self.latent_dim, self.input_dim)
        )
        for what, arg, want in (
            ("input", sess.get_inputs()[0], width_in),
            ("output", sess.get_outputs()[0], width_out),
        ):
            shape = arg.shape
            if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != want):
                raise ModelFileError(
                    f"{path}: {what} shape {shape} does not match the manifest ({want} features)"
                )
        y = [a.shape for a in sess.get_inputs() if a.name == "y"]
        if y and (len(y[0]) != 2 or (isinstance(y[0][1], int) and y[0][1] != len(self.classes))):
            raise ModelFileError(
                f"{path}: input y has shape {y[0]}, but the manifest lists "
                f"{len(self.classes)} classes"
            )
        return sess

    def _check_unchanged(self, path: Path) -> None:
        """The file is the one the manifest read at load time lists: an export rewritten since
        (another export or quantize) is refused, never mixed with the manifest it replaced."""
        want = (self.manifest.get("files") or {}).get(path.name, {}).get("sha256")
        if want is not None and fsio.sha256_file(path, ModelFileError) != want:
            raise ModelFileError(
                f"{path}: its sha256 is not the one in the manifest loaded with it (the export "
                "was rewritten since, or the file edited); load the export again"
            )

    @cached_property
    def encoder(self):
        """The encoder's onnxruntime session (vetted, shapes checked against the manifest)."""
        return self._session("encoder")

    @cached_property
    def decoder(self):
        """The decoder's onnxruntime session (vetted, shapes checked against the manifest)."""
        return self._session("decoder")

    # ------------------------------------------------------------------ the two networks

    def open(self) -> Model:
        """Create both sessions now (each file vetted), so that a missing or bad model file
        is refused before any work rather than midway; returns the model."""
        _ = self.encoder, self.decoder
        return self

    def encode(self, x: np.ndarray, labels=None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior q(z|x) (q(z|x, y) with labels) of each image: (mu, logvar), float32
        [N, latent_dim] each."""
        mu, logvar = self._run("encoder", ["mu", "logvar"], self.as_input(x), labels)
        return mu, logvar

    def decode(self, z: np.ndarray, labels=None) -> np.ndarray:
        """Mean image of p(x|z) (p(x|z, y)) for each z, flat: float32 [N, H*W] in [0, 1]."""
        return self._decoder_output(z, labels, "x_mean")

    def decode_logits(self, z: np.ndarray, labels=None) -> np.ndarray:
        """The decoder's logits [N, H*W] (likelihoods are computed from these)."""
        return self._decoder_output(z, labels, "logits")

    def _decoder_output(self, z: np.ndarray, labels, name: str) -> np.ndarray:
        return self._run("decoder", [name], self._z(z), labels)[0]

    def _run(self, role: str, names: list[str], rows: np.ndarray, labels) -> list[np.ndarray]:
        """The outputs `names` of `role` for input rows [N, width], run a chunk of rows at a
        time (`limits.chunk_rows`): onnxruntime's working memory and the one-hot labels stay
        bounded however many rows there are."""
        sess = self.encoder if role == "encoder" else self.decoder
        width = self.latent_dim if role == "encoder" else self.input_dim
        feed = "x" if role == "encoder" else "z"
        size = limits.chunk_rows(max(self.input_dim, len(self.classes)), n=len(rows))
        if len(rows) > size:  # the outputs (and a label position per row) must fit
            need = len(rows) * (width * 4 * len(names) + 8)
            limits.check(need, f"{len(rows)} rows through the {role}", feed)
        y = self._y(labels, len(rows))
        if len(rows) <= size:
            return run_session(sess, self.path(role), names, {feed: rows, **y(0, len(rows))}, width)
        outs = [np.empty((len(rows), width), np.float32) for _ in names]
        for start in range(0, len(rows), size):
            stop = min(start + size, len(rows))
            feeds = {feed: rows[start:stop], **y(start, stop)}
            parts = run_session(sess, self.path(role), names, feeds, width)
            for out, part in zip(outs, parts, strict=True):
                out[start:stop] = part
        return outs

    def _y(self, labels, n: int):
        """The `y` feed of rows [start, stop) as a function (start, stop) -> feeds: one-hot
        labels for a conditional model, nothing otherwise; the labels are checked here."""
        if not self.conditional:
            if labels is not None:
                raise UsageError(
                    "this model is not conditional: it takes no labels", param="labels"
                )
            return lambda start, stop: {}
        if labels is None:
            raise UsageError(
                f"this model is conditional: give a label ({', '.join(self.classes)})",
                param="labels",
            )
        if isinstance(labels, np.ndarray) and labels.ndim == 2 and labels.dtype == np.float32:
            if labels.shape != (n, len(self.classes)):  # already one-hot (or soft) rows
                raise UsageError(
                    f"one-hot rows must be [{n}, {len(self.classes)}], got {list(labels.shape)}",
                    param="labels",
                )
            return lambda start, stop: {"y": np.ascontiguousarray(labels[start:stop])}
        index = labels_mod.indices(self.classes, labels, n)
        return lambda start, stop: {"y": labels_mod.rows(len(self.classes), index[start:stop])}

    def _one_label(self, label):
        """A class position for the argument `label` (None for an unconditional model)."""
        if not self.conditional:
            if label is not None:
                raise UsageError("this model is not conditional: it takes no label", param="label")
            return None
        if label is None:
            raise UsageError(
                f"this model is conditional: give a label ({', '.join(self.classes)})",
                param="label",
            )
        return labels_mod.class_index(self.classes, label, "label")

    def _reserve(self, count: int, param: str, what: str, extra: int = 0) -> None:
        """Refuse before any work when `count` images (float32, what the call returns) and
        `extra` bytes would not fit in the memory limit (`edgevae.limits`)."""
        h, w = self.image_shape
        need = count * h * w * 4 + extra
        limits.check(need, f"{what} ({count} images of {h}x{w})", param)

    # ------------------------------------------------------------------ what users make

    def sample(self, n: int, seed: int = 0, temperature: float = 1.0, label=None) -> np.ndarray:
        """n images decoded from z ~ N(0, temperature^2 I): [n, H, W] in [0, 1]. A
        temperature below 1 gives cleaner, less varied images. A conditional model draws the
        class `label` (a position or name); `label="all"` draws n of every class, one class
        after the other: [n * C, H, W] (the same z for every class)."""
        every = self.conditional and label == "all"
        label = label if every or label is None else self._one_label(label)
        count = n * len(self.classes) if every else n
        what = f"{n} samples of each of {len(self.classes)} classes" if every else f"{n} samples"
        self._reserve(count, "n", what, extra=n * self.latent_dim * 12)
        z = prior_z(n, self.latent_dim, seed, temperature)
        if not every:
            return self.images(self.decode(z, label))
        out = np.empty((count, self.input_dim), np.float32)
        for c in range(len(self.classes)):
            out[c * n : (c + 1) * n] = self.decode(z, c)
        return self.images(out)

    def reconstruct(self, x: np.ndarray, labels=None) -> np.ndarray:
        """Each image encoded and decoded through z = mu: [N, H, W]."""
        mu, _ = self.encode(x, labels)
        return self.images(self.decode(mu, labels))

    def interpolate(self, a: np.ndarray, b: np.ndarray, steps: int = 10, labels=None) -> np.ndarray:
        """The decoded straight line between the posterior means of images a and b, ends
        included: [steps, H, W]. A conditional model takes `labels=(label_a, label_b)`; the
        path decodes with the one-hot labels blended along it."""
        if steps < 2:
            raise UsageError(f"must be >= 2, got {steps}", param="steps")
        self._reserve(steps, "steps", f"a path of {steps} steps", steps * self.latent_dim * 8)
        pair = np.stack([self.as_input(a)[0], self.as_input(b)[0]])
        y = self._y(labels, 2)(0, 2).get("y")
        mu, _ = self.encode(pair, y)
        t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
        path_y = None if y is None else ((1 - t) * y[0] + t * y[1]).astype(np.float32)
        return self.images(self.decode((1 - t) * mu[0] + t * mu[1], path_y))

    def manifold(self, steps: int = 20, dims: tuple[int, int] = (0, 1), label=None) -> np.ndarray:
        """The paper's Fig. 4: a steps x steps grid over two latent dims through the inverse
        Gaussian CDF, other dims 0: [steps * steps, H, W], row-major (top row = high dims[1]).
        A conditional model decodes every cell with the class `label`."""
        label = self._one_label(label)
        if steps >= 2:
            what, z_bytes = f"a {steps}x{steps} manifold", steps * steps * self.latent_dim * 4
            self._reserve(steps * steps, "steps", what, z_bytes)
        return self.images(self.decode(manifold_z(self.latent_dim, steps, dims), label))

    def analogies(self, x: np.ndarray, labels) -> np.ndarray:
        """Style kept, class changed (Kingma et al. 2014, Fig. 1): each image is encoded with
        its label, and its z = mu decoded with every class: [N, C, H, W]."""
        if not self.conditional:
            raise UsageError(f"{self.export_dir}: analogies need a conditional model")
        x = self.as_input(x)
        count = len(x) * len(self.classes)
        self._reserve(count, "x", f"{len(x)} images decoded as each of {len(self.classes)} classes")
        mu, _ = self.encode(x, labels)
        out = np.empty((len(x), len(self.classes), *self.image_shape), np.float32)
        for c in range(len(self.classes)):
            out[:, c] = self.images(self.decode(mu, c))
        return out

    def heldout_labels(self) -> np.ndarray | None:
        """The held-out images' labels as positions in `classes` (a conditional model) or in
        the data's classes; None when the data had no labels."""
        entry = self.manifest.get("heldout") or {}
        labels, names = entry.get("labels"), entry.get("classes") or []
        if labels is None:
            return None
        where = self.export_dir / manifest_mod.NAME
        top = len(names) if names else manifest_mod.MAX_CLASSES
        if (
            not isinstance(labels, list)
            or len(labels) != entry.get("count")
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in labels)
            or not all(0 <= i < top for i in labels)
            or not (isinstance(names, list) and all(isinstance(n, str) for n in names))
        ):
            raise ModelFileError(
                f"{where}: heldout.labels must be {entry.get('count')!r:.20} class positions "
                f"in 0..{top - 1}, one per held-out image"
            )
        if self.conditional and names:
            unknown = sorted({names[i] for i in labels} - set(self.classes))
            if unknown:
                raise ModelFileError(
                    f"{where}: the held-out labels name classes the model does not have: "
                    f"{', '.join(unknown)[:100]}"
                )
            index = {name: i for i, name in enumerate(self.classes)}
            return np.array([index[names[i]] for i in labels], dtype=np.int64)
        return np.asarray(labels, dtype=np.int64)

    def heldout(self) -> np.ndarray:
        """The test images shipped in the export (a few hundred): [N, H, W] in [0, 1]."""
        entry = self.manifest.get("heldout")
        if not entry:
            raise ModelFileError(
                f"{self.export_dir}: the export carries no held-out images (made by an older "
                "edgevae); export it again, or give images explicitly"
            )
        return self.images(heldout.read(self.export_dir, entry, self.input_dim))

    def evaluate(self, x: np.ndarray, k: int = 64, seed: int = 0, labels=None) -> metrics.Bounds:
        """Bounds on -log p(x) in nats per image: -ELBO, its parts, the k-sample IWAE NLL;
        for a conditional model, on -log p(x | y) with the images' `labels`."""
        if k < 1:
            raise UsageError(f"must be >= 1, got {k}", param="k")
        x = self.as_input(x)
        return metrics.evaluate(
            x,
            self.encode,
            self.decode_logits,
            self.likelihood,
            k=k,
            seed=seed,
            gauss_logvar=self.gauss_logvar,
            y=self._y(labels, len(x))(0, len(x)).get("y"),
        )

    # ------------------------------------------------------------------ anomalies

    def score(self, x: np.ndarray, kind: str | None = None, k: int = 64, seed: int = 0):
        """Anomaly scores per image, higher = more anomalous: "excess" (the default: elbo
        minus the image's own per-pixel entropy), "excess-ink" (excess / sqrt(1 + ink)),
        "elbo" (-ELBO at z = mu), "iwae" (k-sample -log p(x)) or "complexity" (elbo minus
        the image's PNG length). Returns `runtime.score.Scores` (`.scores` [N] and the parts)."""
        from .score import DEFAULT, score_images

        kind = DEFAULT if kind is None else kind

        return score_images(self, x, kind, k=k, seed=seed)

    def detect(self, x: np.ndarray):
        """Flag the images that score above the threshold stored in the export (see
        `edgevae.threshold`). Returns `runtime.anomaly.Detection` (`.flagged` [N] bool)."""
        from .anomaly import detect

        return detect(self, x)

    # ------------------------------------------------------------------ shapes

    def images(self, flat: np.ndarray) -> np.ndarray:
        """[N, H*W] -> [N, H, W]."""
        return flat.reshape(len(flat), *self.image_shape)

    def as_input(self, x: np.ndarray) -> np.ndarray:
        """Images as the encoder takes them: float32 [N, H*W] in [0, 1] (uint8 is /255)."""
        x = np.asarray(x)
        if x.shape == self.image_shape or x.shape == (self.input_dim,):
            x = x[None]  # one image
        if x.ndim == 3:
            x = x.reshape(len(x), -1)
        if x.ndim != 2:
            raise UsageError(f"images must be [N, H, W] or [N, H*W], got shape {list(x.shape)}")
        if x.shape[1] != self.input_dim:
            h, w = self.image_shape
            raise UsageError(
                f"images have {x.shape[1]} pixels, the model expects {self.input_dim} ({h}x{w})"
            )
        if x.dtype == np.uint8:
            return x.astype(np.float32) / 255.0
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0:
            raise UsageError("pixel intensities must be finite and in [0, 1]")
        return x

    def _z(self, z: np.ndarray) -> np.ndarray:
        z = np.ascontiguousarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise UsageError(f"must be [N, {self.latent_dim}], got {list(z.shape)}", param="z")
        if not np.isfinite(z).all():
            raise UsageError("holds NaN or Inf", param="z")
        return z
