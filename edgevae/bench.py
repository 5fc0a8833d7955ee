"""`edgevae bench`: int8 against float on this machine - speed, accuracy in nats, and size.

Rows: torch fp32 (when torch is importable and the run dir exists), ORT fp32 (the reference
every delta and speedup is taken against), ORT int8 (the recipe the export chose), ORT int8
static (the firmware decoder `decoder.int8.static.onnx` paired with the int8 encoder) and, with
`all_recipes`, every other recipe re-created from the fp32 models with the export's calibration.

Accuracy uses `metrics.evaluate` on the test split of the run's data with the same seed for
every row (common random numbers), so NLL deltas are much more precise than the NLLs
themselves. Latency runs all rows interleaved in rounds (`timing.interleaved`), so drift on a
busy machine hits them alike; the spread (IQR/median) says how far absolute times can be
trusted. Each round is also timed in CPU time (the calling thread's clock with one thread),
which does not grow while the process waits for a CPU: on an oversubscribed machine the
CPU-time speedups stay right when wall-time ones do not, and `--min-speedup` uses them (with
one thread). Achieved GMAC/s is compared with a peak measured by onnxruntime itself on a
1024x1024x1024 fp32 MatMul and a u8 x s8 MatMulInteger of the same size.

JSON (`edgevae bench --json PATH`, `BenchReport.to_dict()`), all times in microseconds,
all accuracies in nats per image, pixel differences on the 0-255 scale:

- `schema` (int), `created` (UTC ISO 8601), `wall_seconds`
- `export_dir`, `run_dir` (null when no torch row), `data` (the spec used; null = the run's own)
- `split` ("test"), `n_images`, `k` (importance samples), `seed`, `diff_z` (z count for diffs)
- `threads` (onnxruntime intra-op threads and torch threads while timing), `batch_sizes`
- `cpu`: `arch`, `model`, `kind`, `flags`, `logical_cpus`, `loadavg` (1/5/15 min at start)
- `versions`: edgevae, python, and those installed of numpy, onnxruntime, onnx, torch, pillow,
  matplotlib (from package metadata: nothing is imported)
- `peak`: `fp32_gmac_per_s`, `int8_gmac_per_s` (median run; null if a probe failed, then
  `fp32_error`/`int8_error` say why), `fp32_best_gmac_per_s`, `int8_best_gmac_per_s` (fastest
  run), `fp32_cpu_gmac_per_s`, `int8_cpu_gmac_per_s` (median, CPU time), `shape` [M, K, N],
  `threads`, `runs`
- `macs_per_image`: `encoder`, `decoder` (sum of fan_in*fan_out over the layers)
- `budget_nats`, `budget_from` ("--max-delta-nats", "manifest" or "default")
- `timing`: `rounds`, `round_ms`, `warmup`, `interleaved` (true), `clock` (wall clock used),
  `cpu_clock` ("thread_time_ns" with one thread, else "process_time_ns")
- `noise`: `max_spread`, `median_spread` (over every timed row and batch size),
  `max_wall_over_cpu` (largest wall p50 / CPU p50: > 1 when the process was descheduled),
  `verdict` (starts with "quiet", "moderate" or "noisy")
- `reference`: the name of the row deltas and speedups are taken against ("ORT fp32")
- `notes`: list of strings (rows skipped and why, what the static row pairs)
- `rows`: list, each with
  - `name`, `runtime` ("torch" | "onnxruntime"), `precision` (fp32 | int8 | int4 | fp16),
    `recipe` (null for fp32), `encoder_file`, `decoder_file`, `note`
  - `status`: "passed" | "exported but failed validation" | "failed"; `reason` (null if passed)
  - `size_kb` (encoder + decoder file bytes / 1024; null for torch)
  - `neg_elbo`, `nll_iw`, `nll_delta` (vs the reference, same noise), `kl`, `active_units`,
    `recon_mse` (mean over pixels and images of (x - decode(mu))^2, intensities in [0, 1]),
    `recon_nats` (-log p(x | z = mu): the BCE reconstruction term for Bernoulli data)
  - `decoder_max_abs_diff_px`, `decoder_mean_abs_diff_px`: |x_mean - reference x_mean| * 255
    on `diff_z` seeded z ~ N(0, I)
  - `accuracy_seconds`: wall time of this row's accuracy evaluation
  - `decoder`, `encoder`: {batch size (string): latency} with `p50_us`, `p90_us`, `p99_us`,
    `spread` (IQR/median), `n_samples`, `images_per_s`, `gmac_per_s`, `pct_of_peak` (vs the peak
    of the row's own precision; null for int4/fp16), `speedup_vs_fp32` (reference p50 / p50),
    `cpu_p50_us` (median over rounds of the mean CPU time per call), `cpu_speedup_vs_fp32`,
    `cpu_pct_of_peak` (the same from CPU time, see `timing.cpu_clock`; immune to the process
    being descheduled)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import manifest as manifest_mod
from . import metrics, timing
from .errors import EdgeVAEError, UsageError
from .pipeline import run_dataset
from .recipes import RECIPES, cpu_info
from .runtime import open_session

SCHEMA = 1
REFERENCE = "ORT fp32"
DEFAULT_BATCH_SIZES = (1, 16, 256)
DEFAULT_K = 1000
DEFAULT_LIMIT = 100
DEFAULT_BUDGET = 0.1
DIFF_Z = 1000
PEAK_SHAPE = (1024, 1024, 1024)
PASSED, FAILED_VALIDATION, FAILED = "passed", "exported but failed validation", "failed"
# Decode at most this many rows at once during evaluation: bounded memory for any k.
EVAL_DECODE_ROWS = 8192

Progress = Callable[[str, int, int], None]


# --------------------------------------------------------------------------- report types


@dataclass
class Latency:
    p50_us: float
    p90_us: float
    p99_us: float
    spread: float
    n_samples: int
    images_per_s: float
    gmac_per_s: float
    pct_of_peak: float | None = None
    speedup_vs_fp32: float | None = None
    cpu_p50_us: float = math.nan
    cpu_speedup_vs_fp32: float | None = None
    cpu_pct_of_peak: float | None = None


@dataclass
class Row:
    name: str
    runtime: str
    precision: str
    recipe: str | None = None
    encoder_file: str | None = None
    decoder_file: str | None = None
    note: str = ""
    status: str = PASSED
    reason: str | None = None
    size_kb: float | None = None
    neg_elbo: float | None = None
    nll_iw: float | None = None
    nll_delta: float | None = None
    kl: float | None = None
    active_units: int | None = None
    recon_mse: float | None = None
    recon_nats: float | None = None
    decoder_max_abs_diff_px: float | None = None
    decoder_mean_abs_diff_px: float | None = None
    accuracy_seconds: float | None = None
    decoder: dict[str, Latency] = field(default_factory=dict)
    encoder: dict[str, Latency] = field(default_factory=dict)

    def fail(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason


@dataclass
class BenchReport:
    export_dir: str
    run_dir: str | None
    data: str | None
    n_images: int
    k: int
    seed: int
    threads: int
    batch_sizes: list[int]
    cpu: dict[str, Any]
    versions: dict[str, str]
    peak: dict[str, Any]
    macs_per_image: dict[str, int]
    budget_nats: float
    budget_from: str
    timing: dict[str, Any]
    noise: dict[str, Any]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    split: str = "test"
    diff_z: int = DIFF_Z
    reference: str = REFERENCE
    created: str = ""
    wall_seconds: float = 0.0
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return _finite(asdict(self))

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.name == name), None)

    @property
    def int8(self) -> Row | None:
        return next((r for r in self.rows if r.name.startswith("ORT int8 (")), None)


def _finite(obj: Any) -> Any:
    """NaN/Inf become null, so the JSON is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- peak probe


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _pb(num: int, value: int | str | bytes) -> bytes:
    """One protobuf field: varint for ints, length-delimited for strings and messages."""
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(num << 3 | 2) + _varint(len(data)) + data


