"""4-bit and conditional decoders for the firmware tests (no tests of its own).

4-bit decoders come from the firmware-int4 recipe (`edgevae.quant.int4.write_int4_decoder`)
applied to `support.firmware.build_fp32` decoders. Conditional decoders are the exporter's
layout, Concat(z, y) -> Gemm -> ..., quantized by `edgevae.quant.apply.apply_recipe` with the
firmware recipe, calibrated on z/y feeds (`calibration_zy`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from support.firmware import Variant, build_fp32, calibration_z


def calibration_zy(latent: int, classes: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Calibration feeds of a conditional decoder: z draws, each with a random one-hot y."""
    z = calibration_z(latent, seed=seed)
    labels = np.random.default_rng(seed + 1).integers(0, classes, len(z))
    return {"z": z, "y": np.eye(classes, dtype=np.float32)[labels]}


def make_int4_decoder(directory: Path, v: Variant) -> Path:
    """decoder.fp32.onnx and the firmware-int4 recipe's decoder.int4.static.onnx."""
    from edgevae.quant.int4 import write_int4_decoder

    directory.mkdir(parents=True, exist_ok=True)
    fp32 = build_fp32(directory / "decoder.fp32.onnx", v)
    dst = directory / "decoder.int4.static.onnx"
    write_int4_decoder(fp32, dst, calibration_z(v.latent))
    return dst


def build_conditional_fp32(path: Path, v: Variant, classes: int) -> Path:
    """build_fp32's decoder with a second input y [N, classes] concatenated after z."""
    import onnx
    from onnx import TensorProto, helper

    build_fp32(path, dataclasses.replace(v, latent=v.latent + classes))
    model = onnx.load(str(path))
    graph = model.graph
    first = next(node for node in graph.node if node.input and node.input[0] == "z")
    first.input[0] = "cat"
    graph.node.insert(0, helper.make_node("Concat", ["z", "y"], ["cat"], name="concat", axis=1))
    del graph.input[:]
    graph.input.extend(
        [
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", v.latent]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes]),
        ]
    )
    meta = {p.key: p.value for p in model.metadata_props}
    meta["edgevae.latent_dim"] = str(v.latent)
    meta["edgevae.classes"] = json.dumps([f"c{i}" for i in range(classes)])
    del model.metadata_props[:]
    for key, value in sorted(meta.items()):
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_conditional(directory: Path, v: Variant, classes: int, int4: bool = False) -> Path:
    """An export-like folder of a conditional decoder: decoder.fp32.onnx, the firmware
    recipe's decoder.int8.static.onnx (and with `int4` decoder.int4.static.onnx), and a
    manifest naming the classes."""
    from edgevae.quant.apply import apply_recipe
    from edgevae.quant.int4 import write_int4_decoder
    from edgevae.quant.recipes import FIRMWARE

    directory.mkdir(parents=True, exist_ok=True)
    fp32 = build_conditional_fp32(directory / "decoder.fp32.onnx", v, classes)
    calib = calibration_zy(v.latent, classes)
    apply_recipe(FIRMWARE, fp32, directory / "decoder.int8.static.onnx", calib)
    if int4:
        write_int4_decoder(fp32, directory / "decoder.int4.static.onnx", calib)
    side = int(round(np.sqrt(v.out)))
    manifest = {
        "latent_dim": v.latent,
        "image_shape": [side, side] if side * side == v.out else [1, v.out],
        "classes": [f"c{i}" for i in range(classes)],
        "firmware_decoder": "decoder.int8.static.onnx",
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def label_text(z: np.ndarray, labels: np.ndarray) -> str:
    """Lines for a conditional host decoder: the label, then z (repr round-trips float32)."""
    return "".join(
        f"{int(label)} " + " ".join(repr(float(v)) for v in row) + "\n"
        for label, row in zip(labels, z, strict=True)
    )


def ort_pixels_zy(model: Path, z: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    y = np.eye(classes, dtype=np.float32)[labels]
    x_mean = session.run(["x_mean"], {"z": z, "y": y})[0]
    return np.rint(x_mean.astype(np.float64) * 255).astype(np.int64)
