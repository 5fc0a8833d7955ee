"""Quantized ONNX decoder -> edgevae_weights.h / edgevae_weights.c for the C kernel in kernel/.

The numbers come from `intmodel.load_int_model`, so the C kernel and the numpy reference
consume the same integers. This module only chooses the memory layout (weights interleaved
for the SMLAD inner loop, int8 or 4-bit, rows padded to blocks of 4, columns to chunks of 4),
checks that everything fits the kernel's types and reports sizes; `csource` writes the C
text with a provenance stamp.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from ..runtime.manifest import FIRMWARE_DECODER, FIRMWARE_DECODER_INT4
from .csource import FORMAT, HEADER, SOURCE, write_weights
from .fixedpoint import SATURATED
from .intmodel import IntLayer, IntModel, load_int_model

NIBBLE_OFFSET = 8  # EDGEVAE_NIBBLE_OFFSET: 4-bit weights are stored as w + 8
ROW_BLOCK = 4
COL_CHUNK = 4
# bytes of flash reserved for the kernel's code in the fit check: decoder builds measure up to
# 4.0 KB on Cortex-M4 (4-bit path included), score builds up to 5.1 KB (firmware_demo/README.md)
KERNEL_CODE_BUDGET = 4096
SCORE_KERNEL_CODE_BUDGET = 6144
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
__all__ = ["FORMAT", "HEADER", "SOURCE", "FirmwareReport", "generate_firmware", "write_weights"]


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
    kernel_budget: int = KERNEL_CODE_BUDGET  # bytes of kernel code counted in `fits`

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.score is None:
            for key in ("score", "score_build_command", "score_run_command"):
                del d[key]
        return d


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
        from ..runtime.manifest import parse

        man = parse(manifest)
        if not isinstance(man, dict):
            raise ModelFileError(f"{manifest}: not an edgevae manifest (not a JSON object)")
        name = man.get(key)
        if name:
            if not isinstance(name, str) or Path(name).name != name:
                raise ModelFileError(f"{manifest}: {key} {name!r:.60} is not a file name")
            path = export_dir / name
            if not path.is_file():
                raise ModelFileError(f"{manifest}: {key} {name!r:.60} does not exist")
            return path
    if weight_bits == 4:
        if (export_dir / FIRMWARE_DECODER_INT4).is_file():
            return export_dir / FIRMWARE_DECODER_INT4
        raise ModelFileError(
            f"{export_dir}: no {FIRMWARE_DECODER_INT4} (`edgevae quantize` writes it; fine-tune "
            "the run with 4-bit quantization-aware training first for accuracy)"
        )
    for name in (FIRMWARE_DECODER, "decoder.int8.onnx"):
        if (export_dir / name).is_file():
            return export_dir / name
    raise ModelFileError(
        f"{export_dir}: no {FIRMWARE_DECODER} or decoder.int8.onnx "
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
    kernel_budget: int | None = None,
) -> FirmwareReport:
    """Sizes and flash fit; `flash` / `ram` / `kernel_budget` (the kernel's code in the fit)
    override the decoder's own (score builds)."""
    if flash is None:
        flash = sum(a.flash_bytes for a in arrays) + 256  # + provenance string
        flash += model.classes * (4 * arrays[0].out_padded + 8)  # class bias rows and names
    if ram is None:
        ram = 2 * 2 * max(a.in_padded for a in arrays)  # two int16 activation buffers
    weight_bytes = sum(4 * a.weights.size for a in arrays)
    budget = KERNEL_CODE_BUDGET if kernel_budget is None else kernel_budget
    fits = {name: flash + budget <= size for name, size in FLASH_SIZES.items()}
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
        kernel_budget=budget,
    )


def _bits(arrays: list[_LayerArrays]) -> int:
    return 4 if any(a.layer.weight_bits == 4 for a in arrays) else 8


def generate_firmware(
    onnx_path: Path, out_dir: Path, *, command: str, weight_bits: int = 8
) -> FirmwareReport:
    """Write edgevae_weights.h/.c for `onnx_path` into `out_dir`; return sizes and fit.
    With `weight_bits` 4 the layers whose weights fit -8..7 are stored as 4-bit."""
    model = load_int_model(Path(onnx_path), weight_bits)
    arrays = decoder_arrays(model)
    return report(model, arrays, write_weights(model, arrays, Path(out_dir), command=command))
