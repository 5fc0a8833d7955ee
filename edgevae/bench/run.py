"""`edgevae bench`: int8 against float on this machine - speed, accuracy in nats, and size.

Rows: torch fp32 (when torch is importable and the run dir exists), ORT fp32 (the reference
every delta and speedup is taken against), ORT int8 (the recipe the export chose), ORT int8
static (the firmware pair `encoder.int8.static.onnx` + `decoder.int8.static.onnx`; exports
made before the static encoder pair the firmware decoder with the int8 encoder) and, with
`all_recipes`, every other recipe re-created from the fp32 models with the export's calibration.

Accuracy uses `metrics.evaluate` on the export's held-out test images (`heldout.npy`; with
`data`, that data's test split) with the same seed for every row (common random numbers), so NLL
deltas are much more precise than the NLLs themselves; a conditional model's are on -log p(x|y)
with the images' labels (its timing feeds one-hot labels too). Latency runs all rows interleaved
in rounds (`timing.interleaved`), so drift on a busy machine hits them alike; the spread
(IQR/median) says how far absolute times can be trusted. Each round is also timed in CPU time
(the calling thread's clock with one thread), which does not grow while the process waits for a
CPU: on an oversubscribed machine the CPU-time speedups stay right when wall-time ones do not,
and the min_speedup gate uses them (with one thread). Achieved GMAC/s is compared with the peak
onnxruntime itself reaches on this CPU for the row's GEMM format (`peak`: fp32 MatMul and
MatMulInteger per int8 format), and each int8 row's speedup with its format's ceiling (int8
GMAC/s over fp32's): the share of what this CPU's int8 kernels can give.

This module runs the bench in its phases - options, inputs, rows, accuracy, latency, report -
and the parts live in `rows` (what each row runs), `accuracy`, `latency`, `peak` (the peak
probe), `report` (the report's types, tables, Markdown, the min_speedup/max_delta_nats gates
and `write_outputs`) and `plot` (the PNG).

JSON (`edgevae bench --json PATH`, `BenchReport.to_dict()`), all times in microseconds,
all accuracies in nats per image, pixel differences on the 0-255 scale:

- `schema` (int), `created` (UTC ISO 8601), `wall_seconds`
- `export_dir`, `run_dir` (null when no torch row), `data` (the spec used; null = the run's own)
- `split` ("test"), `n_images`, `k` (importance samples), `seed`, `diff_z` (z count for diffs)
- `threads` (onnxruntime intra-op threads and torch threads while timing), `batch_sizes`
- `cpu`: `arch`, `model`, `kind`, `flags`, `logical_cpus`, `loadavg` (1/5/15 min at start)
- `versions`: edgevae, python, and those installed of numpy, onnxruntime, onnx, torch, pillow,
  matplotlib (from package metadata: nothing is imported)
- `peak` (`bench.peak`): `formats` ({format: `gmac_per_s` (median round, wall),
  `best_gmac_per_s` (fastest round), `cpu_gmac_per_s` (median, CPU time), `calls_per_round`,
  `error` when the probe failed}; formats fp32, u8s8, u8s8-7bit, u8u8, s8s8), `ceiling`
  ({int8 format: its GMAC/s over fp32's in the same run, from CPU time with one thread, wall
  time otherwise}), `fp32_gmac_per_s`, `int8_gmac_per_s` (median run, int8 = u8s8-7bit;
  null if a probe failed, then `fp32_error`/`int8_error` say why), `fp32_best_gmac_per_s`,
  `int8_best_gmac_per_s`, `fp32_cpu_gmac_per_s`, `int8_cpu_gmac_per_s`, `shape` [M, K, N],
  `threads`, `runs`, `seconds` (the probe's wall time)
- `macs_per_image`: `encoder`, `decoder` (sum of fan_in*fan_out over the layers)
- `budget_nats`, `budget_from` ("max_delta_nats": given to the bench, "manifest" or "default")
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
  - `format`: the int8 GEMM format the recipe runs on this CPU (`recipes.gemm_format`; null
    for fp32, int4, fp16), `ceiling`: that format's entry of `peak.ceiling`
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
    `cpu_pct_of_peak` (the same from CPU time, see `timing.cpu_clock_for`; immune to the process
    being descheduled), `share_of_ceiling` (`speedup_vs_fp32` / the row's `ceiling`: how much
    of what the CPU's int8 GEMM can give the row reaches; null without a ceiling),
    `cpu_share_of_ceiling` (the same from `cpu_speedup_vs_fp32`)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.runs import load_run_data
from ..errors import EdgeVAEError, UsageError
from ..quant.recipes import RECIPES, cpu_info, gemm_format
from ..runtime import heldout, timing
from ..runtime import manifest as manifest_mod
from ..runtime.labels import cycle_one_hot, match_one_hot
from ..threads import set_torch_threads
from .accuracy import Labels, accuracy_all, compare_to_reference
from .latency import layer_macs, noise_verdict, time_all
from .peak import empty_peak, peak_probe
from .report import DIFF_Z, FAILED, REFERENCE, BenchReport
from .rows import Contender, Progress, export_contenders, recipe_contenders, torch_contender

DEFAULT_BATCH_SIZES = (1, 16, 256)
DEFAULT_K = 1000
DEFAULT_LIMIT = 100
DEFAULT_BUDGET = 0.1


@dataclass(frozen=True)
class _Options:
    """run_bench's measuring options, checked (`_options`)."""

    batch_sizes: list[int]
    threads: int
    k: int
    limit: int | None
    seed: int
    rounds: int
    round_ms: float
    warmup: int


