"""C source text of the generated weights (edgevae_weights.h / .c) for the kernel in kernel/.

`write_weights` writes both files from the layers `codegen` laid out: the header's sizes,
input quantization and provenance, one set of arrays and an `edgevae_layer_t` per layer
(designated initializers), and for a conditional decoder the class names and bias rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import __version__
from ..fsio import write_text
from .ctext import c_array, c_comment, c_float, c_string

if TYPE_CHECKING:
    from .codegen import _LayerArrays
    from .intmodel import IntModel

FORMAT = 5  # must equal EDGEVAE_TYPES_FORMAT in kernel/edgevae_types.h
HEADER = "edgevae_weights.h"
SOURCE = "edgevae_weights.c"


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
