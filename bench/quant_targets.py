"""Issue-14 targets for one export dir, measured in one run (1 thread, CPU time, interleaved).

- the int8 ceiling of this CPU: onnxruntime's int8 GEMM GMAC/s over its fp32 GMAC/s in the
  same run, for the GEMM format the chosen recipe runs (`edgevae.bench.peak`)
- decoder int8 vs fp32 speedup at batch 1 (goal >= 1.7x) and 256 (goal >= 85% of the ceiling)
- the int8 pair's NLL increase on the test split (goal <= 0.1 nats/image), and the firmware
  pair's (encoder.int8.static.onnx + decoder.int8.static.onnx)
- where the int8 decoder's time goes at batch 256 (onnxruntime's profiler, per node)
- with --search: the wall time of `edgevae quantize` (the default auto search) on a copy
- as before: int8 bytes / fp32 bytes, decoder int8 vs `quantize_static` defaults at 256

Usage: python bench/quant_targets.py --export-dir export [--data ../shared/data/mnist]
       [--k 100] [--limit 10000] [--search] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgevae.bench.peak import peak_probe
from edgevae.bench.profile import profile_model
from edgevae.data.runs import load_run_data
from edgevae.quant.apply import apply_recipe, calibration_sets
from edgevae.quant.recipes import RECIPES, cpu_info, gemm_format
from edgevae.runtime import manifest, metrics, timing
from edgevae.runtime.session import open_session


def nll(enc, dec, x, likelihood, k):
    b = metrics.evaluate(
        x,
        lambda v: tuple(enc.run(["mu", "logvar"], {"x": v})),
        lambda z: dec.run(["logits"], {"z": z})[0],
        likelihood,
        k=k,
        seed=0,
    )
    return b.nll_iw


def accuracy(ed: Path, man: dict, test: np.ndarray, k: int, out: dict) -> None:
    s = {n: open_session(ed / f"{n}.onnx", n.split(".")[0]) for n in (
        "encoder.fp32", "decoder.fp32", "encoder.int8", "decoder.int8",
        "encoder.int8.static", "decoder.int8.static",
    )}  # fmt: skip
    lik = man["likelihood"]
    f32 = nll(s["encoder.fp32"], s["decoder.fp32"], test, lik, k)
    i8 = nll(s["encoder.int8"], s["decoder.int8"], test, lik, k)
    st = nll(s["encoder.int8.static"], s["decoder.int8.static"], test, lik, k)
    out.update(fp32_nll=f32, int8_nll=i8, nll_delta=i8 - f32, static_pair_nll_delta=st - f32)
    print(
        f"NLL (k={k}, {len(test)} test images): fp32 {f32:.3f}  int8 {i8:.3f} "
        f"(delta {i8 - f32:+.3f} nats; goal <= 0.1)  static pair delta {st - f32:+.3f}",
        flush=True,
    )


def speed(ed: Path, man: dict, train_x: np.ndarray, rounds: int, out: dict) -> None:
    """Decoder speedups (CPU time) against the chosen recipe's ceiling, and the baseline."""
    cpu = cpu_info()
    fmt = gemm_format(RECIPES[man["quantization"]["chosen"]], cpu)
    peak = peak_probe(1, runs=9)
    ceiling = peak["ceiling"].get(fmt)
    out.update(cpu=cpu.to_dict(), format=fmt, ceiling=ceiling, peak=peak)
    print(
        f"CPU {cpu.model} [{cpu.kind}]; recipe {man['quantization']['chosen']} runs {fmt}; "
        f"int8 ceiling {ceiling:.2f}x (" + ", ".join(
            f"{f} {v['cpu_gmac_per_s']:.0f}" for f, v in peak["formats"].items()
        ) + " GMAC/s)",
        flush=True,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        _, z_cal = calibration_sets(ed, train_x, 5000, 0)
        default = Path(tmp) / "decoder.default.onnx"
        apply_recipe(RECIPES["static-default"], ed / "decoder.fp32.onnx", default, z_cal, "z")
        s = {n: open_session(ed / f"{n}.onnx", "decoder") for n in ("decoder.fp32", "decoder.int8")}
        s["decoder.default"] = open_session(default, "decoder")
        rng = np.random.default_rng(0)
        for bs in (1, 256):
            feed = {"z": rng.standard_normal((bs, int(man["latent_dim"]))).astype(np.float32)}
            names = ["decoder.fp32", "decoder.int8"] + (["decoder.default"] if bs == 256 else [])
            t = timing.interleaved(
                {n: (lambda n=n, f=feed: s[n].run(None, f)) for n in names},
                rounds=rounds,
                reps=50 if bs == 1 else 5,
                cpu_clock=time.thread_time_ns,
            )
            cpu_us = {n: t[n].cpu.p50_us for n in names}
            x = cpu_us["decoder.fp32"] / cpu_us["decoder.int8"]
            out[f"cpu_p50_us_b{bs}"] = cpu_us
            out[f"speedup_b{bs}"] = x
            out[f"share_of_ceiling_b{bs}"] = x / ceiling if ceiling else None
            goal = ">= 1.7x" if bs == 1 else f">= 85% of the ceiling = {0.85 * ceiling:.2f}x"
            print(
                f"batch {bs}: " + "  ".join(f"{n} {v:.1f} us" for n, v in cpu_us.items())
                + f"  -> int8 speedup {x:.2f}x = {100 * x / ceiling:.0f}% of the ceiling "
                f"(goal {goal})",
                flush=True,
            )  # fmt: skip
            if bs == 256:
                out["vs_default_static_b256"] = cpu_us["decoder.default"] / cpu_us["decoder.int8"]


def breakdown(ed: Path, out: dict) -> None:
    """Where the decoder's time goes at batch 256, fp32 and int8 (onnxruntime's profiler)."""
    out["profile_b256"] = {}
    for name in ("decoder.fp32", "decoder.int8"):
        p = profile_model(ed / f"{name}.onnx", "decoder", 256)
        out["profile_b256"][name] = p.to_dict()
        parts = "  ".join(f"{n.op} {n.us:.0f}" for n in p.nodes)
        print(f"{name} @256 (profiler, us): {parts}  other {p.other_us:.0f}  = {p.total_us:.0f}")


def search_time(ed: Path, man: dict, out: dict) -> None:
    """Wall time of the default `edgevae quantize` on a copy of the export."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "export"
        shutil.copytree(ed, copy)
        cmd = [sys.executable, "-m", "edgevae", "quantize", "--export-dir", str(copy)]
        if man.get("run_dir"):
            cmd += ["--run-dir", man["run_dir"]]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        q = manifest.read(copy)["quantization"]
    out.update(search_wall_s=wall, search_in_process_s=q.get("seconds"), search_chosen=q["chosen"])
    print(
        f"edgevae quantize (auto) on a copy: {wall:.1f} s wall ({q.get('seconds', 0):.1f} s "
        f"in the search), chose {q['chosen']}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export-dir", type=Path, default=Path("export"))
    ap.add_argument("--data", default=None)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--search", action="store_true", help="Also time `edgevae quantize`.")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    ed = a.export_dir
    man = manifest.read(ed)
    from edgevae.data.core import load_dataset

    train = man.get("train") or {}
    ds = load_dataset(a.data if a.data else train.get("data"), seed=int(train.get("seed", 0)))
    test = ds.test[: a.limit]
    out: dict = {"export_dir": str(ed), "recipe": man["quantization"]["chosen"], "k": a.k}
    out["test_images"] = len(test)
    accuracy(ed, man, test, a.k, out)
    speed(ed, man, load_run_data(man["train"], man["image_shape"], a.data).train, a.rounds, out)
    breakdown(ed, out)
    size = lambda p: (ed / p).stat().st_size  # noqa: E731
    out["bytes_ratio"] = (size("encoder.int8.onnx") + size("decoder.int8.onnx")) / (
        size("encoder.fp32.onnx") + size("decoder.fp32.onnx")
    )
    print(
        f"vs quantize_static defaults at 256: {out['vs_default_static_b256']:.2f}x; "
        f"int8/fp32 bytes {100 * out['bytes_ratio']:.1f}%"
    )
    if a.search:
        search_time(ed, man, out)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
