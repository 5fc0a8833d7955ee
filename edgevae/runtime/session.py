"""onnxruntime sessions: the one constructor, the vetted opening of an encoder or decoder, and
a run() whose failures become one-line errors naming the file.

Imports numpy, onnxruntime and the standard library only (a test holds the runtime to that).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from ..onnxio import vet as onnxcheck

ENCODER_IO = (["x"], ["mu", "logvar"])
DECODER_IO = (["z"], ["x_mean", "logits"])


def feeds(role: str, data: np.ndarray, y: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The inputs of one encoder or decoder run: `data` as `x` (images, encoder) or `z`
    (latents, decoder), float32 and contiguous; a conditional model's one-hot labels `y`
    [N, C] beside it (None: an unconditional model, which takes no `y`)."""
    name = (ENCODER_IO if role == "encoder" else DECODER_IO)[0][0]
    out = {name: np.ascontiguousarray(data, dtype=np.float32)}
    if y is not None:
        out["y"] = np.ascontiguousarray(y, dtype=np.float32)
    return out


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

        # onnxruntime names its newest opset further on in its message: show both versions.
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
    with `width`, every output must come back as float32 [N, width] (N = rows fed in): a
    model that loads can still fail while running (a Reshape to a bad shape, an index out of
    range), and onnxruntime does not enforce a graph's declared output shapes."""
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


def open_session(path: Path, role: str, threads: int = 1, conditional: bool = False):
    """A session for a vetted model file; never hand onnxruntime a file we have not checked.
    A conditional model's encoder and decoder also take the one-hot label `y`."""
    io = ENCODER_IO if role == "encoder" else DECODER_IO
    io = (io[0] + ["y"], io[1]) if conditional else io
    onnxcheck.vet(path, role, io[0], io[1][:1])
    try:
        sess = create_session(path, threads)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelFileError(_explain_ort_error(path, exc)) from None
    # vet() looks at the declared graph; the session says what run() will require.
    required = [i.name for i in sess.get_inputs()]
    if required != io[0]:
        raise ModelFileError(f"{path}: requires inputs {required}, the {role} takes {io[0]}")
    return sess
