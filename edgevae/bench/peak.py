"""This machine's practical peak GMAC/s in onnxruntime per GEMM format, and the int8 ceiling:
how many times faster than fp32 onnxruntime's own int8 GEMM can be on this CPU.

Formats (`FORMATS`): `fp32` (MatMul) and the integer MatMulInteger kinds the recipes use -
`u8s8` (u8 activations x s8 weights, full range), `u8s8-7bit` (weights in [-64, 64), what
`reduce_range` produces), `u8u8` and `s8s8`. The ceiling of a format is its GMAC/s over fp32's,
from the same interleaved run. `recipes.gemm_format` says which format a recipe runs.

The probe shape (`PEAK_SHAPE`, 256 x 512 x 512) is measured to reach the kernels' peak here as
well as 1024^3 does (fp32 and int8 alike; `bench/peak_shapes.py`, docs/quantization.md), with
1/16 of its multiply-accumulates per call, so `edgevae quantize` can run the probe inside its
search (~0.15 s for its two formats). The probe models are built
with `onnxio.proto`'s message classes (protobuf's runtime and onnx's schema), not the onnx
package, which the device install does not have.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import one_line
from ..onnxio import proto
from ..runtime import timing

PEAK_SHAPE = (256, 512, 512)  # [M, K] x [K, N]
BLOCK_S = 3e-3  # each format's calls per round last about this long
FORMATS = ("fp32", "u8s8", "u8s8-7bit", "u8u8", "s8s8")
# The format the legacy `int8_*` keys report: what the recipes' 7-bit weights run.
INT8_FORMAT = "u8s8-7bit"
# TensorProto.DataType values.
_ONNX_FLOAT, _ONNX_UINT8, _ONNX_INT8, _ONNX_INT32 = 1, 2, 3, 6
_ONNX_ELEM = {
    np.dtype(np.float32): _ONNX_FLOAT,
    np.dtype(np.int8): _ONNX_INT8,
    np.dtype(np.uint8): _ONNX_UINT8,
}


def _value_info(info, name: str, elem: int, shape: tuple[int, ...]) -> None:
    """Fill a ValueInfoProto: name, tensor element type and a fixed shape."""
    info.name = name
    tensor = info.type.tensor_type
    tensor.elem_type = elem
    for d in shape:
        tensor.shape.dim.add(dim_value=d)


def matmul_model(op: str, a_elem: int, b: np.ndarray, out_elem: int, m: int) -> bytes:
    """A one-node ONNX model `y = op(a, B)`, a: [m, K] input, B: [K, N] constant."""
    k, n = b.shape
    # IR version 8, opset 13: old enough for any onnxruntime of recent years to load.
    model = proto.ModelProto(ir_version=8, producer_name="edgevae-bench")
    model.opset_import.add(domain="", version=13)
    graph = model.graph
    graph.name = "peak_probe"
    graph.node.add(input=["a", "b"], output=["y"], name="probe", op_type=op)
    graph.initializer.add(
        dims=b.shape,
        data_type=_ONNX_ELEM[b.dtype],
        name="b",
        raw_data=b.astype(b.dtype.newbyteorder("<")).tobytes(),  # little-endian, as ONNX stores it
    )
    _value_info(graph.input.add(), "a", a_elem, (m, k))
    _value_info(graph.output.add(), "y", out_elem, (m, n))
    return model.SerializeToString()


def _probe_models(m: int, k: int, n: int, formats) -> dict[str, tuple[bytes, np.ndarray]]:
    """(model, input a) per format, random operands of the format's ranges."""
    rng = np.random.default_rng(0)
    a_u8 = rng.integers(0, 256, (m, k), dtype=np.uint8)
    make = {
        "fp32": lambda: (
            matmul_model("MatMul", _ONNX_FLOAT, rng.standard_normal((k, n), np.float32),
                         _ONNX_FLOAT, m),
            rng.standard_normal((m, k), np.float32),
        ),
        "u8s8": lambda: (
            matmul_model("MatMulInteger", _ONNX_UINT8,
                         rng.integers(-128, 128, (k, n), dtype=np.int8), _ONNX_INT32, m),
            a_u8,
        ),
        "u8s8-7bit": lambda: (
            matmul_model("MatMulInteger", _ONNX_UINT8,
                         rng.integers(-64, 64, (k, n), dtype=np.int8), _ONNX_INT32, m),
            a_u8,
        ),
        "u8u8": lambda: (
            matmul_model("MatMulInteger", _ONNX_UINT8,
                         rng.integers(0, 256, (k, n), dtype=np.uint8), _ONNX_INT32, m),
            a_u8,
        ),
        "s8s8": lambda: (
            matmul_model("MatMulInteger", _ONNX_INT8,
                         rng.integers(-128, 128, (k, n), dtype=np.int8), _ONNX_INT32, m),
            rng.integers(-128, 128, (m, k), dtype=np.int8),
        ),
    }  # fmt: skip
    return {f: make[f]() for f in formats}