_ONNX_FLOAT, _ONNX_UINT8, _ONNX_INT8, _ONNX_INT32 = 1, 2, 3, 6


def _value_info(name: str, elem: int, shape: tuple[int, ...]) -> bytes:
    dims = b"".join(_pb(1, _pb(1, d)) for d in shape)
    return _pb(1, name) + _pb(2, _pb(1, _pb(1, elem) + _pb(2, dims)))


def _matmul_model(op: str, a_elem: int, b: np.ndarray, out_elem: int, m: int) -> bytes:
    """A one-node ONNX model `y = op(a, B)` with B a constant, written without the onnx package
    (the device path has only numpy and onnxruntime)."""
    k, n = b.shape
    b_elem = {np.dtype(np.float32): _ONNX_FLOAT, np.dtype(np.int8): _ONNX_INT8}[b.dtype]
    init = b"".join(_pb(1, d) for d in b.shape) + _pb(2, b_elem) + _pb(8, "b")
    init += _pb(9, np.ascontiguousarray(b).tobytes())
    node = _pb(1, "a") + _pb(1, "b") + _pb(2, "y") + _pb(3, "probe") + _pb(4, op)
    graph = (
        _pb(1, node)
        + _pb(2, "peak_probe")
        + _pb(5, init)
        + _pb(11, _value_info("a", a_elem, (m, k)))
        + _pb(12, _value_info("y", out_elem, (m, n)))
    )
    opset = _pb(1, "") + _pb(2, 13)
    return _pb(1, 8) + _pb(2, "edgevae-bench") + _pb(7, graph) + _pb(8, opset)


