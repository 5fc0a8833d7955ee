"""Quantized ONNX decoder -> edgevae_weights.h / edgevae_weights.c for the C kernel in kernel/.

The numbers come from `intmodel.load_int_model`, so the C kernel and the numpy reference
consume the same integers. This module only chooses the memory layout (weights interleaved
for the SMLAD inner loop, int8 or 4-bit, rows padded to blocks of 4, columns to chunks of 4),
checks that everything fits the kernel's types, and writes C with a provenance stamp.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import ModelFileError
from ..fsio import write_text
from .ctext import c_array, c_comment, c_float, c_string
from .fixedpoint import SATURATED
from .intmodel import IntLayer, IntModel, load_int_model

NIBBLE_OFFSET = 8  # EDGEVAE_NIBBLE_OFFSET: 4-bit weights are stored as w + 8

FORMAT = 5  # must equal EDGEVAE_TYPES_FORMAT in kernel/edgevae_types.h
ROW_BLOCK = 4
COL_CHUNK = 4
KERNEL_CODE_BUDGET = 4096  # bytes of flash reserved for the kernel's code in the fit check
FLASH_SIZES = {
    "64 KB": 64 * 1024,
    "128 KB": 128 * 1024,
    "256 KB": 256 * 1024,
    "512 KB": 512 * 1024,
    "1 MB": 1 << 20,
}
LAYER_STRUCT_BYTES = 44  # sizeof(edgevae_layer_t) on 32-bit targets
TABLE_SIZE = 2 * SATURATED + 1  # requantized values -512..512
SHIFT_RANGE = (17, 47)  # the kernel's 32-bit requantization path needs 1 <= shift - 16 <= 31
HEADER = "edgevae_weights.h"
SOURCE = "edgevae_weights.c"


@dataclass
class FirmwareReport:
    source: str
    sha256: str
    files: list[str]
    latent_dim: int
    image_shape: tuple[int, int]
    layers: list[dict]
    macs: int
    flash_bytes: int  # model data: weights, biases, requant tables, lookup tables
    weight_bytes: int
    ram_bytes: int  # the kernel's static activation buffers (stack comes on top)
    fits: dict[str, bool]
    suggestion: str
    notes: list[str] = field(default_factory=list)
    # filled in by deploy.write_firmware: where the kernel came from and how to build the
    # host decoder from the output folder
    kernel_dir: str = ""
    build_command: str = ""
    run_command: str = ""
    # score builds (`edgevae firmware --score`) only: the encoder and the score, and how to
    # build and run the host score program; absent from to_dict() otherwise
    score: dict | None = None
    score_build_command: str = ""
    score_run_command: str = ""
    weight_bits: int = 8  # what was asked: 4 stores the layers whose weights fit as 4-bit
    classes: list[str] = field(default_factory=list)  # a conditional decoder's labels

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.score is None:
            for key in ("score", "score_build_command", "score_run_command"):
                del d[key]
        return d


INT4_DECODER = "decoder.int4.static.onnx"  # the int4 recipe's decoder (quant/int4.py)


def find_firmware_decoder(export_dir: Path, weight_bits: int = 8) -> Path:
    """The decoder to deploy: a file as given, or manifest.json's choice, or the usual names;
    with `weight_bits` 4 the int4 recipe's (manifest firmware_decoder_int4)."""
    export_dir = Path(export_dir)
    if export_dir.is_file():
        return export_dir
    if not export_dir.is_dir():
        raise ModelFileError(f"{export_dir}: no such export directory (run `edgevae export`)")
    key = "firmware_decoder_int4" if weight_bits == 4 else "firmware_decoder"
    manifest = export_dir / "manifest.json"
    if manifest.is_file():
        try:
            name = json.loads(manifest.read_text(encoding="utf-8")).get(key)
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
            raise ModelFileError(f"{manifest}: not valid JSON ({exc})") from None
        if name:
            path = export_dir / name
            if not isinstance(name, str) or Path(name).name != name or not path.is_file():
                raise ModelFileError(f"{manifest}: {key} {name!r:.60} does not exist")
            return path
    if weight_bits == 4:
        if (export_dir / INT4_DECODER).is_file():
            return export_dir / INT4_DECODER
        raise ModelFileError(
            f"{export_dir}: no {INT4_DECODER} (`edgevae quantize` writes it; fine-tune the run "
            "with 4-bit quantization-aware training first for accuracy)"
        )
    for name in ("decoder.int8.static.onnx", "decoder.int8.onnx"):
        if (export_dir / name).is_file():
            return export_dir / name
    raise ModelFileError(
        f"{export_dir}: no decoder.int8.static.onnx or decoder.int8.onnx "
        "(run `edgevae export` / `edgevae quantize` first)"
    )


