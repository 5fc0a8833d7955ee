"""`edgevae parity`: the same seeded z through every decoder we ship, side by side.

Rows (each followed by its amplified |difference vs ORT fp32| map): torch fp32 (when torch is
installed and the run dir exists), ORT fp32, ORT int8, ORT int8 static and ORT int4 static (the
firmware's graphs, 8- and 4-bit decoder) and, when its path is given, the C firmware host
binary (`edgevae firmware` prints the `cc` line that builds it), which must equal one of the
two static rows exactly. Differences are in 8-bit pixel units (0-255), after each decoder's output
is rounded to pixels as `images.to_uint8` does; the firmware binary prints pixels itself.

A conditional model decodes column i's z with class i mod C (classes 0, 1, 2, ... across the
picture), in every row, so every decoder gets the same (z, label) pairs; the firmware host
program then reads the class index after the z values on each line.

Torch-free at import: torch is imported only for the torch row.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError, one_line
from ..runtime import images
from ..runtime.generate import prior_z
from ..runtime.labels import cycle_one_hot
from ..runtime.model import Model

LABEL_WIDTH = 64
AMPLIFY = 10.0
FIRMWARE_TIMEOUT_S = 60
STATIC_ROWS = {"ORT int8 static": "firmware", "ORT int4 static": "int4"}  # row -> precision
SHORT = {"ORT int8 static": "int8 static", "ORT int4 static": "int4 static"}  # fit LABEL_WIDTH


@dataclass
class ParityRow:
    name: str
    status: str  # ok | skipped | failed
    note: str = ""
    max_abs_px: float | None = None
    mean_abs_px: float | None = None
    # The firmware must reproduce ORT's integer-only graph exactly: its difference to the
    # static row it is closest to (`vs_static`: the 8-bit or the 4-bit decoder's).
    max_abs_vs_static_px: float | None = None
    exact_vs_static: bool | None = None
    vs_static: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def picture_size(n: int, image_shape: tuple[int, int], rows: int, labels: bool = True):
    """(height, width) of `parity_grid`'s picture: each decoder row is followed by its diff row."""
    h, w = image_shape
    pad = images.PAD
    return 2 * rows * (h + pad) + pad, n * (w + pad) + pad + (LABEL_WIDTH if labels else 0)


