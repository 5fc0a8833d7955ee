"""Where a model's time goes: onnxruntime's own profiler, per node of the graph it runs
(after its fusions: a QDQ Gemm shows up as QGemm, its Relu folded away).

The session is edgevae's usual one (`runtime.session.session_options`, graph optimization
ALL, the given threads) with profiling switched on; the profile file goes to a temporary
directory and is read back. Node times are medians over the profiled runs, `total_us` the
median `model_run` (which includes onnxruntime's per-run overhead, so it exceeds the sum).
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..runtime.session import open_session, session_options


@dataclass
class NodeTime:
    op: str  # the kernel's op type (QGemm, Gemm, Sigmoid, ...)
    name: str  # the node's name in the optimized graph
    us: float  # median microseconds per run


@dataclass
class Profile:
    path: str
    batch: int
    runs: int
    total_us: float
    nodes: list[NodeTime] = field(default_factory=list)

    @property
    def other_us(self) -> float:
        """What the nodes do not account for: onnxruntime's per-run overhead."""
        return self.total_us - sum(n.us for n in self.nodes)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "batch": self.batch,
            "runs": self.runs,
            "total_us": self.total_us,
            "other_us": self.other_us,
            "nodes": [vars(n) for n in self.nodes],
        }


def profile_model(
    path: Path, role: str, batch: int, *, runs: int = 200, warmup: int = 20, threads: int = 1
) -> Profile:
    """Profile `runs` calls of an edgevae encoder or decoder on random input of `batch` rows."""
    import onnxruntime as ort

    sess = open_session(Path(path), role, threads)  # vets the file; gives the input width
    inp = sess.get_inputs()[0]
    width = int(inp.shape[1])
    feed = {inp.name: np.random.default_rng(0).random((batch, width), dtype=np.float32)}
    with tempfile.TemporaryDirectory(prefix="edgevae-profile-") as tmp:
        so = session_options(threads)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "profile")
        prof = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        for _ in range(warmup + runs):
            prof.run(None, feed)
        events = json.loads(Path(prof.end_profiling()).read_text())
    per_node: dict[tuple[str, str], list[float]] = defaultdict(list)
    totals: list[float] = []
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            key = (e["args"].get("op_name", "?"), e["name"].removesuffix("_kernel_time"))
            per_node[key].append(float(e["dur"]))
        elif e.get("cat") == "Session" and e.get("name") == "model_run":
            totals.append(float(e["dur"]))
    nodes = [
        NodeTime(op, name, float(np.median(durs[warmup:] or durs)))
        for (op, name), durs in per_node.items()
    ]
    total = float(np.median(totals[warmup:] or totals)) if totals else float("nan")
    return Profile(str(path), batch, runs, total, nodes)