def peak_probe(
    threads: int = 1,
    shape: tuple[int, int, int] = PEAK_SHAPE,
    runs: int = 15,
    formats: tuple[str, ...] = FORMATS,
) -> dict[str, Any]:
    """Practical peak GMAC/s of each format in `formats` (fp32 is always measured): a
    [M, K] x [K, N] product with constant weights, `runs` interleaved rounds.

    Returns `formats` ({format: {gmac_per_s (median round, wall), best_gmac_per_s,
    cpu_gmac_per_s, calls_per_round, error when the probe failed}}), `ceiling` ({format: its
    GMAC/s over fp32's, from CPU time with one thread and wall time otherwise}), the legacy
    `fp32_*` and `int8_*` keys (int8 = u8s8-7bit), `shape`, `threads`, `runs`, `seconds`.
    On a loaded machine a row can exceed 100% of the peak."""
    import time

    from ..runtime.session import create_session

    t0 = time.perf_counter()
    m, k, n = shape
    wanted = tuple(dict.fromkeys(("fp32", *formats)))
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown GEMM formats {unknown}; known: {FORMATS}")
    calls: dict[str, Callable[[], object]] = {}
    per: dict[str, dict[str, Any]] = {}
    gmac = m * k * n / 1e9
    for fmt, (model, a) in _probe_models(m, k, n, wanted).items():
        per[fmt] = {"gmac_per_s": None, "best_gmac_per_s": None, "cpu_gmac_per_s": None}
        try:
            # Built here, from bytes: not an encoder or decoder to vet.
            sess = create_session(model, threads)
            sess.run(None, {"a": a})
            t1 = time.perf_counter()
            sess.run(None, {"a": a})
            per_call = max(time.perf_counter() - t1, 1e-6)
        except Exception as exc:  # onnxruntime raises its own types
            per[fmt]["error"] = one_line(exc, 200)
            continue
        # A block of calls per round, ~BLOCK_S long whatever the format's speed, so the first
        # call's cold caches (the previous format's operands evicted this one's) are a small
        # part of it: timed singly, whichever format follows fp32 measures up to 10% slower.
        calls_per_block = int(min(1000, max(1, round(BLOCK_S / per_call))))
        per[fmt]["calls_per_round"] = calls_per_block
        calls[fmt] = lambda s=sess, a=a, r=range(calls_per_block): [
            s.run(None, {"a": a}) for _ in r
        ]
    if calls:
        res = timing.interleaved(
            calls, rounds=runs, reps=1, warmup=1, cpu_clock=timing.cpu_clock_for(threads)
        )
        for fmt, t in res.items():
            block = gmac * per[fmt]["calls_per_round"]
            per[fmt]["gmac_per_s"] = block / (t.p50_us * 1e-6)
            per[fmt]["best_gmac_per_s"] = block / (min(t.samples_ns) * 1e-9)
            per[fmt]["cpu_gmac_per_s"] = block / (t.cpu.p50_us * 1e-6)
    out: dict[str, Any] = {"shape": [m, k, n], "threads": threads, "runs": runs}
    out["formats"] = per
    out["ceiling"] = ceilings(per, threads)
    for legacy, fmt in (("fp32", "fp32"), ("int8", INT8_FORMAT)):
        got = per.get(fmt) or {"gmac_per_s": None}
        out[f"{legacy}_gmac_per_s"] = got["gmac_per_s"]
        if got.get("gmac_per_s") is not None:
            out[f"{legacy}_best_gmac_per_s"] = got["best_gmac_per_s"]
            out[f"{legacy}_cpu_gmac_per_s"] = got["cpu_gmac_per_s"]
        if got.get("error"):
            out[f"{legacy}_error"] = got["error"]
    out["seconds"] = time.perf_counter() - t0
    return out


def ceilings(per: dict[str, dict[str, Any]], threads: int) -> dict[str, float | None]:
    """Each integer format's GMAC/s over fp32's: CPU time with one thread (immune to a busy
    machine), wall time otherwise; None where a probe failed."""
    key = "cpu_gmac_per_s" if threads == 1 else "gmac_per_s"
    base = (per.get("fp32") or {}).get(key)
    out: dict[str, float | None] = {}
    for fmt, got in per.items():
        if fmt == "fp32":
            continue
        val = got.get(key)
        out[fmt] = val / base if val and base else None
    return out


def empty_peak(threads: int) -> dict[str, Any]:
    """The `peak` of a run that did not probe: every figure null."""
    return {
        "fp32_gmac_per_s": None,
        "int8_gmac_per_s": None,
        "formats": {},
        "ceiling": {},
        "shape": list(PEAK_SHAPE),
        "threads": threads,
        "runs": 0,
        "seconds": 0.0,
    }