def peak_probe(
    threads: int = 1, shape: tuple[int, int, int] = PEAK_SHAPE, runs: int = 5
) -> dict[str, Any]:
    """This machine's practical peak GMAC/s in onnxruntime: fp32 MatMul and u8 x s8
    MatMulInteger of [M, K] x [K, N] with constant weights, median of `runs` interleaved runs
    (`*_best_gmac_per_s`: the fastest run). On a loaded machine a row can exceed 100%."""
    import onnxruntime as ort

    from .runtime import session_options

    m, k, n = shape
    rng = np.random.default_rng(0)
    feeds = {
        "fp32": (
            _matmul_model(
                "MatMul", _ONNX_FLOAT, rng.standard_normal((k, n), np.float32), _ONNX_FLOAT, m
            ),
            rng.standard_normal((m, k), np.float32),
        ),
        "int8": (
            _matmul_model(
                "MatMulInteger",
                _ONNX_UINT8,
                rng.integers(-64, 64, (k, n), dtype=np.int8),
                _ONNX_INT32,
                m,
            ),
            rng.integers(0, 256, (m, k), dtype=np.uint8),
        ),
    }
    calls: dict[str, Callable[[], object]] = {}
    out: dict[str, Any] = {"shape": [m, k, n], "threads": threads, "runs": runs}
    for prec, (model, a) in feeds.items():
        out[f"{prec}_gmac_per_s"] = None
        try:
            sess = ort.InferenceSession(
                model, sess_options=session_options(threads), providers=["CPUExecutionProvider"]
            )
            sess.run(None, {"a": a})
        except Exception as exc:  # onnxruntime raises its own types
            out[f"{prec}_error"] = str(exc).splitlines()[0][:200] if str(exc) else repr(exc)
            continue
        calls[prec] = lambda s=sess, a=a: s.run(None, {"a": a})
    if calls:
        clock = _cpu_clock(threads)
        cpu: dict[str, list[int]] = {p: [] for p in calls}
        wrapped = {p: _with_cpu_clock(fn, cpu[p], clock, 1, 1) for p, fn in calls.items()}
        res = timing.interleaved(wrapped, rounds=runs, reps=1, warmup=1)
        gmac = m * k * n / 1e9
        for prec, t in res.items():
            out[f"{prec}_gmac_per_s"] = gmac / (t.p50_us * 1e-6)
            out[f"{prec}_best_gmac_per_s"] = gmac / (min(t.samples_ns) * 1e-9)
            out[f"{prec}_cpu_gmac_per_s"] = gmac / (timing.Timing(cpu[prec]).p50_us * 1e-6)
    return out


# --------------------------------------------------------------------------- model pieces


def layer_macs(man: dict[str, Any]) -> dict[str, int]:
    """Multiply-accumulates per image from the manifest's model config."""
    model = man.get("model") or {}
    d = int(model.get("input_dim") or np.prod(man["image_shape"]))
    hidden = [int(h) for h in model.get("hidden", [])]
    latent = int(man["latent_dim"])
    dec = [latent, *reversed(hidden), d]
    enc = [d, *hidden]
    return {
        "encoder": sum(a * b for a, b in zip(enc[:-1], enc[1:], strict=True))
        + (hidden[-1] if hidden else d) * 2 * latent,
        "decoder": sum(a * b for a, b in zip(dec[:-1], dec[1:], strict=True)),
    }


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


@dataclass
class _Contender:
    """A row plus what it computes: accuracy callables and timing closures."""

    row: Row
    encode: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None
    decode: Callable[[np.ndarray], np.ndarray] | None = None  # z -> logits
    timer: Callable[[str, np.ndarray], Callable[[], object]] | None = None  # (role, input)
    encoder_key: str = ""
    paths: tuple[Path, Path] | None = None  # ORT rows: (encoder, decoder) files


def _ort_contender(row: Row, enc_path: Path, dec_path: Path, threads: int) -> _Contender:
    enc = open_session(enc_path, "encoder", threads)
    dec = open_session(dec_path, "decoder", threads)
    row.size_kb = (enc_path.stat().st_size + dec_path.stat().st_size) / 1024

    def encode(x):
        mu, lv = enc.run(["mu", "logvar"], {"x": np.ascontiguousarray(x, np.float32)})
        return mu, lv

    def decode(z):
        return dec.run(["logits"], {"z": np.ascontiguousarray(z, np.float32)})[0]

    def timer(role, data):
        sess, feed = (enc, {"x": data}) if role == "encoder" else (dec, {"z": data})
        return lambda: sess.run(None, feed)

    return _Contender(row, encode, decode, timer, str(enc_path), (enc_path, dec_path))


def _torch_contender(row: Row, run_dir: Path) -> _Contender:
    import torch

    from .evaluate import load_model, torch_callables

    model, _ = load_model(run_dir)
    encode, decode, _gauss = torch_callables(model)

    def timer(role, data):
        t = torch.from_numpy(np.ascontiguousarray(data))

        if role == "encoder":

            def run():
                with torch.inference_mode():
                    return model.encoder(t)
        else:

            def run():
                with torch.inference_mode():
                    return torch.sigmoid(model.decoder(t))

        return run

    return _Contender(row, encode, decode, timer, encoder_key="torch")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


# --------------------------------------------------------------------------- data


# --------------------------------------------------------------------------- the bench


def _budget(man: dict[str, Any], max_delta_nats: float | None) -> tuple[float, str]:
    if max_delta_nats is not None:
        return float(max_delta_nats), "--max-delta-nats"
    q = man.get("quantization") or {}
    if isinstance(q.get("budget_nats"), int | float):
        return float(q["budget_nats"]), "manifest"
    return DEFAULT_BUDGET, "default"


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _resolve_run_dir(man: dict[str, Any], run_dir: Path | None, export_dir: Path) -> Path | None:
    if run_dir is not None:
        return run_dir
    stored = man.get("run_dir")
    if not stored:
        return None
    p = Path(stored)
    if p.is_dir() or p.is_absolute():
        return p
    # A relative path was relative to where `edgevae train` ran; try next to the export too.
    alt = export_dir.parent / p
    return alt if alt.is_dir() else p


