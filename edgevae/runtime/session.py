"""The torch-free runtime: vetted onnxruntime sessions for an export dir, and what they compute.

Imports numpy, onnxruntime and the standard library only (a test holds it to that), so this is
all a Raspberry Pi or any CPU box needs besides the export dir.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFileError, UsageError
from ..onnxio import vet as onnxcheck
from . import manifest as manifest_mod

PRECISIONS = ("int8", "fp32")
ENCODER_IO = (["x"], ["mu", "logvar"])
DECODER_IO = (["z"], ["x_mean", "logits"])


def create_session(model: Path | bytes, threads: int = 1):
    """An onnxruntime CPU session with edgevae's options, for a file or serialized bytes.
    It checks nothing: an edgevae encoder or decoder goes through `open_session`, which vets
    the file first."""
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(
        source, sess_options=session_options(threads), providers=["CPUExecutionProvider"]
    )


def session_options(threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # QDQ graphs are only fused into integer kernels at the highest level.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Fatal only: at 3 onnxruntime prints every failed run() as an extra "[E:onnxruntime:...]"
    # line on stderr, next to the one-line error edgevae reports.
    so.log_severity_level = 4
    return so


def _explain_ort_error(path: Path, exc: Exception) -> str:
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    m = re.search(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)", msg)
    if m:
        import onnxruntime as ort

        return (
            f"{path}: model IR version {m.group(1)} is newer than onnxruntime "
            f"{ort.__version__} supports ({m.group(2)})"
        )
    m = re.search(r"[Oo]pset (\d+).*?(?:supported|under development)", msg)
    if m:
        import onnxruntime as ort

        # Fix: name the newest opset this onnxruntime supports too (it says so further on in
        # its message), so the user sees both versions, as for the IR version above.
        top = re.search(r"support for domain (\S+) is till opset (\d+)", msg)
        newest = f" (newest for {top.group(1)}: {top.group(2)})" if top else ""
        version = ort.__version__
        return f"{path}: opset {m.group(1)} is not supported by onnxruntime {version}{newest}"
    return f"{path}: onnxruntime cannot load it ({msg[:200]})"


def run_session(
    sess,
    path: Path,
    outputs: list[str],
    feeds: dict[str, np.ndarray],
    width: int | None = None,
) -> list:
    """sess.run, with a failure inside the model reported as a ModelFileError naming the file;
    with `width`, every output must come back as float32 [N, width] (N = rows fed in).

    Fix: a model that loads but fails while running (a Reshape to a bad shape, an index out
    of range, ...) escaped as onnxruntime's own exception: a traceback, after which the
    command's output had not been written (nothing lost) but the user saw no one-line reason.
    """
    try:
        results = sess.run(outputs, feeds)
    except Exception as exc:  # onnxruntime raises its own exception types
        text = " ".join(str(exc).split()) or type(exc).__name__
        node = re.search(r"running (\S+) node\. Name:'([^']*)'", text)
        where = f"node '{node.group(2)}' ({node.group(1)}) " if node else ""
        detail = text.rsplit("Status Message:", 1)[-1].strip()
        detail = re.sub(r"^\S+:\d+ \S+\(.*?\) ", "", detail)  # drop the C++ source location
        raise ModelFileError(f"{path}: {where}failed while running: {detail[:200]}") from None
    if width is not None:
        # Fix: the declared output shapes were checked, the computed ones were not; onnxruntime
        # does not enforce a graph's declared shapes, so a graph wired differently returned
        # e.g. [3] for [N, 784] and the reshape into images died with a ValueError traceback.
        rows = len(next(iter(feeds.values())))
        for name, value in zip(outputs, results, strict=True):
            shape = getattr(value, "shape", None)
            if shape != (rows, width) or getattr(value, "dtype", None) != np.float32:
                raise ModelFileError(
                    f"{path}: output {name} came back as {getattr(value, 'dtype', '?')} "
                    f"{list(shape) if shape is not None else '?'}, expected float32 "
                    f"[{rows}, {width}]"
                )
    return results


def open_session(path: Path, role: str, threads: int = 1):
    """A session for a vetted model file; never hand onnxruntime a file we have not checked."""

    io = ENCODER_IO if role == "encoder" else DECODER_IO
    onnxcheck.vet(path, role, io[0], io[1][:1])
    try:
        sess = create_session(path, threads)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelFileError(_explain_ort_error(path, exc)) from None
    # Fix: vet() looks at the first graph input only, so a model that also requires another
    # input loaded fine and then failed every run() with onnxruntime's traceback.
    required = [i.name for i in sess.get_inputs()]
    if required != io[0]:
        raise ModelFileError(f"{path}: requires inputs {required}, the {role} takes only {io[0]}")
    return sess


class ExportedModel:
    """Encoder and decoder sessions of one precision, created once per process."""

    def __init__(self, export_dir: Path, precision: str = "int8", threads: int = 1):
        if precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}")
        if threads < 1:
            raise UsageError(f"--threads must be >= 1, got {threads}")
        self.export_dir = Path(export_dir)
        self.precision = precision
        self.threads = threads
        self.manifest: dict[str, Any] = manifest_mod.read(self.export_dir)
        self.latent_dim = int(self.manifest["latent_dim"])
        h, w = self.manifest["image_shape"]
        self.image_shape = (int(h), int(w))
        self.likelihood = self.manifest.get("likelihood", "bernoulli")
        gl = self.manifest.get("gaussian_logvar")
        self.gauss_logvar = np.asarray(gl, dtype=np.float64) if gl is not None else None

    @property
    def input_dim(self) -> int:
        return self.image_shape[0] * self.image_shape[1]

    def path(self, role: str) -> Path:
        return self.export_dir / f"{role}.{self.precision}.onnx"

    def _checked(self, role: str):
        path = self.path(role)
        sess = open_session(path, role, self.threads)
        shape = sess.get_inputs()[0].shape
        want = self.input_dim if role == "encoder" else self.latent_dim
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != want):
            raise ModelFileError(
                f"{path}: input shape {shape} does not match the manifest ({want} features)"
            )
        # Fix: outputs were not checked, so a manifest whose image_shape disagrees with the
        # decoder (same latent size) died in numpy's reshape with a traceback.
        out = sess.get_outputs()[0].shape
        want = self.latent_dim if role == "encoder" else self.input_dim
        if len(out) != 2 or (isinstance(out[1], int) and out[1] != want):
            raise ModelFileError(
                f"{path}: output shape {out} does not match the manifest ({want} features)"
            )
        return sess

    @cached_property
    def encoder(self):
        return self._checked("encoder")

    @cached_property
    def decoder(self):
        return self._checked("decoder")

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), -1)
        if x.shape[1] != self.input_dim:
            raise UsageError(f"images have {x.shape[1]} pixels, the model expects {self.input_dim}")
        mu, logvar = run_session(
            self.encoder, self.path("encoder"), ["mu", "logvar"], {"x": x}, self.latent_dim
        )
        return mu, logvar

    def decode_logits(self, z: np.ndarray) -> np.ndarray:
        feeds = {"z": self._z(z)}
        return run_session(self.decoder, self.path("decoder"), ["logits"], feeds, self.input_dim)[0]

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Mean image per z, [N, D] in [0, 1]."""
        feeds = {"z": self._z(z)}
        return run_session(self.decoder, self.path("decoder"), ["x_mean"], feeds, self.input_dim)[0]

    def _z(self, z: np.ndarray) -> np.ndarray:
        z = np.ascontiguousarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise UsageError(f"z must be [N, {self.latent_dim}], got {list(z.shape)}")
        if not np.isfinite(z).all():
            raise UsageError("z holds NaN or Inf")
        return z

    def images(self, flat: np.ndarray) -> np.ndarray:
        return flat.reshape(len(flat), *self.image_shape)
