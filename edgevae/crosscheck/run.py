"""Cross-platform check: do the exported ONNX models give the same numbers on another CPU?

One side (`run`) feeds fixed, seeded inputs through every `*.onnx` model of an export dir with
onnxruntime (1 thread, graph optimization ALL) and saves the inputs, the outputs and a
description of the platform to an `.npz` (no pickle) plus a JSON summary. The other side
(`compare`) checks a candidate run against a reference run:

- static int8 models (QDQ / QOperator, fixed scales): bit-exact, every output bit equal;
- dynamic int8 models (DynamicQuantizeLinear + MatMulInteger): the max abs diff is reported and
  does not fail the check, because the integer GEMM kernels differ between CPUs
  (e.g. u8 x s8 saturates on AVX2 without VNNI and does not on ARM);
- fp32 models: max abs diff <= 1e-6;
- the PNG written by `edgevae sample` (when the CLI exists): identical bytes, otherwise the
  largest pixel difference is reported.

Only numpy and onnxruntime are imported (Pillow lazily, to decode differing PNGs), so the same
module runs on a Raspberry Pi or under qemu-user. Used as

    python -m edgevae.crosscheck run --export-dir export --out results.npz [--label NAME]
    python -m edgevae.crosscheck compare REF.npz CAND.npz [CAND2.npz ...] [--json report.json]

The last line `compare` prints is the summary (targets, max differences, PASS/FAIL); its exit
status is 0 on PASS, 1 on FAIL, 2 on a usage or input error. This module is the run side and
the CLI; `crosscheck_models` reads what each model is, `crosscheck_compare` holds the results
file format and the comparison.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .compare import (
    DEFAULT_TOLERANCES,
    DYNAMIC,
    FORMAT,
    FP32,
    KIND_ORDER,
    CrosscheckError,
    Results,
    compare,
    load_results,
    render_report,
    results_summary,
    save_results,
    summary_line,
)
from .compare import FP16 as FP16
from .compare import INT4 as INT4

# The rest of the comparison side, re-exported: arm/run_check.py and the tests use this module
# as the tool's one entry point.
from .compare import PNG as PNG
from .compare import STATIC as STATIC
from .compare import Check as Check
from .compare import Report as Report
from .compare import compare_png as compare_png
from .models import describe_models, model_dims, open_session
from .models import model_kind as model_kind
from .models import onnx_graph_info as onnx_graph_info
from .models import onnx_op_types as onnx_op_types

SAMPLE_ARGS = ("--n", "16", "--seed", "0", "--precision", "int8")


# --------------------------------------------------------------------------- inputs


def _levels_to_float(levels: np.ndarray) -> np.ndarray:
    """8-bit levels -> float32 k/255 (one correctly rounded division: same bits on every CPU)."""
    return levels.astype(np.float32) / np.float32(255.0)


def make_inputs(
    seed: int = 0,
    *,
    input_dim: int = 784,
    latent_dim: int = 20,
    image_shape: tuple[int, int] | None = None,
    n_random: int = 24,
) -> dict[str, np.ndarray]:
    """Deterministic encoder inputs `x` [N, D] in [0, 1] and decoder inputs `z` [N, L].

    `x` holds 8-bit intensities k/255 like real images: an all-0 row, an all-1 row, a
    checkerboard, a ramp, a half-grey row, strokes (soft discs), sparse binary pixels and uniform
    noise. `z` holds N(0, 1) draws rounded to multiples of 1/1024 plus extremes: 0, +4, -4,
    alternating +-4 and one-hot +-4 rows. Only +, -, *, / and rounding touch the random draws,
    so the same seed gives the same bits on every platform with the same numpy version.
    """
    if image_shape is None:
        side = int(round(input_dim**0.5))
        image_shape = (side, side) if side * side == input_dim else (1, input_dim)
    h, w = image_shape
    if h * w != input_dim:
        raise CrosscheckError(f"image shape {h}x{w} does not match input dim {input_dim}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    rows: list[np.ndarray] = [
        np.zeros(input_dim, np.uint8),
        np.full(input_dim, 255, np.uint8),
        (((yy + xx) % 2) * 255).astype(np.uint8).ravel(),
        (np.arange(input_dim) * 255 // max(input_dim - 1, 1)).astype(np.uint8),
        np.full(input_dim, 128, np.uint8),
    ]
    n_strokes = n_random // 2
    for _ in range(n_strokes):
        img = np.zeros((h, w))
        for _ in range(int(rng.integers(2, 6))):
            cy, cx = rng.integers(0, h), rng.integers(0, w)
            r2 = float(rng.integers(4, 26))
            img = np.maximum(img, 1.0 - ((yy - cy) ** 2 + (xx - cx) ** 2) / r2)
        rows.append(np.rint(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8).ravel())
    for _ in range(n_random - n_strokes - n_random // 4):
        rows.append(((rng.random(input_dim) < 0.2) * 255).astype(np.uint8))
    for _ in range(n_random // 4):
        rows.append(rng.integers(0, 256, input_dim).astype(np.uint8))
    x = _levels_to_float(np.stack(rows))

    zrows = [
        np.zeros(latent_dim),
        np.full(latent_dim, 4.0),
        np.full(latent_dim, -4.0),
        np.where(np.arange(latent_dim) % 2 == 0, 4.0, -4.0),
    ]
    for i in range(min(4, latent_dim)):
        one_hot = np.zeros(latent_dim)
        one_hot[i * latent_dim // 4] = 4.0 if i % 2 == 0 else -4.0
        zrows.append(one_hot)
    normal = np.round(rng.standard_normal((n_random, latent_dim)) * 1024.0) / 1024.0
    z = np.concatenate([np.stack(zrows), normal]).astype(np.float32)
    return {"x": np.ascontiguousarray(x), "z": np.ascontiguousarray(z)}


def run_models(
    export_dir: str | os.PathLike, inputs: Mapping[str, np.ndarray], *, single_rows: int = 4
) -> dict[str, np.ndarray]:
    """Run every model of the export dir on `inputs` ({"x": ..., "z": ...}).

    Keys are "<model stem>/<output name>" (e.g. "decoder.int8/x_mean") for the whole batch and
    "<model stem>/<output name>@b1" for the first `single_rows` rows run one at a time (batch 1
    takes other kernels, and dynamic quantization picks scales per batch). A model whose input
    is neither `x` nor `z` is skipped; `describe_models` still lists it.
    """
    outputs: dict[str, np.ndarray] = {}
    for path in sorted(Path(export_dir).glob("*.onnx")):
        stem = path.name[: -len(".onnx")]
        try:
            sess = open_session(path)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise CrosscheckError(f"{path}: onnxruntime cannot load it: {exc}") from None
        model_inputs = sess.get_inputs()
        if len(model_inputs) != 1 or model_inputs[0].name not in inputs:
            continue
        name = model_inputs[0].name
        data = np.ascontiguousarray(inputs[name], dtype=np.float32)
        out_names = [o.name for o in sess.get_outputs()]
        for out_name, value in zip(out_names, sess.run(out_names, {name: data}), strict=True):
            outputs[f"{stem}/{out_name}"] = np.asarray(value)
        if single_rows:
            singles = [sess.run(out_names, {name: data[i : i + 1]}) for i in range(single_rows)]
            for k, out_name in enumerate(out_names):
                outputs[f"{stem}/{out_name}@b1"] = np.concatenate([s[k] for s in singles])
    return outputs


# --------------------------------------------------------------------------- platform


def platform_info() -> dict:
    """What this process runs on (under qemu-user: the emulated CPU's view)."""
    info: dict = {
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
    except ImportError:  # pragma: no cover - run_models fails earlier
        info["onnxruntime"] = None
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu part", "cpu implementer", "features") and key not in info:
            info[key.replace(" ", "_")] = value.strip()
    try:
        from numpy._core._multiarray_umath import __cpu_features__

        info["numpy_cpu_features"] = sorted(k for k, v in __cpu_features__.items() if v)
    except ImportError:  # pragma: no cover - numpy internals moved
        pass
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None)
            libc.getauxval.restype = ctypes.c_ulong
            info["hwcap"] = hex(libc.getauxval(16))  # AT_HWCAP, from the (emulated) kernel
        except (OSError, AttributeError):
            pass
    return info


# --------------------------------------------------------------------------- sample PNG


def run_sample(export_dir: str | os.PathLike, out_png: str | os.PathLike) -> dict:
    """Run `edgevae sample --export-dir D --n 16 --seed 0 --precision int8 --out PNG` in-process.

    In-process because qemu-user cannot start a child process of the emulated architecture
    without binfmt_misc. Returns {"status": "ok"|"skipped"|"failed", "message": ...}.
    """
    args = ["sample", "--export-dir", str(export_dir), *SAMPLE_ARGS, "--out", str(out_png)]
    command = "edgevae " + " ".join(args)
    out_png = Path(out_png)
    if out_png.exists():
        out_png.unlink()
    try:
        from edgevae import cli
    except ImportError as exc:
        return {
            "status": "skipped",
            "message": f"edgevae.cli is not importable here ({type(exc).__name__}: {exc}): "
            "the `edgevae sample` PNG check was skipped",
        }
    except Exception as exc:  # noqa: BLE001 - a CLI that breaks on import is a failure
        return {"status": "failed", "message": f"import edgevae.cli: {type(exc).__name__}: {exc}"}
    try:
        takes_argv = bool(inspect.signature(cli.main).parameters)
    except (TypeError, ValueError):
        takes_argv = True
    saved_argv = sys.argv
    try:
        sys.argv = ["edgevae", *args]
        code = cli.main(args) if takes_argv else cli.main()
    except SystemExit as exc:
        code = exc.code
    except Exception as exc:  # noqa: BLE001 - any failure of the command is the result
        return {"status": "failed", "message": f"{command}: {type(exc).__name__}: {exc}"}
    finally:
        sys.argv = saved_argv
    if code not in (0, None):
        return {"status": "failed", "message": f"{command} exited with status {code}"}
    if not out_png.is_file():
        return {"status": "failed", "message": f"{command} wrote no {out_png}"}
    return {"status": "ok", "message": command}


# --------------------------------------------------------------------------- run


def run(
    export_dir: str | os.PathLike,
    *,
    seed: int = 0,
    label: str | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    sample_png: str | os.PathLike | None = None,
) -> Results:
    """Generate (or take) inputs, run every model, optionally the sample command."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise CrosscheckError(f"export dir {export_dir} does not exist")
    t0 = time.perf_counter()
    models = describe_models(export_dir)
    dims = model_dims(export_dir)
    if inputs is None:
        inputs = make_inputs(
            seed,
            input_dim=dims["input_dim"],
            latent_dim=dims["latent_dim"],
            image_shape=dims.get("image_shape"),
        )
    outputs = run_models(export_dir, inputs)
    for stem, info in models.items():
        info["outputs"] = sorted(
            k.split("/", 1)[1] for k in outputs if k.split("/", 1)[0] == stem and "@" not in k
        )
    sample: dict = {"status": "skipped", "message": "not requested (--no-sample)"}
    png = None
    if sample_png is not None:
        sample = run_sample(export_dir, sample_png)
        if sample["status"] == "ok":
            png = Path(sample_png).read_bytes()
    int8 = models.get("decoder.int8")
    sample["decoder_kind"] = int8["kind"] if int8 else None
    meta = {
        "format": FORMAT,
        "label": label or platform.machine(),
        "seed": seed,
        "export_dir": str(export_dir),
        "dims": {k: list(v) if isinstance(v, tuple) else v for k, v in dims.items()},
        "platform": platform_info(),
        "models": models,
        "sample": sample,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return Results(inputs=dict(inputs), outputs=outputs, meta=meta, png=png)


# --------------------------------------------------------------------------- CLI


def _cmd_run(args: argparse.Namespace) -> int:
    inputs = None
    if args.inputs:
        inputs = load_results(args.inputs).inputs
    sample_png = None
    if not args.no_sample:
        sample_png = args.sample_out or args.out.with_suffix(".sample.png")
    results = run(
        args.export_dir, seed=args.seed, label=args.label, inputs=inputs, sample_png=sample_png
    )
    save_results(args.out, results)
    json_path = args.json or args.out.with_suffix(".json")
    json_path.write_text(json.dumps(results_summary(results), indent=2, sort_keys=True) + "\n")
    kinds = [m["kind"] for m in results.meta["models"].values()]
    counts = ", ".join(f"{kinds.count(k)} {k}" for k in KIND_ORDER if k in kinds)
    sample = results.meta["sample"]
    print(f"sample: {sample['status']}: {sample['message']}")
    print(
        f"crosscheck run [{results.label}]: {len(results.outputs)} outputs from "
        f"{len(kinds)} models ({counts}) in {results.meta['seconds']:.1f} s -> {args.out}"
    )
    return 0


def _parse_tolerances(args: argparse.Namespace) -> dict[str, float | None]:
    tol: dict[str, float | None] = {}
    if args.fp32_tol is not None:
        tol[FP32] = args.fp32_tol
    if args.dynamic_tol is not None:
        tol[DYNAMIC] = args.dynamic_tol
    return tol


def _cmd_compare(args: argparse.Namespace) -> int:
    reference = load_results(args.reference)
    tolerances = _parse_tolerances(args)
    reports = []
    for path in args.candidates:
        report = compare(reference, load_results(path), tolerances)
        reports.append(report)
        print("\n".join(render_report(report)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "passed": all(r.passed for r in reports),
                    "tolerances": {**DEFAULT_TOLERANCES, **tolerances},
                    "reports": [r.to_dict() for r in reports],
                    "summary": summary_line(reports, tolerances=tolerances),
                },
                indent=2,
            )
            + "\n"
        )
    print(summary_line(reports, tolerances=tolerances))
    return 0 if all(r.passed for r in reports) else 1


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m edgevae.crosscheck",
        description="Run exported models on fixed inputs and compare runs across CPUs.",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run every model of an export dir on fixed inputs")
    r.add_argument("--export-dir", type=Path, default=Path("export"))
    r.add_argument("--out", type=Path, required=True, help="results .npz to write")
    r.add_argument("--json", type=Path, help="JSON summary (default: OUT with .json)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--label", help="name of this target in reports (default: machine)")
    r.add_argument("--inputs", type=Path, help="take the inputs from this results .npz")
    r.add_argument("--no-sample", action="store_true", help="skip the `edgevae sample` PNG")
    r.add_argument("--sample-out", type=Path, help="PNG path (default: OUT with .sample.png)")
    r.set_defaults(func=_cmd_run)
    c = sub.add_parser("compare", help="compare candidate runs against a reference run")
    c.add_argument("reference", type=Path)
    c.add_argument("candidates", type=Path, nargs="+")
    c.add_argument("--json", type=Path, help="write the report as JSON")
    c.add_argument("--fp32-tol", type=float, help=f"default {DEFAULT_TOLERANCES[FP32]:g}")
    c.add_argument(
        "--dynamic-tol",
        type=float,
        help="fail dynamic int8 above this max abs diff (default: report only)",
    )
    c.set_defaults(func=_cmd_compare)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CrosscheckError as exc:
        print(f"crosscheck: error: {exc}", file=sys.stderr)
        print(f"crosscheck {args.command}: FAIL ({exc})")
        return 2


if __name__ == "__main__":
    sys.exit(main())
