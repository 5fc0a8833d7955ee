"""`edgevae firmware --score`: the decoder's C weights plus the int8 encoder and the score tables.

The decoder part of edgevae_weights.h/.c is exactly what `codegen.generate_firmware` writes;
this module appends the encoder's layers (body, then the mu and logvar heads, whose tables map
a requantized value to the quantized output - qmin), the logit layer (the decoder's last layer
with a table to its quantized logit instead of the grey level), the score's fixed-point tables
(`scoretables.py`; with the excess score also the pixel entropy table of a Bernoulli model),
the activation buffer sizes, the score's kind (EDGEVAE_SCORE_KIND_EXCESS) and, when the
manifest has one for that kind, EDGEVAE_THRESHOLD_NATS.
"""

from __future__ import annotations

import numpy as np

from .codegen import (
    LAYER_STRUCT_BYTES,
    SCORE_KERNEL_CODE_BUDGET,
    TABLE_SIZE,
    FirmwareReport,
    _ceil,
    _LayerArrays,
    decoder_arrays,
    layer_arrays,
    layer_dict,
    report,
)
from .csource import layer_source, layer_struct, write_weights
from .ctext import c_array, c_comment, c_float
from .fixedpoint import SATURATED
from .intmodel import IntLayer
from .qdq import QType
from .score import ScoreModel


def _clamped(layer: IntLayer) -> np.ndarray:
    """Requantized values -512..512 -> the layer's quantized output (zero point, clamp)."""
    values = np.arange(-SATURATED, SATURATED + 1) + layer.out_q.zero_point
    return np.clip(values, layer.floor, layer.out_q.qmax)


def _hidden_table(layer: IntLayer, next_q: QType) -> tuple[np.ndarray, int]:
    """Body layer: value -> the next layer's input - its qmin (uint8), and that qmin."""
    q = _clamped(layer)
    nxt = q if layer.lut is None else layer.lut[q - layer.out_q.qmin].astype(np.int64)
    return (nxt - next_q.qmin).astype(np.uint8), next_q.qmin


def _index_table(layer: IntLayer, lut: np.ndarray | None = None, qmin: int = 0) -> np.ndarray:
    """Head or logit layer: value -> quantized output - qmin (through `lut` if given)."""
    q = _clamped(layer)
    if lut is None:
        return (q - layer.out_q.qmin).astype(np.uint8)
    return (lut[q - layer.out_q.qmin].astype(np.int64) - qmin).astype(np.uint8)


def _encoder_arrays(score: ScoreModel) -> list[tuple[str, _LayerArrays]]:
    enc = score.encoder
    out = []
    for i, layer in enumerate(enc.body):
        next_q = (enc.body[i + 1] if i + 1 < len(enc.body) else enc.mu).in_q
        table, offset = _hidden_table(layer, next_q)
        out.append((f"enc_l{i}", layer_arrays(layer, table, offset, f"{enc.source}: {layer.name}")))
    for name, head in (("enc_mu", enc.mu), ("enc_logvar", enc.logvar)):
        out.append((name, layer_arrays(head, _index_table(head), 0, f"{enc.source}: {head.name}")))
    return out


