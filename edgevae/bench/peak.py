"""This machine's practical peak GMAC/s in onnxruntime, the yardstick for `edgevae bench`'s
`pct_of_peak`: a large fp32 MatMul and a u8 x s8 MatMulInteger with constant weights.

The probe models are built with `onnxio.proto`'s message classes (protobuf's runtime and onnx's
schema), not the onnx package, which the device install does not have.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..onnxio import proto
from ..runtime import timing

PEAK_SHAPE = (1024, 1024, 1024)  # [M, K] x [K, N]: big enough to reach the kernels' peak
# TensorProto.DataType values.
_ONNX_FLOAT, _ONNX_UINT8, _ONNX_INT8, _ONNX_INT32 = 1, 2, 3, 6
_ONNX_ELEM = {np.dtype(np.float32): _ONNX_FLOAT, np.dtype(np.int8): _ONNX_INT8}


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


def _probe_models(m: int, k: int, n: int) -> dict[str, tuple[bytes, np.ndarray]]:
    """(model, input a) per precision; weights in [-64, 64) so u8 x s8 sums cannot saturate."""
    rng = np.random.default_rng(0)
    fp32_b = rng.standard_normal((k, n), np.float32)
    fp32_a = rng.standard_normal((m, k), np.float32)
    int8_b = rng.integers(-64, 64, (k, n), dtype=np.int8)
    int8_a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    return {
        "fp32": (matmul_model("MatMul", _ONNX_FLOAT, fp32_b, _ONNX_FLOAT, m), fp32_a),
        "int8": (matmul_model("MatMulInteger", _ONNX_UINT8, int8_b, _ONNX_INT32, m), int8_a),
    }


def peak_probe(
    threads: int = 1, shape: tuple[int, int, int] = PEAK_SHAPE, runs: int = 5
) -> dict[str, Any]:
    """This machine's practical peak GMAC/s in onnxruntime: fp32 MatMul and u8 x s8
    MatMulInteger of [M, K] x [K, N] with constant weights, median of `runs` interleaved runs
    (`*_best_gmac_per_s`: the fastest run). On a loaded machine a row can exceed 100%."""
    from ..runtime.session import create_session

    m, k, n = shape
    calls: dict[str, Callable[[], object]] = {}
    out: dict[str, Any] = {"shape": [m, k, n], "threads": threads, "runs": runs}
    for prec, (model, a) in _probe_models(m, k, n).items():
        out[f"{prec}_gmac_per_s"] = None
        try:
            # Built here, from bytes: not an encoder or decoder to vet.
            sess = create_session(model, threads)
            sess.run(None, {"a": a})
        except Exception as exc:  # onnxruntime raises its own types
            out[f"{prec}_error"] = str(exc).splitlines()[0][:200] if str(exc) else repr(exc)
            continue
        calls[prec] = lambda s=sess, a=a: s.run(None, {"a": a})
    if calls:
        res = timing.interleaved(
            calls, rounds=runs, reps=1, warmup=1, cpu_clock=timing.cpu_clock_for(threads)
        )
        gmac = m * k * n / 1e9
        for prec, t in res.items():
            out[f"{prec}_gmac_per_s"] = gmac / (t.p50_us * 1e-6)
            out[f"{prec}_best_gmac_per_s"] = gmac / (min(t.samples_ns) * 1e-9)
            out[f"{prec}_cpu_gmac_per_s"] = gmac / (t.cpu.p50_us * 1e-6)
    return out