@dataclass
class _Inputs:
    """What every row is measured on: the export's manifest and the run's test images."""

    export_dir: Path
    man: dict[str, Any]
    x: np.ndarray  # test images [N, D], float32
    data: str | None  # the data spec; None: the export's held-out images, else the run's
    budget: float
    budget_from: str
    y: np.ndarray | None = None  # a conditional model's one-hot labels of x [N, C]

    def train(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Training images (and a conditional model's one-hot labels), to calibrate
        re-created recipes: the run's data is needed here."""
        ds = load_run_data(self.man["train"], self.man["image_shape"], self.data)
        if not self.classes:
            return ds.train, None
        return ds.train, match_one_hot(self.classes, ds.classes, ds.labels("train"))

    @property
    def latent(self) -> int:
        return int(self.man["latent_dim"])

    @property
    def classes(self) -> list[str]:
        return list(self.man.get("classes") or [])


def _options(
    batch_sizes: list[int] | tuple[int, ...],
    threads: int,
    k: int,
    limit: int | None,
    seed: int,
    rounds: int,
    round_ms: float,
    warmup: int,
) -> _Options:
    """The options with the batch sizes in order and without repeats; a UsageError naming the
    argument for any bad one."""
    sizes = list(dict.fromkeys(int(b) for b in batch_sizes))
    if not sizes or any(b < 1 for b in sizes):
        raise UsageError(f"must be integers >= 1, got {sizes}", param="batch_sizes")
    for name, value in (("threads", threads), ("k", k), ("rounds", rounds)):
        if value < 1:
            raise UsageError(f"must be >= 1, got {value}", param=name)
    if limit is not None and limit < 1:
        raise UsageError(f"must be >= 1 (None: the whole split), got {limit}", param="limit")
    if not round_ms > 0:
        raise UsageError(f"must be > 0, got {round_ms}", param="round_ms")
    if warmup < 0:
        raise UsageError(f"must be >= 0, got {warmup}", param="warmup")
    return _Options(sizes, threads, k, limit, seed, rounds, round_ms, warmup)


def _budget(man: dict[str, Any], max_delta_nats: float | None) -> tuple[float, str]:
    if max_delta_nats is not None:
        return float(max_delta_nats), "max_delta_nats"
    q = man.get("quantization") or {}
    if isinstance(q.get("budget_nats"), int | float):
        return float(q["budget_nats"]), "manifest"
    return DEFAULT_BUDGET, "default"


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
    """Benchmark the export dir's models against each other; see the module doc for fields.

    `limit` test images (None: the whole test split) are scored with `k` importance samples;
    `max_delta_nats` is the budget rows are held to (default: the manifest's). `progress` is
    called as (stage, done, total)."""
    progress = progress or (lambda stage, done, total: None)
    start = time.perf_counter()
    opts = _options(batch_sizes, threads, k, limit, seed, rounds, round_ms, warmup)
    machine = _machine()
    inputs = _inputs(Path(export_dir), data, opts.limit, max_delta_nats, progress)
    notes: list[str] = []
    contenders, resolved_run = _rows(inputs, run_dir, torch_row, opts.threads, notes)
    # The recipes' model files must outlive the timing, hence the stack.
    with contextlib.ExitStack() as stack:
        if all_recipes:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgevae-bench-")))
            contenders += _recipe_rows(inputs, work, opts.threads, notes, progress)
        _accuracy(contenders, inputs, opts, progress)
        peak_info, clock = _latency(contenders, inputs, opts, peak, progress)
    rows = [c.row for c in contenders]
    return BenchReport(
        export_dir=str(inputs.export_dir),
        run_dir=str(resolved_run) if resolved_run else None,
        data=data,
        n_images=len(inputs.x),
        k=opts.k,
        seed=opts.seed,
        threads=opts.threads,
        batch_sizes=opts.batch_sizes,
        cpu=machine["cpu"],
        versions=manifest_mod.versions(),
        peak=peak_info,
        macs_per_image=layer_macs(inputs.man),
        budget_nats=inputs.budget,
        budget_from=inputs.budget_from,
        timing=_timing_info(opts, clock),
        noise=noise_verdict([r for r in rows if r.decoder]),
        rows=rows,
        notes=notes,
        created=machine["created"],
        wall_seconds=time.perf_counter() - start,
    )


def _machine() -> dict[str, Any]:
    """The CPU (model, flags, logical CPUs, load average) and the time, at the start."""
    loadavg = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    cpu = {**cpu_info().to_dict(), "logical_cpus": os.cpu_count(), "loadavg": loadavg}
    return {"cpu": cpu, "created": manifest_mod.timestamp()}


def _inputs(
    export_dir: Path,
    data: str | None,
    limit: int | None,
    max_delta_nats: float | None,
    progress: Progress,
) -> _Inputs:
    """The manifest (with both fp32 models present), the budget and the images."""
    man = manifest_mod.read(export_dir)
    for name in ("encoder.fp32.onnx", "decoder.fp32.onnx"):
        if not (export_dir / name).exists():
            raise EdgeVAEError(f"{export_dir}: {name} missing; run `edgevae export`")
    budget, budget_from = _budget(man, max_delta_nats)
    progress("loading data", 0, 1)
    classes = man.get("classes") or []
    if data is None and man.get("heldout"):
        dim = int(man["image_shape"][0]) * int(man["image_shape"][1])
        entry = man["heldout"]
        test = heldout.read(export_dir, entry, dim)
        found = (entry.get("classes"), entry.get("labels"))
    else:
        ds = load_run_data(man["train"], man["image_shape"], data)
        test, found = ds.test, (ds.classes, ds.labels("test"))
    x = np.ascontiguousarray(test[:limit] if limit else test, dtype=np.float32)
    y = None
    if classes:  # a conditional model: the images' labels, in its classes
        labels = None if found[1] is None else np.asarray(found[1])[: len(x)]
        y = match_one_hot(classes, found[0], labels)
    progress("loading data", 1, 1)
    return _Inputs(export_dir, man, x, data, budget, budget_from, y)


def _rows(
    inputs: _Inputs, run_dir: Path | None, torch_row: bool, threads: int, notes: list[str]
) -> tuple[list[Contender], Path | None]:
    """torch fp32 (when asked and possible), ORT fp32, ORT int8, ORT int8 static; and the run
    dir the torch row uses. Why a row is skipped goes to `notes`."""
    contenders: list[Contender] = []
    resolved_run = None
    if torch_row:
        torch_c, resolved_run, skipped = torch_contender(inputs.man, run_dir, inputs.export_dir)
        contenders += [torch_c] if torch_c is not None else []
        notes += [skipped] if skipped else []
    contenders += export_contenders(inputs.export_dir, inputs.man, threads)
    static = next((c.row for c in contenders if c.row.name == "ORT int8 static"), None)
    if static is not None:
        notes.append(
            f"ORT int8 static pairs {static.decoder_file} (what the C firmware runs) with "
            f"{static.encoder_file}"
        )
    return contenders, resolved_run


def _recipe_rows(
    inputs: _Inputs, work: Path, threads: int, notes: list[str], progress: Progress
) -> list[Contender]:
    """Every recipe but the two the export rows already show, re-created under `work`."""
    chosen = (inputs.man.get("quantization") or {}).get("chosen")
    names = [n for n in RECIPES if n not in (chosen, "firmware")]
    train, train_y = inputs.train()
    rows = list(
        recipe_contenders(
            inputs.export_dir, work, inputs.man, train, names, threads, progress, train_y
        )
    )
    notes.append(
        f"recipes re-created from the fp32 models with the export's calibration; "
        f"{chosen} is the ORT int8 row and firmware the ORT int8 static row"
    )
    return rows


def _accuracy(
    contenders: list[Contender], inputs: _Inputs, opts: _Options, progress: Progress
) -> None:
    """Score every live row (same noise for all) and compare it with the ORT fp32 reference;
    an EdgeVAEError when the reference itself fails."""
    man = inputs.man
    gauss = np.asarray(man["gaussian_logvar"]) if man.get("gaussian_logvar") else None
    rng = np.random.default_rng(opts.seed)
    z_diff = rng.standard_normal((DIFF_Z, inputs.latent)).astype(np.float32)
    labels = Labels(inputs.y, cycle_one_hot(DIFF_Z, len(inputs.classes)))
    live = [c for c in contenders if c.row.status != FAILED]
    workers = max(1, os.cpu_count() or 1)
    likelihood = man.get("likelihood", "bernoulli")
    means = accuracy_all(
        live, inputs.x, z_diff, likelihood, gauss, opts.k, opts.seed, workers, opts.threads,
        progress, labels,
    )  # fmt: skip
    ref_row = next(c.row for c in contenders if c.row.name == REFERENCE)
    if ref_row.status == FAILED:
        raise EdgeVAEError(f"the ORT fp32 reference failed: {ref_row.reason}")
    compare_to_reference([c.row for c in live], means, ref_row, inputs.budget, inputs.budget_from)


def _latency(
    contenders: list[Contender], inputs: _Inputs, opts: _Options, peak: bool, progress: Progress
) -> tuple[dict[str, Any], Callable[[], int]]:
    """One peak probe (if asked), then every live row timed interleaved; returns the peak
    figures and the CPU clock used."""
    set_torch_threads(opts.threads)
    peak_info = empty_peak(opts.threads)
    if peak:
        progress("peak probe", 0, 1)
        peak_info = peak_probe(opts.threads)
        progress("peak probe", 1, 1)
    cpu = cpu_info()
    for c in contenders:
        recipe = RECIPES.get(c.row.recipe or "")
        c.row.format = gemm_format(recipe, cpu) if recipe is not None else None
        c.row.ceiling = (peak_info.get("ceiling") or {}).get(c.row.format or "")
    clock = timing.cpu_clock_for(opts.threads)
    timed = [c for c in contenders if c.row.status != FAILED and c.timer is not None]
    time_all(
        timed, opts.batch_sizes, inputs.x, inputs.latent, layer_macs(inputs.man), peak_info,
        opts.rounds, opts.round_ms, opts.warmup, progress, clock, len(inputs.classes),
    )  # fmt: skip
    return peak_info, clock


def _timing_info(opts: _Options, clock: Callable[[], int]) -> dict[str, Any]:
    return {
        "rounds": opts.rounds,
        "round_ms": opts.round_ms,
        "warmup": opts.warmup,
        "interleaved": True,
        "clock": "time.perf_counter_ns",
        "cpu_clock": clock.__name__,  # thread_time_ns with one thread, else process_time_ns
    }