def _buffers(score: ScoreModel, enc: list[_LayerArrays], dec: list[_LayerArrays]) -> list[int]:
    """int16 values per activation buffer: layer i reads buffer i % 2 (encoder and decoder
    alike; the heads read the body's output); the logit bytes go to buffer len(dec) % 2."""
    size = [0, 0]
    body = len(enc) - 2
    for i, a in enumerate(enc[:body] + dec):
        index = i if i < body else i - body
        size[index % 2] = max(size[index % 2], a.in_padded)
    size[body % 2] = max(size[body % 2], enc[body].in_padded)
    d = score.decoder.output_dim
    size[len(dec) % 2] = max(size[len(dec) % 2], _ceil((d + 1) // 2, 4))
    return size


def _tables_source(score: ScoreModel) -> str:
    t = score.tables
    parts = [
        "/* pixel p -> the encoder's quantized input, QuantizeLinear(float32(p) / 255) */\n",
        c_array("int16_t", "edgevae_pixel_input", score.encoder.pixel_input, "{}", 16),
        "/* quantized mu - qmin -> the decoder's quantized input (DequantizeLinear, then the\n"
        "   decoder's QuantizeLinear, in float32 as onnxruntime runs the two models) */\n",
        c_array("edgevae_zq_t", "edgevae_mu_to_zq", t.mu_to_zq, "{}", 16),
        f"/* KL terms in units of 2^-{t.kl_frac_bits} nats: 0.5 * mu^2 and "
        "0.5 * (exp(lv) - 1 - lv) */\n",
        c_array("int32_t", "edgevae_kl_mu", t.kl_mu, "{}", 8),
        c_array("int32_t", "edgevae_kl_logvar", t.kl_logvar, "{}", 8),
    ]
    if t.likelihood == "bernoulli":
        parts += [
            f"/* softplus(logit) in units of 2^-{t.softplus_frac_bits} nats */\n",
            c_array("int32_t", "edgevae_softplus", t.softplus, "{}", 8),
            f"/* -logit / 255 in units of 2^-{t.frac_bits} nats (times the pixel value) */\n",
            c_array("int32_t", "edgevae_neg_logit", t.neg_logit, "{}", 8),
        ]
        if score.kind == "excess":
            parts += [
                f"/* pixel p -> H(p / 255) = -x log x - (1 - x) log(1 - x), x = p / 255, in "
                f"units of 2^-{t.entropy_frac_bits} nats:\n   the excess score's floor */\n",
                c_array("int32_t", "edgevae_entropy", t.entropy, "{}", 8),
            ]
    else:
        parts += [
            "/* sigmoid(logit) in 1/256 grey levels */\n",
            c_array("uint16_t", "edgevae_gauss_mean", t.gauss_mean, "{}", 16),
            f"/* 0.5 * exp(-logvar_i) / 65280^2 in units of 2^-{t.frac_bits} nats */\n",
            c_array("uint32_t", "edgevae_gauss_weight", t.gauss_weight, "{}u", 8),
        ]
    return "".join(parts)


def _source(
    score: ScoreModel,
    enc: list[tuple[str, _LayerArrays]],
    last: str,
    logit: np.ndarray,
    last_arrays: _LayerArrays,
) -> str:
    """The source's score section: encoder layers, the logit layer, the score's tables."""
    parts = ["\n/* ---- encoder and anomaly score (edgevae firmware --score) ---- */\n\n"]
    structs = []
    for name, a in enc:
        head = name in ("enc_mu", "enc_logvar")
        what = "quantized output - qmin" if head else "next layer's input - table_offset"
        text, struct = layer_source(name, a, what)
        parts.append(text)
        structs.append(struct + ",\n")
    parts.append("const edgevae_layer_t edgevae_encoder_layers[EDGEVAE_ENC_NUM_LAYERS] = {\n")
    parts += [*structs, "};\n\n"]
    parts.append("/* the decoder's last layer again, to its quantized logit - qmin */\n")
    parts.append(c_array("uint8_t", "edgevae_logit_table", logit, "{}", 16))
    struct = layer_struct(last, last_arrays, "edgevae_logit_table")
    parts.append(f"const edgevae_layer_t edgevae_logit_layer =\n{struct};\n\n")
    parts.append(_tables_source(score))
    return "".join(parts)


def _header(score: ScoreModel, enc_layers: int, buffers: list[int]) -> str:
    enc, t = score.encoder, score.tables
    mu, lv = enc.mu.out_q, enc.logvar.out_q
    lines = [
        "",
        "/* ---- encoder and anomaly score (edgevae firmware --score) ---- */",
        "#define EDGEVAE_HAS_SCORE 1",
        f'#define EDGEVAE_ENCODER_SHA256 "{enc.sha256}"',
        f"#define EDGEVAE_ENC_NUM_LAYERS {enc_layers} /* hidden layers, then the two heads */",
        f"#define EDGEVAE_ENC_MACS {enc.macs}L",
        f"#define EDGEVAE_SCORE_MACS {enc.macs + score.decoder.macs}L /* encoder + decoder */",
        f"#define EDGEVAE_ACT0_PADDED {buffers[0]} /* activation buffers, int16 values */",
        f"#define EDGEVAE_ACT1_PADDED {buffers[1]}",
        "/* mu and logvar: real = (q - zero_point) * scale */",
    ]
    for name, q, ctype in (("MU", mu, "edgevae_muq_t"), ("LOGVAR", lv, "edgevae_lvq_t")):
        lines += [
            f"#define EDGEVAE_{name}_SCALE {c_float(q.scale)} /* {q.scale!r} */",
            f"#define EDGEVAE_{name}_ZERO_POINT {q.zero_point}",
            f"#define EDGEVAE_{name}_QMIN {q.qmin}",
            f"typedef {'int8_t' if q.signed else 'uint8_t'} {ctype};",
        ]
    gaussian = int(t.likelihood == "gaussian")
    excess = int(score.kind == "excess")
    floor = "the constant EDGEVAE_GAUSS_CONST" if gaussian else "sum H(p_i / 255), edgevae_entropy"
    lines += [
        f"/* the score edgevae_score computes: {score.kind} (runtime score {score.kind!r}) */",
        f"#define EDGEVAE_SCORE_KIND_EXCESS {excess} /* 1: excess = elbo - the least "
        f"-log p(x|z) of any decoder ({floor}); 0: elbo */",
        f"#define EDGEVAE_LIKELIHOOD_GAUSSIAN {gaussian} /* else Bernoulli */",
        f"#define EDGEVAE_SCORE_FRAC_BITS {t.frac_bits} /* fixed point: 2^-{t.frac_bits} nats */",
        f"#define EDGEVAE_SCORE_UNIT {c_float(2.0**-t.frac_bits)}",
        f"#define EDGEVAE_KL_UNIT {c_float(2.0**-t.kl_frac_bits)}",
        f"#define EDGEVAE_KL_SHIFT {t.frac_bits - t.kl_frac_bits}",
        f"#define EDGEVAE_SOFTPLUS_SHIFT {0 if gaussian else t.frac_bits - t.softplus_frac_bits}",
        f"#define EDGEVAE_GAUSS_CONST ((int64_t){t.gauss_const}LL) "
        "/* sum 0.5 * (log 2 pi + lv_i), Gaussian */",
    ]
    if excess and not gaussian:
        lines.append(f"#define EDGEVAE_ENTROPY_SHIFT {t.frac_bits - t.entropy_frac_bits}")
    if score.threshold is not None:
        lines.append(
            f"#define EDGEVAE_THRESHOLD_NATS {c_float(score.threshold)} "
            f"/* {score.threshold!r} nats: the manifest's threshold (score {score.kind}); flag "
            "the image when score > threshold */"
        )
    else:
        lines.append(f"/* no EDGEVAE_THRESHOLD_NATS: {c_comment(score.threshold_note)} */")
    lines += [
        "",
        "extern const edgevae_layer_t edgevae_encoder_layers[EDGEVAE_ENC_NUM_LAYERS];",
        "extern const edgevae_layer_t edgevae_logit_layer;",
        "extern const int16_t edgevae_pixel_input[256];",
        "extern const edgevae_zq_t edgevae_mu_to_zq[256];",
        "extern const int32_t edgevae_kl_mu[256];",
        "extern const int32_t edgevae_kl_logvar[256];",
    ]
    if gaussian:
        lines += [
            "extern const uint16_t edgevae_gauss_mean[256];",
            "extern const uint32_t edgevae_gauss_weight[EDGEVAE_OUTPUT_DIM];",
        ]
    else:
        lines += [
            "extern const int32_t edgevae_softplus[256];",
            "extern const int32_t edgevae_neg_logit[256];",
        ]
        if excess:
            lines.append("extern const int32_t edgevae_entropy[256];")
    return "\n".join(lines) + "\n"


def _table_bytes(score: ScoreModel) -> int:
    t = score.tables
    size = 2 * 256 + 256 + 2 * 4 * 256  # pixel input, mu -> zq, KL
    if t.likelihood == "bernoulli":
        return size + (3 if score.kind == "excess" else 2) * 4 * 256
    return size + 2 * 256 + 4 * score.decoder.output_dim


def generate_score_firmware(score: ScoreModel, out_dir, *, command: str) -> FirmwareReport:
    """Write edgevae_weights.h/.c with the decoder, the encoder and the score's tables."""
    dec = score.decoder
    arrays = decoder_arrays(dec)
    enc = _encoder_arrays(score)
    last = len(arrays) - 1
    logit = _index_table(dec.layers[-1], dec.logit_lut, dec.logit_q.qmin)
    buffers = _buffers(score, [a for _, a in enc], arrays)
    files = write_weights(
        dec,
        arrays,
        out_dir,
        command=command,
        also=((score.encoder.source, score.encoder.sha256),),
        header_extra=_header(score, len(enc), buffers),
        source_extra=_source(score, enc, f"l{last}", logit, arrays[last]),
    )
    flash = (
        sum(a.flash_bytes for a in arrays)
        + sum(a.flash_bytes for _, a in enc)
        + TABLE_SIZE
        + LAYER_STRUCT_BYTES
        + _table_bytes(score)
        + 256  # provenance string
    )
    ram = 2 * (buffers[0] + buffers[1])
    result = report(dec, arrays, files, flash, ram, SCORE_KERNEL_CODE_BUDGET)
    fitting = [name for name, ok in result.fits.items() if ok]
    result.suggestion = (
        f"encoder + decoder + score tables fit a {fitting[0]} flash part"
        if fitting
        else "encoder + decoder + score tables do not fit 1 MB of flash; train a smaller model"
    )
    result.score = {
        "encoder": score.encoder.source,
        "encoder_sha256": score.encoder.sha256,
        "encoder_layers": [layer_dict(a) for _, a in enc],
        "macs": score.encoder.macs + dec.macs,
        "likelihood": score.likelihood,
        "kind": score.kind,
        "threshold_nats": score.threshold,
        "threshold_note": score.threshold_note,
        "frac_bits": score.tables.frac_bits,
    }
    result.notes.extend(score.encoder.notes)
    return result