def _recipe_contenders(
    export_dir: Path,
    work: Path,
    man: dict[str, Any],
    train_images: np.ndarray,
    names: list[str],
    threads: int,
    progress: Progress,
) -> Iterator[_Contender]:
    """Every recipe in `names` re-created from the fp32 models with the export's calibration."""
    from . import quantize
    from .runtime import DECODER_IO, ENCODER_IO

    cal = (man.get("quantization") or {}).get("calibration") or {}
    n_cal = int(cal.get("encoder_images", 5000))
    seed = int(cal.get("seed", 0))
    x_cal, z_cal = quantize.calibration_sets(export_dir, train_images, n_cal, seed)
    for i, name in enumerate(names):
        progress(f"quantizing {name}", i, len(names))
        recipe = RECIPES[name]
        precision = "int8" if recipe.method in ("static", "dynamic") else recipe.method
        row = Row(
            f"recipe {name}",
            "onnxruntime",
            precision,
            recipe=name,
            encoder_file=f"encoder.{name}.onnx",
            decoder_file=f"decoder.{name}.onnx",
            note=recipe.description,
        )
        try:
            for role, data, io_ in (("encoder", x_cal, ENCODER_IO), ("decoder", z_cal, DECODER_IO)):
                quantize.apply_recipe(
                    recipe,
                    export_dir / f"{role}.fp32.onnx",
                    work / f"{role}.{name}.onnx",
                    data,
                    io_[0][0],
                )
            yield _ort_contender(
                row, work / f"encoder.{name}.onnx", work / f"decoder.{name}.onnx", threads
            )
        except Exception as exc:  # any recipe may fail on some CPU/onnxruntime: report it
            row.fail(FAILED, _reason(exc))
            yield _Contender(row)
    progress("quantizing", len(names), len(names))


def _accuracy(
    c: _Contender,
    x: np.ndarray,
    z_diff: np.ndarray,
    likelihood: str,
    gauss: np.ndarray | None,
    k: int,
    seed: int,
    progress: Callable[[int], None] | None,
) -> np.ndarray:
    """Fill the row's accuracy fields; returns its x_mean on z_diff (float64, [0, 1])."""
    t0 = time.perf_counter()
    b = metrics.evaluate(
        x,
        c.encode,
        c.decode,
        likelihood,
        k=k,
        seed=seed,
        gauss_logvar=gauss,
        max_decode_rows=EVAL_DECODE_ROWS,
        progress=progress,
    )
    row = c.row
    row.neg_elbo, row.nll_iw, row.kl, row.active_units = b.neg_elbo, b.nll_iw, b.kl, b.active_units
    mu, _ = c.encode(x)
    logits = c.decode(mu.astype(np.float32))
    row.recon_mse = float(((x.astype(np.float64) - _sigmoid(logits)) ** 2).mean())
    lp = metrics.log_px_given_z(x.astype(np.float64), logits, likelihood, gauss)
    row.recon_nats = float(-lp.mean())
    mean = _sigmoid(c.decode(z_diff))
    row.accuracy_seconds = time.perf_counter() - t0
    return mean


def _accuracy_all(
    live: list[_Contender],
    x: np.ndarray,
    z_diff: np.ndarray,
    likelihood: str,
    gauss: np.ndarray | None,
    k: int,
    seed: int,
    workers: int,
    threads: int,
    progress: Progress,
) -> dict[str, np.ndarray]:
    """Accuracy of every live row, `workers` rows at a time; returns x_mean on z_diff per row.

    ORT rows get fresh one-thread sessions here (the timed sessions keep `threads`)."""
    from concurrent.futures import ThreadPoolExecutor

    lock = threading.Lock()
    done: dict[str, int] = {}
    total = len(live) * len(x)

    def one(c: _Contender) -> np.ndarray | None:
        def tick(n: int) -> None:
            with lock:
                done[c.row.name] = n
                progress("accuracy", sum(done.values()), total)

        try:
            eval_c = c
            if c.paths is not None and threads != 1:
                eval_c = _ort_contender(Row("eval", "onnxruntime", "-"), *c.paths, 1)
                eval_c.row = c.row
            return _accuracy(eval_c, x, z_diff, likelihood, gauss, k, seed, tick)
        except Exception as exc:  # a row that cannot be scored is reported, not fatal
            c.row.fail(FAILED, _reason(exc))
            return None
        finally:
            tick(len(x))

    progress("accuracy", 0, total)
    _set_torch_threads(1)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(live)))) as pool:
        results = list(pool.map(one, live))
    return {c.row.name: m for c, m in zip(live, results, strict=True) if m is not None}


def _latency(
    t: timing.Timing,
    cpu: timing.Timing,
    bs: int,
    macs: int,
    peak: float | None,
    cpu_peak: float | None,
) -> Latency:
    p50_s = t.p50_us * 1e-6
    gmacs = macs * bs / p50_s / 1e9 if p50_s > 0 else math.nan
    cpu_s = cpu.p50_us * 1e-6 if cpu.samples_ns else 0.0
    cpu_gmacs = macs * bs / cpu_s / 1e9 if cpu_s > 0 else math.nan
    return Latency(
        p50_us=t.p50_us,
        p90_us=t.p90_us,
        p99_us=t.p99_us,
        spread=t.spread,
        n_samples=len(t.samples_ns),
        images_per_s=bs / p50_s if p50_s > 0 else math.nan,
        gmac_per_s=gmacs,
        pct_of_peak=100.0 * gmacs / peak if peak else None,
        cpu_p50_us=cpu_s * 1e6 if cpu_s > 0 else math.nan,
        cpu_pct_of_peak=100.0 * cpu_gmacs / cpu_peak if cpu_peak and cpu_s > 0 else None,
    )