# ------------------------------------------------------------------------------- layout


def _ceil(n: int, k: int) -> int:
    return -(-n // k) * k


def interleave_weights(weight: np.ndarray) -> np.ndarray:
    """int8 [out, in] -> uint32 words in the kernel's order (see edgevae_types.h)."""
    out_dim, in_dim = weight.shape
    padded = np.zeros((_ceil(out_dim, ROW_BLOCK), _ceil(in_dim, COL_CHUNK)), np.int8)
    padded[:out_dim, :in_dim] = weight
    blocks, chunks = padded.shape[0] // ROW_BLOCK, padded.shape[1] // COL_CHUNK
    tiles = padded.reshape(blocks, ROW_BLOCK, chunks, COL_CHUNK).transpose(0, 2, 1, 3)
    tiles = tiles[..., [0, 2, 1, 3]]  # SXTB16 takes bytes 0 and 2, then 1 and 3
    return np.ascontiguousarray(tiles).view(np.uint8).reshape(-1, 4).astype(np.uint32) @ (
        np.array([1, 1 << 8, 1 << 16, 1 << 24], np.uint32)
    )


# nibble i of a 4-bit word: (row within the pair, column within the chunk); edgevae_types.h
_NIBBLE_ROW = [0, 0, 1, 1, 0, 0, 1, 1]
_NIBBLE_COL = [0, 2, 0, 2, 1, 3, 1, 3]


def interleave_nibbles(weight: np.ndarray) -> np.ndarray:
    """4-bit weights (int8 values -8..7) [out, in] -> uint32 words in the kernel's order:
    two words per row block and column chunk, each weight stored as w + 8."""
    out_dim, in_dim = weight.shape
    padded = np.zeros((_ceil(out_dim, ROW_BLOCK), _ceil(in_dim, COL_CHUNK)), np.int64)
    padded[:out_dim, :in_dim] = weight
    blocks, chunks = padded.shape[0] // ROW_BLOCK, padded.shape[1] // COL_CHUNK
    tiles = padded.reshape(blocks, 2, 2, chunks, COL_CHUNK).transpose(0, 3, 1, 2, 4)
    nibbles = tiles[..., _NIBBLE_ROW, _NIBBLE_COL] + NIBBLE_OFFSET  # [block, chunk, pair, 8]
    shifts = np.arange(8, dtype=np.uint64) * 4
    words = (nibbles.astype(np.uint64) << shifts).sum(axis=-1)
    return words.reshape(-1).astype(np.uint32)


def output_table(model: IntModel, index: int) -> tuple[np.ndarray, int]:
    """Layer `index`'s requantized value (-512..512) -> its output, as uint8 + offset.

    The same steps as intref.decode_q after requantize: add the zero point, clamp to
    [floor, qmax], then the activation table, or for the last layer the pixel table.
    """
    layer = model.layers[index]
    q = np.clip(
        np.arange(-SATURATED, SATURATED + 1) + layer.out_q.zero_point, layer.floor, layer.out_q.qmax
    )
    if index + 1 == len(model.layers):
        return model.pixel_lut[q - layer.out_q.qmin], 0
    nxt = q if layer.lut is None else layer.lut[q - layer.out_q.qmin].astype(np.int64)
    offset = model.layers[index + 1].in_q.qmin
    return (nxt - offset).astype(np.uint8), offset


@dataclass
class _LayerArrays:
    layer: IntLayer
    weights: np.ndarray  # uint32 words
    bias: np.ndarray  # int32 [out_padded]
    requant: np.ndarray  # uint32 [out_padded]: multiplier | (shift - 16) << 24
    per_channel: bool
    table: np.ndarray  # uint8 [TABLE_SIZE]
    table_offset: int
    in_padded: int
    out_padded: int

    @property
    def flash_bytes(self) -> int:
        return (
            4 * (self.weights.size + self.bias.size + self.requant.size)
            + self.table.size
            + (0 if self.layer.mid_bias is None else 4 * self.layer.mid_bias.size)
            + LAYER_STRUCT_BYTES
        )


def layer_arrays(layer: IntLayer, table: np.ndarray, offset: int, label: str) -> _LayerArrays:
    """One layer in the kernel's layout, with its output table; refuses what does not fit."""
    for what, dim in (("inputs", layer.in_dim), ("outputs", layer.out_dim)):
        if not 0 < _ceil(dim, 4) <= 65532:
            raise ModelFileError(f"{label} has {dim} {what}; the kernel supports 1..65532")
    used = layer.shift[layer.multiplier != 0]
    if used.size and (used.min() < SHIFT_RANGE[0] or used.max() > SHIFT_RANGE[1]):
        raise ModelFileError(
            f"{label}: requantization scale outside the kernel's range 2**-24 .. 2**7 "
            "(input_scale * weight_scale / output_scale); recalibrate the model"
        )
    per_channel = bool(np.unique(layer.multiplier).size > 1 or np.unique(layer.shift).size > 1)
    out_padded = _ceil(layer.out_dim, ROW_BLOCK)
    bias = np.zeros(out_padded, np.int32)
    bias[: layer.out_dim] = layer.bias
    # one word per row even for per-tensor scales: the kernel then needs no index logic
    mult = layer.multiplier.astype(np.uint32)
    shift = np.where(mult == 0, SHIFT_RANGE[0], layer.shift).astype(np.uint32)
    requant = np.full(out_padded, SHIFT_RANGE[0] - 16 << 24, np.uint32)
    requant[: layer.out_dim] = mult | (shift - 16) << 24
    four = layer.weight_bits == 4
    return _LayerArrays(
        layer,
        interleave_nibbles(layer.weight) if four else interleave_weights(layer.weight),
        bias,
        requant,
        per_channel,
        table,
        offset,
        _ceil(layer.in_dim, COL_CHUNK),
        out_padded,
    )


def decoder_arrays(model: IntModel) -> list[_LayerArrays]:
    return [
        layer_arrays(layer, *output_table(model, i), f"{model.source}: node {layer.name!r}")
        for i, layer in enumerate(model.layers)
    ]


# ------------------------------------------------------------------------------- C text


def _header(
    model: IntModel, arrays: list[_LayerArrays], stamp: str, provenance: str, extra: str = ""
) -> str:
    q = model.input_q
    max_in = max(a.in_padded for a in arrays)
    max_hidden = max([a.layer.out_dim for a in arrays[:-1]], default=0)
    ztype = "int8_t" if q.signed else "uint8_t"
    return f"""/* {HEADER} - GENERATED, do not edit.
{stamp}
 */
#ifndef EDGEVAE_WEIGHTS_H
#define EDGEVAE_WEIGHTS_H

#include <stdint.h>

#include "edgevae_types.h"

#define EDGEVAE_WEIGHTS_FORMAT {FORMAT}
#define EDGEVAE_LATENT_DIM {model.latent_dim}
#define EDGEVAE_IMAGE_H {model.image_shape[0]}
#define EDGEVAE_IMAGE_W {model.image_shape[1]}
#define EDGEVAE_OUTPUT_DIM {model.output_dim}
#define EDGEVAE_NUM_LAYERS {len(arrays)}
#define EDGEVAE_MAX_WIDTH {max_hidden} /* widest hidden layer */
#define EDGEVAE_MAX_IN_PADDED {max_in} /* widest layer input, padded: sizes the buffers */
#define EDGEVAE_MACS {model.macs}L /* multiply-accumulates per decode */
{_bits_define(arrays)}
/* input quantization: zq = clamp(round_half_even(z / scale) + zero_point) */
#define EDGEVAE_INPUT_SCALE {c_float(q.scale)} /* {q.scale!r} */
#define EDGEVAE_INPUT_ZERO_POINT {q.zero_point}
#define EDGEVAE_INPUT_QMIN {q.qmin}
#define EDGEVAE_INPUT_QMAX {q.qmax}
typedef {ztype} edgevae_zq_t;

#define EDGEVAE_MODEL_SHA256 "{model.sha256}"
#define EDGEVAE_PROVENANCE {c_string(provenance)}

extern const edgevae_layer_t edgevae_layers[EDGEVAE_NUM_LAYERS];
extern const char edgevae_provenance[];
{_classes_header(model)}{extra}
#endif
"""


def _bits_define(arrays: list[_LayerArrays]) -> str:
    if not any(a.layer.weight_bits == 4 for a in arrays):
        return ""
    return "#define EDGEVAE_HAS_4BIT_WEIGHTS 1 /* some layers pack two weights per byte */\n"


def _classes_header(model: IntModel) -> str:
    if not model.classes:
        return ""
    names = ", ".join(model.class_names)
    return (
        "\n/* conditional decoder: p(x | z, label); edgevae_decode_label() */\n"
        f"#define EDGEVAE_NUM_CLASSES {model.classes} /* {c_comment(names)} */\n"
        "extern const char *const edgevae_class_names[EDGEVAE_NUM_CLASSES];\n"
        "/* [label * layer 0's out_padded + j]: layer 0's bias, the label's column folded in */\n"
        "extern const int32_t edgevae_class_bias[];\n"
    )


def _classes_source(model: IntModel, first: _LayerArrays) -> str:
    """The class names and the first layer's bias row per class (padded like its bias)."""
    if not model.classes:
        return ""
    rows = np.zeros((model.classes, first.out_padded), np.int32)
    rows[:, : first.layer.out_dim] = model.class_bias
    names = ", ".join(c_string(name) for name in model.class_names)
    return (
        f"const char *const edgevae_class_names[EDGEVAE_NUM_CLASSES] = {{{names}}};\n"
        "/* layer 0's bias + the label's weight column * its quantized one-hot 1, per class */\n"
        + c_array("int32_t", "edgevae_class_bias", rows, "{}", 8)
        + "\n"
    )


def layer_source(name: str, a: _LayerArrays, what: str) -> tuple[str, str]:
    """C arrays of one layer (named edgevae_<name>_*) and its edgevae_layer_t initializer."""
    layer = a.layer
    four = layer.weight_bits == 4
    parts = [
        f"/* {name}: {c_comment(layer.name)}: {layer.in_dim} -> {layer.out_dim}, "
        f"{layer.weight_bits}-bit weights, "
        f"{'per-channel' if a.per_channel else 'per-tensor'} scale, "
        f"activation {layer.activation} */\n",
        "/* 4-bit weights as w + 8, two words per 4 rows x 4 columns */\n" if four else "",
        c_array("uint32_t", f"edgevae_{name}_weights", a.weights, "0x{:08x}u", 8),
        c_array("int32_t", f"edgevae_{name}_bias", a.bias, "{}", 8),
        "/* requantization: multiplier | (shift - 16) << 24 */\n",
        c_array("uint32_t", f"edgevae_{name}_requant", a.requant, "0x{:08x}u", 8),
        f"/* requantized value + 512 -> {what} */\n",
        c_array("uint8_t", f"edgevae_{name}_table", a.table, "{}", 16),
        "\n",
    ]
    if layer.mid_bias is not None:
        mid_bias = np.zeros(a.out_padded, np.int32)
        mid_bias[: layer.out_dim] = layer.mid_bias
        parts.append("/* MatMul -> Q -> DQ -> Add: the Add's bias in 2^-mid_shift steps */\n")
        parts.append(c_array("int32_t", f"edgevae_{name}_mid_bias", mid_bias, "{}", 8))
    return "".join(parts), layer_struct(name, a, f"edgevae_{name}_table")


def layer_struct(name: str, a: _LayerArrays, table: str) -> str:
    """The edgevae_layer_t initializer of a layer whose arrays are named edgevae_<name>_*."""
    layer = a.layer
    mid = ".mid_bias = NULL"
    if layer.mid_bias is not None:
        q = layer.mid_q
        mid = (
            f".mid_bias = edgevae_{name}_mid_bias, .mid_mult = {layer.mid_mult}, "
            f".mid_shift = {layer.mid_shift},\n     .mid_zero_point = {q.zero_point}, "
            f".mid_qmin = {q.qmin}, .mid_qmax = {q.qmax}"
        )
    return (
        f"    {{.weights = edgevae_{name}_weights, .bias = edgevae_{name}_bias,\n"
        f"     .requant = edgevae_{name}_requant, .table = {table},\n"
        f"     .in_dim = {layer.in_dim}, .in_padded = {a.in_padded}, "
        f".out_dim = {layer.out_dim}, .out_padded = {a.out_padded},\n"
        f"     .table_offset = {a.table_offset}, .weight_bits = {layer.weight_bits},\n"
        f"     {mid}}}"
    )


def _source(model: IntModel, arrays: list[_LayerArrays], stamp: str, extra: str = "") -> str:
    parts = [
        f"/* {SOURCE} - GENERATED, do not edit.\n{stamp}\n */\n",
        f'#include <stddef.h>\n\n#include "{HEADER}"\n\n',
        "const char edgevae_provenance[] = EDGEVAE_PROVENANCE;\n\n",
    ]
    structs = []
    for i, a in enumerate(arrays):
        what = (
            "grey level = round(255 * sigmoid(dequantized logit))"
            if i + 1 == len(arrays)
            else "next layer's input - table_offset"
        )
        text, struct = layer_source(f"l{i}", a, what)
        parts.append(text.replace(f"/* l{i}: ", f"/* layer {i}: ", 1))
        structs.append(struct + ",\n")
    parts.append("const edgevae_layer_t edgevae_layers[EDGEVAE_NUM_LAYERS] = {\n")
    parts.append("".join(structs))
    parts.append("};\n\n")
    parts.append(_classes_source(model, arrays[0]))
    parts.append(extra)
    return "".join(parts)


# ------------------------------------------------------------------------------- entry point


def layer_dict(a: _LayerArrays) -> dict:
    """One row of the report's layer table."""
    return {
        "name": a.layer.name,
        "in": a.layer.in_dim,
        "out": a.layer.out_dim,
        "scale": "per-channel" if a.per_channel else "per-tensor",
        "weight_bits": a.layer.weight_bits,
        "activation": a.layer.activation,
        "input": "int8" if a.layer.in_q.signed else "uint8",
    }


def report(
    model: IntModel,
    arrays: list[_LayerArrays],
    files: list[str],
    flash: int | None = None,
    ram: int | None = None,
) -> FirmwareReport:
    """Sizes and flash fit; `flash` / `ram` override the decoder's own (score builds)."""
    if flash is None:
        flash = sum(a.flash_bytes for a in arrays) + 256  # + provenance string
        flash += model.classes * (4 * arrays[0].out_padded + 8)  # class bias rows and names
    if ram is None:
        ram = 2 * 2 * max(a.in_padded for a in arrays)  # two int16 activation buffers
    weight_bytes = sum(4 * a.weights.size for a in arrays)
    fits = {name: flash + KERNEL_CODE_BUDGET <= size for name, size in FLASH_SIZES.items()}
    if fits["128 KB"]:
        suggestion = f"fits a {next(name for name, ok in fits.items() if ok)} flash part"
    else:
        suggestion = (
            "does not fit 128 KB of flash; train a smaller decoder: the 'mcu' preset "
            "(8-128-784) or fewer/narrower hidden layers"
            + ("" if _bits(arrays) == 4 else ", or store 4-bit weights")
        )
    return FirmwareReport(
        model.source,
        model.sha256,
        files,
        model.latent_dim,
        model.image_shape,
        [layer_dict(a) for a in arrays],
        model.macs,
        flash,
        weight_bytes,
        ram,
        fits,
        suggestion,
        list(model.notes),
        weight_bits=_bits(arrays),
        classes=list(model.class_names) if model.classes else [],
    )


def _bits(arrays: list[_LayerArrays]) -> int:
    return 4 if any(a.layer.weight_bits == 4 for a in arrays) else 8


def write_weights(
    model: IntModel,
    arrays: list[_LayerArrays],
    out_dir: Path,
    *,
    command: str,
    also: tuple[tuple[str, str], ...] = (),
    header_extra: str = "",
    source_extra: str = "",
) -> list[str]:
    """Write edgevae_weights.h/.c: the decoder's layers, plus (score builds) `also` (more
    source files as (name, sha256)) in the stamp and the extra header and source text."""
    dims = [a.layer.out_dim for a in arrays]
    sources = [(model.source, model.sha256), *also]
    provenance = f"edgevae {__version__}; command: {command}; " + "; ".join(
        f"source: {name}; sha256: {digest}" for name, digest in sources
    )
    lines = [f"generated by edgevae {__version__}", f"command: {command}"]
    for name, digest in sources:
        lines += [f"source: {name}", f"sha256: {digest}"]
    lines.append("layers: " + " -> ".join(str(d) for d in [model.latent_dim, *dims]))
    stamp = "\n".join(f" * {c_comment(line)}" for line in lines)
    source_text = _source(model, arrays, stamp, source_extra)
    header_text = _header(model, arrays, stamp, provenance, header_extra)
    write_text(out_dir / SOURCE, source_text)
    write_text(out_dir / HEADER, header_text)
    return [str(out_dir / HEADER), str(out_dir / SOURCE)]


def generate_firmware(
    onnx_path: Path, out_dir: Path, *, command: str, weight_bits: int = 8
) -> FirmwareReport:
    """Write edgevae_weights.h/.c for `onnx_path` into `out_dir`; return sizes and fit.
    With `weight_bits` 4 the layers whose weights fit -8..7 are stored as 4-bit."""
    model = load_int_model(Path(onnx_path), weight_bits)
    arrays = decoder_arrays(model)
    return report(model, arrays, write_weights(model, arrays, Path(out_dir), command=command))