def firmware_decode(
    binary: Path, z: np.ndarray, out_dim: int, labels: np.ndarray | None = None
) -> np.ndarray:
    """Run the firmware host binary: z lines on stdin (a conditional decoder's each starting
    with the class index), out_dim grey levels per line back."""
    starts = [""] * len(z) if labels is None else [f"{int(c)} " for c in labels]
    text = "".join(
        start + " ".join(f"{v:.9g}" for v in row) + "\n"
        for row, start in zip(z, starts, strict=True)
    )
    try:
        proc = subprocess.run(
            [str(binary)],
            input=text,
            capture_output=True,
            text=True,
            timeout=FIRMWARE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"cannot run {binary}: {exc}") from None
    if proc.returncode != 0:
        msg = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise RuntimeError(f"{binary}: {msg[:200]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if len(lines) != len(z):
        raise RuntimeError(f"{binary} printed {len(lines)} lines for {len(z)} z vectors")
    try:
        px = np.array([[int(v) for v in ln.split()] for ln in lines], dtype=np.int64)
    except ValueError:
        raise RuntimeError(f"{binary} printed something other than integers") from None
    if px.ndim != 2 or px.shape[1] != out_dim:
        got = px.shape[1] if px.ndim == 2 else "ragged"
        raise RuntimeError(
            f"{binary} prints {got} values per line, the export has {out_dim} pixels "
            "(built for another model? regenerate its weights from this export)"
        )
    if px.min() < 0 or px.max() > 255:
        raise RuntimeError(f"{binary} printed values outside 0..255")
    return px.astype(np.uint8)


def torch_row_skip(run: Path | None, hint: str = "") -> str | None:
    """Why a torch fp32 row cannot run (torch not installed, no run dir), or None if it can.

    Asked with find_spec, not an import: torch is optional (the device has none) and slow to
    import. `edgevae bench` asks the same for its torch row."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    if run is None or not run.is_dir():
        return f"run dir {run or '(none in manifest)'} not found{hint}"
    return None


def _torch_pixels(run_dir: Path, z: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    from ..training.evaluate import decode_mean, load_model

    model, _ = load_model(run_dir)
    return images.to_uint8(decode_mean(model, z, y))


def _label(picture: np.ndarray, texts: list[tuple[int, str]]) -> np.ndarray:
    """Prepend a black margin with white labels at the given y positions."""
    margin = np.zeros((picture.shape[0], LABEL_WIDTH), dtype=np.uint8)
    margin = images.draw_text(margin, [(2, y, text) for y, text in texts])
    return np.concatenate([margin, picture], axis=1)


FIRMWARE_HINT = "`edgevae firmware` prints the cc line that builds the host decoder"


class _Decoded:
    """The rows tried so far, and the pixels of those that ran (in picture order)."""

    def __init__(self) -> None:
        self.rows: list[ParityRow] = []
        self.pixels: list[tuple[ParityRow, np.ndarray]] = []

    def add(self, row: ParityRow, px: np.ndarray | None = None) -> None:
        self.rows.append(row)
        if px is not None:
            self.pixels.append((row, px))

    def attempt(self, name: str, decode: Callable[[], np.ndarray], note: str = "") -> None:
        """Every decoder but the reference is optional: a failure is a row, not an error."""
        try:
            px = decode()
        except Exception as exc:
            self.add(ParityRow(name, "failed", one_line(exc)))
            return
        self.add(ParityRow(name, "ok", note), px)


def parity_grid(
    export_dir: Path = Path("export"),
    *,
    n: int = 8,
    seed: int = 0,
    firmware: Path | None = None,
    run_dir: Path | None = None,
    torch_row: bool = True,
    amplify: float = AMPLIFY,
    labels: bool = True,
) -> tuple[np.ndarray, list[ParityRow]]:
    """The parity picture (uint8 [H, W]) and one ParityRow per decoder tried.

    Picture rows are the decoders that ran, in the order torch fp32, ORT fp32, ORT int8,
    ORT int8 static, ORT int4 static, firmware; each is followed by |pixels - ORT fp32
    pixels| * amplify, clipped to 255 (the ORT fp32 row's map is black by definition).
    `picture_size` gives its shape. The firmware row runs the host binary at `firmware`; None
    skips it with a note."""
    if n < 1:
        raise UsageError(f"must be >= 1, got {n}", param="n")
    if not amplify > 0:
        raise UsageError(f"must be > 0, got {amplify}", param="amplify")
    export_dir = Path(export_dir)
    fp32 = Model(export_dir, "fp32")
    z = _Latents(prior_z(n, fp32.latent_dim, seed), len(fp32.classes))
    decoded = _Decoded()
    if torch_row:
        _torch_row(decoded, fp32.manifest, run_dir, z)
    ref = images.to_uint8(fp32.decode(z.z, z.labels))
    decoded.add(ParityRow("ORT fp32", "ok", "reference"), ref)
    _ort_rows(decoded, export_dir, z)
    _firmware_row(decoded, firmware, z, fp32.input_dim)
    tiles = _compare(decoded, ref, amplify, n, fp32.image_shape)
    picture = images.grid(np.concatenate(tiles), nrow=n)
    if labels:
        picture = _label(picture, _label_texts(decoded, fp32.image_shape[0], amplify))
    return picture, decoded.rows


@dataclass(frozen=True)
class _Latents:
    """The seeded z every decoder gets, with a conditional model's labels (class i mod C for
    column i; None for an unconditional model) as positions and as one-hot rows."""

    z: np.ndarray
    n_classes: int

    @property
    def labels(self) -> np.ndarray | None:
        return np.arange(len(self.z)) % self.n_classes if self.n_classes else None

    @property
    def y(self) -> np.ndarray | None:
        return cycle_one_hot(len(self.z), self.n_classes)


def _torch_row(decoded: _Decoded, man: dict[str, Any], run_dir: Path | None, z: _Latents) -> None:
    run = run_dir if run_dir is not None else Path(str(man.get("run_dir") or ""))
    skip = torch_row_skip(run)
    if skip:
        decoded.add(ParityRow("torch fp32", "skipped", skip))
    else:
        decoded.attempt("torch fp32", lambda: _torch_pixels(run, z.z, z.y), f"run dir {run}")


def _ort_rows(decoded: _Decoded, export_dir: Path, z: _Latents) -> None:
    """ORT int8 (the export's chosen recipe) and the firmware's graphs (8- and 4-bit decoder)."""
    for name, precision in (("ORT int8", "int8"), *STATIC_ROWS.items()):
        model = Model(export_dir, precision)
        path = model.path("decoder")
        if precision != "int8" and not path.exists():  # an export quantized before it existed
            decoded.add(ParityRow(name, "skipped", f"no {path.name} (`quantize` writes it)"))
            continue
        decoded.attempt(name, lambda m=model: images.to_uint8(m.decode(z.z, z.labels)), path.name)


def _firmware_row(decoded: _Decoded, firmware: Path | None, z: _Latents, dim: int) -> None:
    name = "C firmware"
    if firmware is None:
        decoded.add(ParityRow(name, "skipped", f"no host binary given ({FIRMWARE_HINT})"))
    elif not Path(firmware).is_file():
        decoded.add(ParityRow(name, "skipped", f"{firmware} not found ({FIRMWARE_HINT})"))
    else:
        decoded.attempt(
            name, lambda: firmware_decode(Path(firmware), z.z, dim, z.labels), str(firmware)
        )


def _compare(
    decoded: _Decoded, ref: np.ndarray, amplify: float, n: int, shape: tuple[int, int]
) -> list[np.ndarray]:
    """Fill each row's differences (the firmware's also against the closer static row) and
    return the picture's tiles: each decoder's images, then its amplified |difference| map."""
    statics = {r.name: px.astype(np.int16) for r, px in decoded.pixels if r.name in STATIC_ROWS}
    tiles = []
    for row, px in decoded.pixels:
        diff = np.abs(px.astype(np.int16) - ref.astype(np.int16))
        row.max_abs_px, row.mean_abs_px = float(diff.max()), float(diff.mean())
        if row.name == "C firmware" and statics:
            gaps = {name: int(np.abs(px.astype(np.int16) - s).max()) for name, s in statics.items()}
            row.vs_static = min(gaps, key=gaps.__getitem__)  # the 8-bit row on a tie
            row.max_abs_vs_static_px = float(gaps[row.vs_static])
            row.exact_vs_static = gaps[row.vs_static] == 0
        amp = np.clip(np.rint(diff * amplify), 0, 255).astype(np.uint8)
        tiles += [px.reshape(n, *shape), amp.reshape(n, *shape)]
    return tiles


def _label_texts(decoded: _Decoded, h: int, amplify: float) -> list[tuple[int, str]]:
    """(y, text) of each picture row's label, vertically centred on the row."""
    pad = images.PAD
    texts = []
    for i, (row, _) in enumerate(decoded.pixels):
        y = pad + 2 * i * (h + pad)
        texts.append((y + max(0, h // 2 - 6), SHORT.get(row.name, row.name)))
        texts.append((y + h + pad + max(0, h // 2 - 6), f"|diff| x{amplify:g}"))
    return texts