def _time_all(
    contenders: list[_Contender],
    batch_sizes: list[int],
    x: np.ndarray,
    latent_dim: int,
    macs: dict[str, int],
    peak: dict[str, Any],
    rounds: int,
    round_ms: float,
    warmup: int,
    progress: Progress,
    cpu_clock: Callable[[], int] = time.thread_time_ns,
) -> None:
    """Interleaved timing of every timed row, per role and batch size (wall and CPU time)."""
    ref = next(c for c in contenders if c.row.name == REFERENCE)
    rng = np.random.default_rng(12345)
    steps = [(role, bs) for bs in batch_sizes for role in ("decoder", "encoder")]
    for i, (role, bs) in enumerate(steps):
        progress(f"timing {role} @ batch {bs}", i, len(steps))
        if role == "decoder":
            data = rng.standard_normal((bs, latent_dim)).astype(np.float32)
        else:
            data = np.ascontiguousarray(np.resize(x, (bs, x.shape[1])), dtype=np.float32)
        fns: dict[str, Callable[[], object]] = {}
        owners: dict[str, list[_Contender]] = {}
        for c in contenders:
            # Rows sharing one encoder file (int8 and int8 static) share its timing.
            key = c.row.name if role == "decoder" else c.encoder_key
            owners.setdefault(key, []).append(c)
            if key not in fns:
                fns[key] = c.timer(role, data)
        # Repetitions per round so that a round of one contender takes about round_ms.
        probe = fns[REFERENCE if role == "decoder" else ref.encoder_key]
        probe()
        t0 = time.perf_counter_ns()
        probe()
        per_call = max(time.perf_counter_ns() - t0, 1000) / 1e9
        reps = int(min(500, max(2, round(round_ms / 1e3 / per_call))))
        budget = 4 * rounds * len(fns) * round_ms / 1e3
        cpu: dict[str, list[int]] = {key: [] for key in fns}
        wrapped = {
            key: _with_cpu_clock(fn, cpu[key], cpu_clock, warmup, reps) for key, fn in fns.items()
        }
        res = timing.interleaved(wrapped, rounds=rounds, reps=reps, warmup=warmup, budget_s=budget)
        for key, t in res.items():
            cpu_t = timing.Timing(cpu[key])  # one sample per round: its mean CPU ns per call
            for c in owners[key]:
                prec = c.row.precision
                ok = prec in ("fp32", "int8")
                pk = peak.get(f"{prec}_gmac_per_s") if ok else None
                cpu_pk = peak.get(f"{prec}_cpu_gmac_per_s") if ok else None
                getattr(c.row, role)[str(bs)] = _latency(t, cpu_t, bs, macs[role], pk, cpu_pk)
    progress("timing", len(steps), len(steps))
    for c in contenders:
        for role in ("decoder", "encoder"):
            ref_lat = getattr(ref.row, role)
            for bs, lat in getattr(c.row, role).items():
                if bs in ref_lat and lat.p50_us > 0:
                    lat.speedup_vs_fp32 = ref_lat[bs].p50_us / lat.p50_us
                if bs in ref_lat and lat.cpu_p50_us > 0:
                    lat.cpu_speedup_vs_fp32 = ref_lat[bs].cpu_p50_us / lat.cpu_p50_us


def _cpu_clock(threads: int) -> Callable[[], int]:
    """One thread: all work runs on the calling thread, whose CPU clock is exact. More: the
    process clock (which also counts onnxruntime's spinning workers, so it over-counts)."""
    return time.thread_time_ns if threads == 1 else time.process_time_ns


