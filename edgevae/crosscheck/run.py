"""The run side of the cross-CPU check (`edgevae crosscheck run`): fixed, seeded inputs fed
through every `*.onnx` model of an export dir with onnxruntime (1 thread, graph optimization
ALL), the `edgevae sample` PNG, and a description of the platform, saved as a results file
(`results.py`) for `compare.py` to check against another CPU's.

Only numpy and onnxruntime are imported at module level, so the same code runs on a Raspberry
Pi or under qemu-user; the sample PNG needs the CLI's base dependencies (typer, rich, pillow).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .. import fsio
from .compare import CrosscheckError
from .inputs import make_inputs, memory_bytes
from .models import describe_models, model_dims, open_session
from .results import FORMAT, MAX_RESULTS_BYTES, Results, load_results, results_summary, save_results

SAMPLE_ARGS = ("--n", "16", "--seed", "0", "--precision", "int8")


def model_feeds(names: list[str], inputs: Mapping[str, np.ndarray]) -> dict | None:
    """The feeds of a model whose inputs are `names`: `x` or `z` from `inputs`, and for a
    conditional model (inputs [x, y] or [z, y]) `y` = the labels of those rows (`y_x` or
    `y_z`); None when `inputs` cannot feed the model."""
    main = [n for n in names if n != "y"]
    if len(main) != 1 or main[0] not in inputs:
        return None
    feeds = {main[0]: np.ascontiguousarray(inputs[main[0]], dtype=np.float32)}
    if "y" in names:
        labels = inputs.get(f"y_{main[0]}")
        if labels is None or len(labels) != len(feeds[main[0]]):
            return None
        feeds["y"] = np.ascontiguousarray(labels, dtype=np.float32)
    return feeds


def run_models(
    export_dir: str | os.PathLike, inputs: Mapping[str, np.ndarray], *, single_rows: int = 4
) -> dict[str, np.ndarray]:
    """Run every model of the export dir on `inputs` ({"x": ..., "z": ...}; a conditional
    export's also "y_x", "y_z", see `model_feeds`).

    Keys are "<model stem>/<output name>" (e.g. "decoder.int8/x_mean") for the whole batch and
    "<model stem>/<output name>@b1" for the first `single_rows` rows run one at a time (batch 1
    takes other kernels, and dynamic quantization picks scales per batch). A model that the
    inputs cannot feed is skipped; `describe_models` still lists it.
    """
    outputs: dict[str, np.ndarray] = {}
    for path in sorted(Path(export_dir).glob("*.onnx")):
        stem = path.name[: -len(".onnx")]
        try:
            sess = open_session(path)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise CrosscheckError(f"{path}: onnxruntime cannot load it: {exc}") from None
        feeds = model_feeds([i.name for i in sess.get_inputs()], inputs)
        if feeds is None:
            continue
        for model_input in sess.get_inputs():
            name, data = model_input.name, feeds[model_input.name]
            width = model_input.shape[-1] if model_input.shape else None
            if (
                data.ndim != 2
                or len(data) < single_rows
                or (isinstance(width, int) and data.shape[1] != width)
            ):  # inputs read from a results file of another export, or hand-made
                raise CrosscheckError(
                    f"{path}: input {name} takes [N >= {single_rows}, {width}], the inputs "
                    f"have shape {list(data.shape)} (inputs of another export?)"
                )
        out_names = [o.name for o in sess.get_outputs()]
        for out_name, value in zip(out_names, sess.run(out_names, feeds), strict=True):
            outputs[f"{stem}/{out_name}"] = np.asarray(value)
        if single_rows:
            singles = [
                sess.run(out_names, {k: v[i : i + 1] for k, v in feeds.items()})
                for i in range(single_rows)
            ]
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
    out_png.unlink(missing_ok=True)
    try:
        from .. import cli
    except ImportError as exc:
        return {
            "status": "skipped",
            "message": f"edgevae.cli is not importable here ({type(exc).__name__}: {exc}): "
            "the `edgevae sample` PNG check was skipped",
        }
    except Exception as exc:  # noqa: BLE001 - a CLI that breaks on import is a failure
        return {"status": "failed", "message": f"import edgevae.cli: {type(exc).__name__}: {exc}"}
    try:
        code = cli.main(args)
    except SystemExit as exc:
        code = exc.code
    except Exception as exc:  # noqa: BLE001 - any failure of the command is the result
        return {"status": "failed", "message": f"{command}: {type(exc).__name__}: {exc}"}
    if code not in (0, None):
        return {"status": "failed", "message": f"{command} exited with status {code}"}
    if not out_png.is_file():
        return {"status": "failed", "message": f"{command} wrote no {out_png}"}
    return {"status": "ok", "message": command}


# --------------------------------------------------------------------------- run


def _check_memory(export_dir: Path, dims: dict, n_models: int) -> None:
    """Refuse an export whose declared sizes (the manifest's or the models') would make
    inputs and outputs over the memory limit (`edgevae.limits`), before making them."""
    from .. import limits

    d, lat, c = dims["input_dim"], dims["latent_dim"], dims.get("n_classes", 0)
    need = memory_bytes(d, lat, c, n_models)
    what = f"{export_dir}: crosschecking {n_models} models of {d} pixels, {lat} latent dims"
    limits.check(need, what + (f", {c} classes" if c else ""), error=CrosscheckError)


def run(
    export_dir: str | os.PathLike,
    *,
    seed: int = 0,
    label: str | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    sample_png: str | os.PathLike | None = None,
) -> Results:
    """Generate (or take) inputs, run every model, and the sample command when `sample_png`
    names the PNG it should write."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise CrosscheckError(f"export dir {export_dir} does not exist")
    t0 = time.perf_counter()
    models = describe_models(export_dir)
    dims = model_dims(export_dir)
    _check_memory(export_dir, dims, len(models))
    if inputs is None:
        inputs = make_inputs(
            seed,
            input_dim=dims["input_dim"],
            latent_dim=dims["latent_dim"],
            image_shape=dims.get("image_shape"),
            n_classes=dims.get("n_classes", 0),
        )
    outputs = run_models(export_dir, inputs)
    for stem, info in models.items():
        info["outputs"] = sorted(
            k.split("/", 1)[1] for k in outputs if k.split("/", 1)[0] == stem and "@" not in k
        )
    sample: dict = {"status": "skipped", "message": "not requested"}
    png = None
    if sample_png is not None:
        sample = run_sample(export_dir, sample_png)
        if sample["status"] == "ok":
            png = fsio.read_regular(sample_png, MAX_RESULTS_BYTES, CrosscheckError)
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


def run_and_save(
    export_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    json_path: str | os.PathLike | None = None,
    seed: int = 0,
    label: str | None = None,
    inputs_from: str | os.PathLike | None = None,
    sample: bool = True,
    sample_png: str | os.PathLike | None = None,
) -> Results:
    """`run`, saved: the results file `out`, its JSON summary (default: `out` with .json) and,
    unless `sample` is False, the sample PNG (default: `out` with .sample.png). `inputs_from`
    is a results file whose inputs are fed instead of generated ones."""
    out = Path(out)
    inputs = load_results(inputs_from).inputs if inputs_from is not None else None
    png = (sample_png or out.with_suffix(".sample.png")) if sample else None
    results = run(export_dir, seed=seed, label=label, inputs=inputs, sample_png=png)
    save_results(out, results)
    fsio.write_json(json_path or out.with_suffix(".json"), results_summary(results))
    return results
