"""What the 4-bit firmware decoder costs in nats, against the int8 firmware decoder.

    python firmware_demo/scripts/int4_nll.py --baseline E0 --export E1 [--export E2 ...] \
        --data D [--n 10000] [--k 64] [--json out.json]

E0 is the export of the trained model (its int8 firmware pair is the reference); each E is an
export whose decoder.int4.static.onnx is measured (E0 itself for 4-bit rounding without
fine-tuning, a run fine-tuned with `edgevae train --resume --qat-bits 4` for QAT, a run
trained as long without QAT as a control). For each export, on the data's first n test
images, the IWAE NLL (k importance samples, the same noise for every pair, so the per-image
differences have small standard errors) of:
- fp32: encoder.fp32.onnx + decoder.fp32.onnx;
- int8 firmware: encoder.int8.static.onnx + decoder.int8.static.onnx;
- int8 encoder + 4-bit decoder: encoder.int8.static.onnx + decoder.int4.static.onnx
  (onnxruntime runs both exactly as the C kernel does);
each as a difference to the baseline's int8 firmware pair (nats per image, +- standard error).
Needs the base install (numpy, onnxruntime) only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edgevae.data.core import load_images
from edgevae.fsio import write_json
from edgevae.quant.paired import PairedNLL, summarize
from edgevae.runtime.session import create_session

PAIRS = {
    "fp32": ("encoder.fp32.onnx", "decoder.fp32.onnx"),
    "int8 firmware": ("encoder.int8.static.onnx", "decoder.int8.static.onnx"),
    "int8 encoder + 4-bit decoder": ("encoder.int8.static.onnx", "decoder.int4.static.onnx"),
}


def _sessions(export: Path, pair: tuple[str, str]):
    return tuple(create_session(export / name, 1) for name in pair)


def measure(baseline: Path, exports: list[Path], data: str | None, n: int, k: int) -> dict:
    x, _ = load_images(data, split="test")
    x = x[:n]
    man = json.loads((baseline / "manifest.json").read_text())
    gauss = man.get("gaussian_logvar")
    ref_pair = _sessions(baseline, PAIRS["int8 firmware"])
    paired = PairedNLL(
        x, *ref_pair, man.get("likelihood", "bernoulli"),
        None if gauss is None else np.asarray(gauss, np.float64), k=k,
    )  # fmt: skip
    ref = paired.base(n)
    out = {"baseline": str(baseline), "images": len(x), "k": k, "reference_nll": ref.mean()}
    rows = []
    for export in exports:
        train = json.loads((export / "manifest.json").read_text()).get("train", {})
        for label, pair in PAIRS.items():
            nll = paired.per_image(*_sessions(export, pair), n)
            d = summarize(nll - ref)
            rows.append(
                {
                    "export": str(export),
                    "epochs": train.get("epochs"),
                    "qat_bits": train.get("qat_bits", 0),
                    "pair": label,
                    "nll": float(nll.mean()),
                    "vs_baseline_int8_firmware": d.mean,
                    "se": d.se,
                }
            )
            row = rows[-1]
            print(
                f"{export.name:>24} epochs {row['epochs']!s:>3} qat {row['qat_bits']}"
                f"  {label:<30} NLL {nll.mean():8.3f}  vs baseline int8 firmware "
                f"{d.mean:+.3f} +- {d.se:.3f}",
                flush=True,
            )
    out["rows"] = rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", type=Path, required=True)
    ap.add_argument("--export", type=Path, action="append", required=True)
    ap.add_argument("--data", default=None)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    result = measure(args.baseline, args.export, args.data, args.n, args.k)
    print(
        f"baseline int8 firmware NLL {result['reference_nll']:.3f} nats ({result['images']} images)"
    )
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
