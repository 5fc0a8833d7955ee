"""How exactly the firmware follows onnxruntime and the score's formula, on real images.

    python firmware_demo/scripts/score_check.py --export-dir E --data D \
        [--kind excess|elbo] [--program fw/edgevae_score] [--n 10000] [--json out.json]

On the data's test images (uint8 pixels, x = p / 255) it reports:
- mu, logvar: the numpy integer encoder against onnxruntime's static encoder;
- logits at z = mu: the integer decoder against onnxruntime's static decoder run on
  onnxruntime's mu (values that differ, of all);
- grey levels: the integer decoder against round(255 * x_mean) from onnxruntime on 3,000 prior
  draws and the first 3,000 images' mu (the firmware decoder's figure);
- the score of --kind (default: what `edgevae firmware --score` generates for the export) in
  fixed point against the float64 formula of that kind on the same integer outputs, and
  against runtime.metrics (-log_px_given_z + KL, minus runtime.score.floor_nats for excess)
  on onnxruntime's outputs: max |difference|, nats;
- with --program (a host edgevae_score built from `edgevae firmware --score` for that kind),
  its scores against edgevae.firmware.score.score_images: how many differ in any bit;
- the mean score of the test images and of their negatives (255 - p).
Needs the base install (numpy, onnxruntime) only.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgevae.data.core import load_images
from edgevae.firmware.codegen import find_firmware_decoder
from edgevae.firmware.encoder import encode_int
from edgevae.firmware.fixedpoint import dequantize_linear
from edgevae.firmware.intref import decode_int
from edgevae.firmware.score import (
    find_firmware_encoder,
    float64_score,
    load_score_model,
    score_parts,
)
from edgevae.fsio import write_json
from edgevae.runtime.metrics import kl_to_standard_normal, log_px_given_z
from edgevae.runtime.score import floor_nats
from edgevae.runtime.session import create_session


def _ort(export: Path, x: np.ndarray, prior: np.ndarray):
    enc = create_session(find_firmware_encoder(export))
    dec = create_session(find_firmware_decoder(export))
    mu, logvar = enc.run(["mu", "logvar"], {"x": x})
    logits = dec.run(["logits"], {"z": mu})[0]
    z = np.concatenate([prior, mu[: len(prior)]])
    grey = np.rint(dec.run(["x_mean"], {"z": z})[0].astype(np.float64) * 255).astype(np.int64)
    return mu, logvar, logits, z, grey


def check(
    export: Path, data: str | None, n: int, program: Path | None, kind: str | None = None
) -> dict:
    x, _ = load_images(data, split="test")
    x = x[:n]
    pixels = np.rint(x * 255).astype(np.uint8)
    if not np.array_equal(pixels.astype(np.float32) / np.float32(255), x):
        sys.exit("these images are not uint8 / 255: the firmware reads uint8 pixels")
    model = load_score_model(export, kind=kind)
    prior = np.random.default_rng(0).standard_normal((3000, model.encoder.latent_dim))
    mu, logvar, logits, z, grey = _ort(export, x, prior.astype(np.float32))
    parts = score_parts(model, pixels)
    int_mu, int_logvar = encode_int(model.encoder, pixels)
    int_logits = dequantize_linear(parts.logits_q, model.decoder.logit_q)
    exact = float64_score(model, pixels)
    ref = -log_px_given_z(x.astype(np.float64), logits, model.likelihood, model.gauss_logvar)
    ref += kl_to_standard_normal(mu, logvar)
    if model.kind == "excess":
        ref -= floor_nats(model, x)
    report = {
        "images": len(x),
        "kind": model.kind,
        "mu_logvar_differing": int((int_mu != mu).sum() + (int_logvar != logvar).sum()),
        "mu_logvar_values": int(mu.size + logvar.size),
        "logits_differing": int((int_logits != logits).sum()),
        "logits_values": int(logits.size),
        "grey_levels_differing": int((decode_int(model.decoder, z) != grey).sum()),
        "grey_levels": int(grey.size),
        "score_vs_float64_max_nats": float(np.abs(parts.score - exact).max()),
        "score_vs_runtime_metrics_max_nats": float(np.abs(parts.score - ref).max()),
        "mean_score_nats": float(parts.score.mean()),
        "mean_score_negatives_nats": float(score_parts(model, 255 - pixels).score.mean()),
        "frac_bits": model.tables.frac_bits,
    }
    if program is not None:
        done = subprocess.run([program], input=pixels.tobytes(), capture_output=True, check=True)
        got = np.array(done.stdout.split(), np.float64).astype(np.float32)
        differ = got.view(np.uint32) != parts.score.view(np.uint32)
        report["program_scores_differing"] = int(differ.sum())
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export-dir", type=Path, default=Path("export"))
    parser.add_argument("--data", default=None, help="data path (default: the bundled digits)")
    parser.add_argument("--kind", choices=("excess", "elbo"), default=None, help="score kind")
    parser.add_argument("--n", type=int, default=10_000, help="test images (at most)")
    parser.add_argument("--program", type=Path, default=None, help="host edgevae_score")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report = check(args.export_dir, args.data, args.n, args.program, args.kind)
    for key, value in report.items():
        print(f"{key}: {value}")
    if args.json is not None:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