def _with_cpu_clock(
    fn: Callable[[], object],
    out: list[int],
    clock: Callable[[], int],
    warmup: int,
    reps: int,
) -> Callable[[], object]:
    """fn, also recording CPU time per block of `reps` calls after `warmup` calls: the blocks
    are `timing.interleaved`'s rounds, and `out` gets each round's mean CPU ns per call.

    CPU time does not grow while the process waits for a CPU, so it stays meaningful on an
    oversubscribed machine. The clock is read twice per round, not per call: reading it can
    cost microseconds (a system call), which would inflate short wall-time samples."""
    calls = [0]
    start = [0]

    def run() -> object:
        j = calls[0] - warmup
        calls[0] += 1
        if j >= 0 and j % reps == 0:
            start[0] = clock()
        result = fn()
        if j >= 0 and j % reps == reps - 1:
            out.append((clock() - start[0]) // reps)
        return result

    return run


def noise_verdict(rows: list[Row]) -> dict[str, Any]:
    """How far the times can be trusted: spread (IQR/median) and wall/CPU time of the p50s."""
    lats = [lat for r in rows for lat in (*r.decoder.values(), *r.encoder.values())]
    if not lats:
        return {
            "max_spread": None,
            "median_spread": None,
            "max_wall_over_cpu": None,
            "verdict": "not timed",
        }
    spreads = [lat.spread for lat in lats]
    worst, med = float(max(spreads)), float(np.median(spreads))
    ratios = [lat.p50_us / lat.cpu_p50_us for lat in lats if lat.cpu_p50_us > 0]
    wall_cpu = float(max(ratios)) if ratios else None
    if wall_cpu is not None and wall_cpu > 1.25:
        verdict = (
            f"noisy: the CPU is oversubscribed (a wall p50 is {wall_cpu:.1f}x its CPU time), so "
            "trust the CPU-time speedups (cpu ×), not absolute times or wall ratios"
        )
    elif med <= 0.05 and worst <= 0.15:
        verdict = "quiet: absolute times and ratios are both trustworthy"
    elif med <= 0.20:
        verdict = f"moderate: ratios reliable, absolute times within about ±{50 * med:.0f}%"
    else:
        verdict = "noisy: ratios still comparable (interleaved), absolute times not"
    return {
        "max_spread": worst,
        "median_spread": med,
        "max_wall_over_cpu": wall_cpu,
        "verdict": verdict,
    }


def run_bench(
    export_dir: Path = Path("export"),
    *,
    data: str | None = None,
    batch_sizes: list[int] | tuple[int, ...] = DEFAULT_BATCH_SIZES,
    threads: int = 1,
    k: int = DEFAULT_K,
    limit: int | None = DEFAULT_LIMIT,
    seed: int = 0,
    all_recipes: bool = False,
    max_delta_nats: float | None = None,
    run_dir: Path | None = None,
    torch_row: bool = True,
    rounds: int = 15,
    round_ms: float = 15.0,
    warmup: int = 3,
    peak: bool = True,
    progress: Progress | None = None,
) -> BenchReport:
    """Benchmark the export dir's models against each other; see the module doc for fields."""
    progress = progress or (lambda stage, done, total: None)
    start = time.perf_counter()
    export_dir = Path(export_dir)
    batch_sizes = list(dict.fromkeys(int(b) for b in batch_sizes))  # order kept, no repeats
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise UsageError(f"--batch-sizes must be integers >= 1, got {batch_sizes}")
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    if k < 1:
        raise UsageError(f"--k must be >= 1, got {k}")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be >= 1, got {limit}")
    if rounds < 1 or round_ms <= 0:
        raise UsageError("rounds and round_ms must be positive")
    man = manifest_mod.read(export_dir)
    for name in ("encoder.fp32.onnx", "decoder.fp32.onnx"):
        if not (export_dir / name).exists():
            raise EdgeVAEError(f"{export_dir}: {name} missing; run `edgevae export`")
    budget, budget_from = _budget(man, max_delta_nats)
    latent = int(man["latent_dim"])
    likelihood = man.get("likelihood", "bernoulli")
    gauss = np.asarray(man["gaussian_logvar"]) if man.get("gaussian_logvar") else None
    macs = layer_macs(man)
    cpu = cpu_info()
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    loadavg = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    notes: list[str] = []

    progress("loading data", 0, 1)
    ds = run_dataset(man, data)
    x = np.ascontiguousarray(ds.test[:limit] if limit else ds.test, dtype=np.float32)
    progress("loading data", 1, 1)

    contenders: list[_Contender] = []
    eval_workers = max(1, os.cpu_count() or 1)
    resolved_run = None
    # torch fp32: only when torch is here and the run dir exists.
    if torch_row:
        resolved_run = _resolve_run_dir(man, run_dir, export_dir)
        if not _torch_available():
            notes.append("torch fp32 row skipped: torch is not installed")
            resolved_run = None
        elif resolved_run is None or not resolved_run.is_dir():
            notes.append(
                f"torch fp32 row skipped: run dir {resolved_run or '(none in manifest)'} not "
                "found (pass --run-dir)"
            )
            resolved_run = None
        else:
            row = Row("torch fp32", "torch", "fp32", note=f"run dir {resolved_run}")
            try:
                contenders.append(_torch_contender(row, resolved_run))
            except Exception as exc:
                row.fail(FAILED, _reason(exc))
                contenders.append(_Contender(row))

    ref_row = Row(
        REFERENCE,
        "onnxruntime",
        "fp32",
        encoder_file="encoder.fp32.onnx",
        decoder_file="decoder.fp32.onnx",
        note="reference for deltas and speedups",
    )
    contenders.append(
        _ort_contender(
            ref_row, export_dir / "encoder.fp32.onnx", export_dir / "decoder.fp32.onnx", threads
        )
    )
    chosen = (man.get("quantization") or {}).get("chosen")
    int8_row = Row(
        f"ORT int8 ({chosen or 'unknown recipe'})",
        "onnxruntime",
        "int8",
        recipe=chosen,
        encoder_file="encoder.int8.onnx",
        decoder_file="decoder.int8.onnx",
        note="the recipe the export chose",
    )
    static_row = Row(
        "ORT int8 static",
        "onnxruntime",
        "int8",
        recipe=man.get("firmware_decoder") and "firmware",
        encoder_file="encoder.int8.onnx",
        decoder_file=man.get("firmware_decoder") or "decoder.int8.static.onnx",
        note="firmware decoder (integer-only) with the int8 encoder",
    )
    for row in (int8_row, static_row):
        try:
            contenders.append(
                _ort_contender(
                    row, export_dir / row.encoder_file, export_dir / row.decoder_file, threads
                )
            )
        except Exception as exc:
            row.fail(FAILED, _reason(exc))
            contenders.append(_Contender(row))
    notes.append(
        "ORT int8 static pairs decoder.int8.static.onnx (what the C firmware runs) with "
        "encoder.int8.onnx; its encoder timing is the int8 row's"
    )

    with contextlib.ExitStack() as stack:
        if all_recipes:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgevae-bench-")))
            names = [n for n in RECIPES if n not in (chosen, "firmware")]
            contenders += list(
                _recipe_contenders(export_dir, work, man, ds.train, names, threads, progress)
            )
            notes.append(
                f"recipes re-created from the fp32 models with the export's calibration; "
                f"{chosen} is the ORT int8 row and firmware the ORT int8 static row"
            )

        # Accuracy is not timed: rows run concurrently (numpy and onnxruntime release the GIL).
        z_diff = np.random.default_rng(seed).standard_normal((DIFF_Z, latent)).astype(np.float32)
        live = [c for c in contenders if c.row.status != FAILED]
        means = _accuracy_all(
            live, x, z_diff, likelihood, gauss, k, seed, eval_workers, threads, progress
        )
        if ref_row.status == FAILED:
            raise EdgeVAEError(f"the ORT fp32 reference failed: {ref_row.reason}")
        base, ref_mean = ref_row.nll_iw, means[REFERENCE]
        for c in live:
            r = c.row
            if r.status == FAILED:
                continue
            d = np.abs(means[r.name] - ref_mean) * 255.0
            r.decoder_max_abs_diff_px, r.decoder_mean_abs_diff_px = float(d.max()), float(d.mean())
            r.nll_delta = r.nll_iw - base if r.nll_iw is not None and base is not None else None
            vals = (r.neg_elbo, r.nll_iw, r.recon_mse)
            if not all(v is not None and math.isfinite(v) for v in vals):
                r.fail(FAILED_VALIDATION, "non-finite accuracy")
            elif r.name != REFERENCE and r.nll_delta is not None and r.nll_delta > budget:
                r.fail(
                    FAILED_VALIDATION,
                    f"NLL delta {r.nll_delta:+.3f} nats > budget {budget:g} ({budget_from})",
                )

        # Speed: one peak probe, then every live row interleaved.
        _set_torch_threads(threads)
        peak_info: dict[str, Any] = {
            "fp32_gmac_per_s": None,
            "int8_gmac_per_s": None,
            "shape": list(PEAK_SHAPE),
            "threads": threads,
            "runs": 0,
        }
        if peak:
            progress("peak probe", 0, 1)
            peak_info = peak_probe(threads)
            progress("peak probe", 1, 1)
        timed = [c for c in contenders if c.row.status != FAILED and c.timer is not None]
        _time_all(
            timed,
            batch_sizes,
            x,
            latent,
            macs,
            peak_info,
            rounds,
            round_ms,
            warmup,
            progress,
            _cpu_clock(threads),
        )

    rows = [c.row for c in contenders]
    return BenchReport(
        export_dir=str(export_dir),
        run_dir=str(resolved_run) if resolved_run else None,
        data=data,
        n_images=len(x),
        k=k,
        seed=seed,
        threads=threads,
        batch_sizes=batch_sizes,
        cpu={**cpu.to_dict(), "logical_cpus": os.cpu_count(), "loadavg": loadavg},
        versions=manifest_mod.versions(),
        peak=peak_info,
        macs_per_image=macs,
        budget_nats=budget,
        budget_from=budget_from,
        timing={
            "rounds": rounds,
            "round_ms": round_ms,
            "warmup": warmup,
            "interleaved": True,
            "clock": "time.perf_counter_ns",
            "cpu_clock": "thread_time_ns" if threads == 1 else "process_time_ns",
        },
        noise=noise_verdict([r for r in rows if r.decoder]),
        rows=rows,
        notes=notes,
        created=created,
        wall_seconds=time.perf_counter() - start,
    )


def _set_torch_threads(n: int) -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


# --------------------------------------------------------------------------- gates, markdown


def gate_speedup(report: BenchReport, lat: Latency | None) -> tuple[float | None, str]:
    """The speedup --min-speedup checks: from CPU time with one thread (exact, and immune to a
    busy machine), from wall time otherwise (the process clock counts spinning workers)."""
    if lat is None:
        return None, ""
    if report.threads == 1 and lat.cpu_speedup_vs_fp32 is not None:
        return lat.cpu_speedup_vs_fp32, "CPU-time"
    return lat.speedup_vs_fp32, "wall-time"


def check_gates(
    report: BenchReport, min_speedup: float | None, max_delta_nats: float | None
) -> list[str]:
    """One message per failed gate (empty: all passed or no gates)."""
    out: list[str] = []
    int8 = report.int8
    if min_speedup is not None:
        bs = str(max(report.batch_sizes))
        lat = int8.decoder.get(bs) if int8 is not None else None
        speedup, clock = gate_speedup(report, lat)
        if speedup is None:
            out.append(f"--min-speedup: the int8 decoder was not timed at batch {bs}")
        elif speedup < min_speedup:
            out.append(
                f"int8 decoder speedup {speedup:.2f}x ({clock} p50) vs ORT fp32 at batch {bs} "
                f"is below --min-speedup {min_speedup:g}"
            )
    if max_delta_nats is not None:
        if int8 is None or int8.nll_delta is None:
            out.append("--max-delta-nats: the int8 NLL delta could not be measured")
        elif not int8.nll_delta <= max_delta_nats:
            out.append(
                f"int8 NLL delta {int8.nll_delta:+.3f} nats exceeds --max-delta-nats "
                f"{max_delta_nats:g}"
            )
    return out


def _fmt(v: float | None, spec: str, dash: str = "-") -> str:
    return dash if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _us(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def latency_rows(report: BenchReport) -> list[list[str]]:
    """Latency table cells: one line per (row, batch size, decoder/encoder)."""
    out = []
    for r in report.rows:
        for bs in report.batch_sizes:
            for part, lats in (("dec", r.decoder), ("enc", r.encoder)):
                d = lats.get(str(bs))
                if d is None:
                    continue
                out.append(
                    [
                        r.name,
                        part,
                        str(bs),
                        _us(d.p50_us),
                        _us(d.p90_us),
                        _us(d.p99_us),
                        _fmt(d.spread, ".2f"),
                        _fmt(d.images_per_s, ",.0f"),
                        _fmt(d.gmac_per_s, ".1f"),
                        _fmt(d.pct_of_peak, ".0f"),
                        _fmt(d.speedup_vs_fp32, ".2f"),
                        _fmt(d.cpu_speedup_vs_fp32, ".2f"),
                    ]
                )
    return out


LATENCY_HEADERS = [
    "row",
    "part",
    "batch",
    "p50 µs",
    "p90 µs",
    "p99 µs",
    "spread",
    "img/s",
    "GMAC/s",
    "% peak",
    "× fp32",
    "cpu ×",
]
ACCURACY_HEADERS = [
    "row",
    "status",
    "KB",
    "-ELBO",
    "NLL",
    "ΔNLL",
    "MSE",
    "recon",
    "max|Δ|px",
    "mean|Δ|px",
]


def accuracy_rows(report: BenchReport, with_reason: bool = True) -> list[list[str]]:
    """Accuracy table cells, one line per row; the status carries its reason if asked."""
    out = []
    for r in report.rows:
        status = r.status if r.reason is None or not with_reason else f"{r.status}: {r.reason}"
        out.append(
            [
                r.name,
                status,
                _fmt(r.size_kb, ",.0f"),
                _fmt(r.neg_elbo, ".2f"),
                _fmt(r.nll_iw, ".2f"),
                _fmt(r.nll_delta, "+.3f"),
                _fmt(r.recon_mse, ".4f"),
                _fmt(r.recon_nats, ".2f"),
                _fmt(r.decoder_max_abs_diff_px, ".2f"),
                _fmt(r.decoder_mean_abs_diff_px, ".3f"),
            ]
        )
    return out


def summary_lines(report: BenchReport) -> list[str]:
    cpu = report.cpu
    pk = report.peak
    v = report.versions
    return [
        f"CPU: {cpu.get('model')} [{cpu.get('kind')}; {', '.join(cpu.get('flags', []))}], "
        f"{report.threads} thread(s), load average {_load(cpu.get('loadavg'))}",
        f"peak ({pk.get('shape', PEAK_SHAPE)} MatMul, onnxruntime): fp32 "
        f"{_fmt(pk.get('fp32_gmac_per_s'), '.1f')} GMAC/s, int8 (u8 x s8) "
        f"{_fmt(pk.get('int8_gmac_per_s'), '.1f')} GMAC/s; MACs/image: decoder "
        f"{report.macs_per_image['decoder']:,}, encoder {report.macs_per_image['encoder']:,}",
        f"accuracy: {report.n_images} {report.split} images, k={report.k}, seed {report.seed} "
        f"(same noise for every row); budget {report.budget_nats:g} nats ({report.budget_from})",
        f"timing noise: median spread {_fmt(report.noise.get('median_spread'), '.2f')}, worst "
        f"{_fmt(report.noise.get('max_spread'), '.2f')} -> {report.noise.get('verdict')}",
        "versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
    ]


def _load(loadavg: list[float] | None) -> str:
    return "n/a" if not loadavg else "/".join(f"{x:.2f}" for x in loadavg)


def to_markdown(report: BenchReport) -> str:
    def table(headers: list[str], rows: list[list[str]]) -> str:
        esc = [[c.replace("|", "\\|") for c in r] for r in rows]
        lines = ["| " + " | ".join(h.replace("|", "\\|") for h in headers) + " |"]
        lines.append("| " + " | ".join("---" for _ in headers) + " |")
        lines += ["| " + " | ".join(r) + " |" for r in esc]
        return "\n".join(lines)

    parts = [
        f"# edgevae bench: {report.export_dir}",
        "",
        f"_{report.created}, {report.wall_seconds:.0f} s_",
        "",
        "## Accuracy (nats per image; pixel differences vs ORT fp32 on a 0-255 scale)",
        "",
        table(ACCURACY_HEADERS, accuracy_rows(report)),
        "",
        "## Latency per call (× fp32 = ORT fp32 p50 / p50; cpu × = the same in CPU time)",
        "",
        table(LATENCY_HEADERS, latency_rows(report)),
        "",
        *[f"- {line}" for line in summary_lines(report)],
        *[f"- note: {n}" for n in report.notes],
        "",
    ]
    return "\n".join(parts)
