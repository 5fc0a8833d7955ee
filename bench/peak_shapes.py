"""Which probe shape reaches onnxruntime's GEMM peak: GMAC/s per format and the int8 ceilings
for several [M, K, N], repeated (1 thread, CPU time). Justifies `bench.peak.PEAK_SHAPE`.

Usage: python bench/peak_shapes.py [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from edgevae.bench.peak import FORMATS, peak_probe
from edgevae.quant.recipes import cpu_info

SHAPES = [(1024, 1024, 1024), (256, 512, 512), (256, 400, 784), (256, 256, 256), (64, 256, 256)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    cpu = cpu_info()
    print(f"CPU {cpu.model} [{cpu.kind}; {', '.join(sorted(cpu.to_dict()['flags']))}]")
    out = {"cpu": cpu.to_dict(), "shapes": {}}
    formats = tuple(f for f in FORMATS if f != "fp32")
    for shape in SHAPES:
        runs = [peak_probe(1, shape, runs=15, formats=formats) for _ in range(a.repeats)]
        gmacs = {f: statistics.median(r["formats"][f]["cpu_gmac_per_s"] for r in runs)
                 for f in FORMATS}  # fmt: skip
        ceil = {f: statistics.median(r["ceiling"][f] for r in runs) for f in formats}
        secs = statistics.median(r["seconds"] for r in runs)
        key = "x".join(map(str, shape))
        out["shapes"][key] = {"gmac_per_s": gmacs, "ceiling": ceil, "seconds": secs}
        print(
            f"{key:>14}: " + "  ".join(f"{f} {v:.0f}" for f, v in gmacs.items())
            + " GMAC/s; ceiling " + "  ".join(f"{f} {v:.2f}" for f, v in ceil.items())
            + f"; probe {secs:.2f} s (median of {a.repeats})",
            flush=True,
        )  # fmt: skip
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
