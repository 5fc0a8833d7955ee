"""Issue-3 targets for one export dir, measured in one run (1 thread, interleaved medians).

- decoder int8 vs fp32 speedup at batch 1 and 256 (goal >= 1.8x and >= 2.8x)
- the int8 pair's NLL increase on the test split (goal <= 0.1 nats/image)
- decoder int8 vs `quantize_static` with default arguments at batch 256 (goal >= 3x)
- int8 bytes / fp32 bytes (goal <= 27%)
- `edgevae sample --n 16` wall time on the torch-free path (goal <= 0.6 s), median of 7 runs

Usage: python bench/quant_targets.py --export-dir export [--data ../shared/data/mnist]
       [--k 100] [--limit 10000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgevae.data.runs import load_run_data
from edgevae.quant.apply import apply_recipe, calibration_sets
from edgevae.quant.recipes import RECIPES
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export-dir", type=Path, default=Path("export"))
    ap.add_argument("--data", default=None)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    ed = a.export_dir
    man = manifest.read(ed)
    from edgevae.data.core import load_dataset

    train = man.get("train") or {}
    ds = load_dataset(a.data if a.data else train.get("data"), seed=int(train.get("seed", 0)))
    test = ds.test[: a.limit]
    out: dict = {
        "export_dir": str(ed),
        "recipe": man["quantization"]["chosen"],
        "test_images": len(test),
        "k": a.k,
    }

    s = {
        n: open_session(ed / f"{n}.onnx", n.split(".")[0])
        for n in ("encoder.fp32", "decoder.fp32", "encoder.int8", "decoder.int8")
    }
    f32 = nll(s["encoder.fp32"], s["decoder.fp32"], test, man["likelihood"], a.k)
    i8 = nll(s["encoder.int8"], s["decoder.int8"], test, man["likelihood"], a.k)
    out.update(fp32_nll=f32, int8_nll=i8, nll_delta=i8 - f32)
    print(
        f"NLL (k={a.k}, {len(test)} test images): fp32 {f32:.3f}  int8 {i8:.3f}  "
        f"delta {i8 - f32:+.3f} nats",
        flush=True,
    )

    with tempfile.TemporaryDirectory() as tmp:
        train_x = load_run_data(man["train"], man["image_shape"], a.data).train
        _, z_cal = calibration_sets(ed, train_x, 5000, 0)
        default = Path(tmp) / "decoder.default.onnx"
        apply_recipe(RECIPES["static-default"], ed / "decoder.fp32.onnx", default, z_cal, "z")
        s["decoder.default"] = open_session(default, "decoder")
        L = int(man["latent_dim"])
        rng = np.random.default_rng(0)
        for bs in (1, 256):
            feed = {"z": rng.standard_normal((bs, L)).astype(np.float32)}
            names = ["decoder.fp32", "decoder.int8"] + (["decoder.default"] if bs == 256 else [])
            t = timing.interleaved(
                {n: (lambda n=n, f=feed: s[n].run(None, f)) for n in names},
                rounds=a.rounds,
                reps=50 if bs == 1 else 5,
            )
            out[f"p50_us_b{bs}"] = {n: t[n].p50_us for n in names}
            out[f"spread_b{bs}"] = {n: t[n].spread for n in names}
            out[f"speedup_b{bs}"] = t["decoder.fp32"].p50_us / t["decoder.int8"].p50_us
            print(
                f"batch {bs}: "
                + "  ".join(f"{n} {t[n].p50_us:.1f} us" for n in names)
                + f"  -> int8 speedup {out[f'speedup_b{bs}']:.2f}x",
                flush=True,
            )
            if bs == 256:
                out["vs_default_static_b256"] = (
                    t["decoder.default"].p50_us / t["decoder.int8"].p50_us
                )
    size = lambda p: (ed / p).stat().st_size  # noqa: E731
    out["bytes_ratio"] = (size("encoder.int8.onnx") + size("decoder.int8.onnx")) / (
        size("encoder.fp32.onnx") + size("decoder.fp32.onnx")
    )
    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(7):
            t0 = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "edgevae",
                    "sample",
                    "--export-dir",
                    str(ed),
                    "--n",
                    "16",
                    "--out",
                    f"{tmp}/g.png",
                ],
                check=True,
                capture_output=True,
            )
            walls.append(time.perf_counter() - t0)
    out["sample_wall_s"] = statistics.median(walls)
    print(
        f"vs quantize_static defaults at 256: {out['vs_default_static_b256']:.2f}x; "
        f"int8/fp32 bytes {100 * out['bytes_ratio']:.1f}%; sample --n 16 wall "
        f"{out['sample_wall_s']:.2f} s (median of 7)"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
