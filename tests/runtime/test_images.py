"""PNG grids: sizes per command, grayscale, byte-for-byte reproducible, and non-square images.

A tile is H+2 by W+2 pixels (2 px black padding) plus a 2 px border: n columns are n*(W+2)+2.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgevae.cli import main
from edgevae.errors import UsageError
from edgevae.runtime import images


def _png(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im


def _run(capsys, *args: str) -> str:
    code = main(list(args))
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert cap.err == ""
    return cap.out


def _digits_npy(path: Path, n: int = 100) -> Path:
    rng = np.random.default_rng(3)
    np.save(path, (rng.random((n, 28, 28)) * 255).astype(np.uint8))
    return path


# --------------------------------------------------------------------------- per command


@pytest.mark.parametrize(
    ("extra", "size"),
    [
        (["--n", "16"], (4 * 28 + 5 * 2, 4 * 28 + 5 * 2)),  # 122 square
        (["--n", "10", "--nrow", "5"], (5 * 30 + 2, 2 * 30 + 2)),
        (["--n", "1"], (32, 32)),
        (["--n", "5"], (3 * 30 + 2, 2 * 30 + 2)),  # ceil(sqrt(5)) = 3 per row
        (["--n", "4", "--precision", "fp32", "--temperature", "0.5"], (62, 62)),
    ],
)
def test_sample_grid_size(tiny_export, tmp_path, capsys, extra, size):
    out = tmp_path / "s.png"
    stdout = _run(capsys, "sample", "--export-dir", str(tiny_export), "--out", str(out), *extra)
    im = _png(out)
    assert im.mode == "L"
    assert im.size == size
    assert f"({size[0]}x{size[1]} px)" in stdout


def test_sample_pixels_are_the_decoded_images(tiny_export, tmp_path, capsys):
    from edgevae.runtime.model import Model

    out = tmp_path / "s.png"
    _run(capsys, "sample", "--export-dir", str(tiny_export), "--n", "6", "--seed", "9",
         "--out", str(out))  # fmt: skip
    pic = np.asarray(_png(out))
    assert pic.shape == (2 * 30 + 2, 3 * 30 + 2)
    want = images.to_uint8(Model(tiny_export).sample(6, seed=9))
    for i in range(6):
        r, c = divmod(i, 3)
        y, x = 2 + r * 30, 2 + c * 30
        np.testing.assert_array_equal(pic[y : y + 28, x : x + 28], want[i])
    # Padding lines are black.
    assert (pic[:2] == 0).all() and (pic[:, :2] == 0).all() and (pic[30:32] == 0).all()


def test_manifold_grid_size(tiny_export, tmp_path, capsys):
    out = tmp_path / "m.png"
    _run(capsys, "manifold", "--export-dir", str(tiny_export), "--steps", "7", "--out", str(out))
    im = _png(out)
    assert im.mode == "L" and im.size == (7 * 30 + 2, 7 * 30 + 2)


def test_manifold_other_dims(tiny_export, tmp_path, capsys):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    e = str(tiny_export)
    _run(capsys, "manifold", "--export-dir", e, "--steps", "3", "--dims", "0,1", "--out", str(a))
    _run(capsys, "manifold", "--export-dir", e, "--steps", "3", "--dims", "2,3", "--out", str(b))
    assert _png(b).size == (92, 92)
    assert a.read_bytes() != b.read_bytes()
    code = main(["manifold", "--export-dir", e, "--dims", "0,4", "--out", str(tmp_path / "c.png")])
    err = capsys.readouterr().err
    assert code == 2 and "--dims: must be two different dims in 0..3" in err
    code = main(["manifold", "--export-dir", e, "--dims", "1", "--out", str(tmp_path / "c.png")])
    err = capsys.readouterr().err
    assert code == 2 and "exactly two latent dims" in err
    assert not (tmp_path / "c.png").exists()


def test_reconstruct_two_rows_originals_on_top(tiny_export, tmp_path, capsys):
    from edgevae.data.core import load_images

    data = _digits_npy(tmp_path / "d.npy")
    out = tmp_path / "r.png"
    _run(capsys, "reconstruct", "--export-dir", str(tiny_export), "--data", str(data),
         "--n", "8", "--out", str(out))  # fmt: skip
    im = _png(out)
    assert im.mode == "L" and im.size == (8 * 30 + 2, 2 * 30 + 2)
    pic = np.asarray(im)
    x, _ = load_images(str(data), split="test", seed=0)
    top = images.to_uint8(x[:8].reshape(8, 28, 28))
    for i in range(8):
        np.testing.assert_array_equal(pic[2:30, 2 + i * 30 : 30 + i * 30], top[i])


def test_interpolate_one_row(tiny_export, tmp_path, capsys):
    data = _digits_npy(tmp_path / "d.npy")
    out = tmp_path / "i.png"
    _run(capsys, "interpolate", "--export-dir", str(tiny_export), "--data", str(data),
         "--a", "0", "--b", "3", "--steps", "6", "--out", str(out))  # fmt: skip
    im = _png(out)
    assert im.mode == "L" and im.size == (6 * 30 + 2, 32)
    code = main(["interpolate", "--export-dir", str(tiny_export), "--data", str(data),
                 "--b", "10", "--out", str(tmp_path / "j.png")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--b: 10 is past the last test image (9)" in err
    assert not (tmp_path / "j.png").exists()


def test_same_seed_same_bytes_other_seed_other_bytes(tiny_export, tmp_path, capsys):
    e = str(tiny_export)
    paths = [tmp_path / f"{k}.png" for k in ("a", "b", "c")]
    for path, seed in zip(paths, ("1", "1", "2"), strict=True):
        _run(capsys, "sample", "--export-dir", e, "--n", "9", "--seed", seed, "--out", str(path))
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b
    assert a != c
    assert np.asarray(_png(paths[0])).shape == np.asarray(_png(paths[2])).shape == (92, 92)


def test_decode_png_grid(tiny_export, tmp_path, capsys):
    np.save(tmp_path / "z.npy", np.zeros((5, 4), np.float32))
    out = tmp_path / "d.png"
    _run(capsys, "decode", "--export-dir", str(tiny_export), "--z", str(tmp_path / "z.npy"),
         "--out", str(out))  # fmt: skip
    pic = np.asarray(_png(out))
    assert pic.shape == (62, 92)
    # Five identical latents give five identical tiles.
    tiles = [pic[2:30, 2 + i * 30 : 30 + i * 30] for i in range(3)]
    assert all(np.array_equal(tiles[0], t) for t in tiles)


# --------------------------------------------------------------------------- images module


def test_to_uint8_clips_and_rounds():
    got = images.to_uint8(np.array([-1.0, 0.0, 0.5, 1.0, 2.0, np.float32(1 / 255)]))
    assert got.dtype == np.uint8
    assert got.tolist() == [0, 0, 128, 255, 255, 1]  # 127.5 rounds half to even: 128


def test_grid_layout_and_padding():
    stack = np.stack([np.full((3, 2), v, np.uint8) for v in (10, 20, 30)])
    pic = images.grid(stack, nrow=2)
    assert pic.shape == (2 * 5 + 2, 2 * 4 + 2)
    assert (pic[2:5, 2:4] == 10).all() and (pic[2:5, 6:8] == 20).all()
    assert (pic[7:10, 2:4] == 30).all()
    assert (pic[7:10, 6:8] == 0).all()  # the missing 4th tile stays black
    assert int(pic.sum()) == 6 * (10 + 20 + 30)
    assert images.grid(stack).shape == pic.shape  # default: ceil(sqrt(3)) = 2 per row
    assert images.grid(stack, nrow=3, pad=0).shape == (3, 6)


@pytest.mark.parametrize(
    ("stack", "nrow", "match"),
    [
        (np.zeros((0, 4, 4)), None, "non-empty"),
        (np.zeros((4, 4)), None, "non-empty"),
        (np.zeros((2, 4, 4)), 0, "nrow: must be >= 1, got 0"),
        (np.zeros((2, 4, 4)), -2, "nrow: must be >= 1"),
    ],
)
def test_grid_errors(stack, nrow, match):
    with pytest.raises(UsageError, match=match):
        images.grid(stack, nrow)


def test_png_bytes_are_plain_grayscale(tmp_path):
    pic = np.arange(60, dtype=np.uint8).reshape(6, 10)
    data = images.png_bytes(pic)
    assert data == images.png_bytes(pic.copy())
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "L" and im.size == (10, 6)
        np.testing.assert_array_equal(np.asarray(im), pic)
        assert not {"tIME", "date:create"} & set(im.info)
    with pytest.raises(UsageError, match="should end in .png"):
        images.save_png(tmp_path / "x.PNG.jpg", pic)
    images.save_png(tmp_path / "sub" / "x.PNG", pic)
    assert (tmp_path / "sub" / "x.PNG").read_bytes() == data
    assert not (tmp_path / "x.PNG.jpg").exists()


# --------------------------------------------------------------------------- 28x20 (Frey-shaped)


def _frey_export(root: Path, export_dir: Path):
    """A tiny run on synthetic 28x20 uint8 faces, exported to fp32 ONNX (no quantization)."""
    from edgevae.config import ModelConfig, TrainConfig
    from edgevae.training.export import export_run
    from edgevae.training.loop import train

    rng = np.random.default_rng(0)
    base = rng.random((1, 28, 20))
    faces = np.clip(base + 0.2 * rng.standard_normal((200, 28, 20)), 0, 1)
    np.save(root / "faces.npy", (faces * 255).astype(np.uint8))
    cfg = ModelConfig(560, (28, 20), hidden=[16], latent_dim=2)
    run = root / "run"
    tcfg = TrainConfig(epochs=1, batch_size=40, seed=0, threads=1, data=str(root / "faces.npy"))
    train(cfg, tcfg, run)
    results, man = export_run(run, export_dir)
    return export_dir, results, man


def test_frey_shaped_export_and_grids(tiny_export, tmp_path, capsys):
    """One test on purpose: the train + export it needs is built once even under xdist.

    It exports over a copy of the 28x28 session export, whose int8 models must not survive
    (they belong to another run and would otherwise be what `sample` serves).
    """
    import onnx

    shutil.copytree(tiny_export, tmp_path / "e")
    export_dir, results, man = _frey_export(tmp_path, tmp_path / "e")
    assert sorted(p.name for p in export_dir.iterdir()) == [
        "decoder.fp32.onnx",
        "encoder.fp32.onnx",
        "heldout.npy",
        "manifest.json",
    ]

    # export_run's own parity check and the 28x20 shape all the way through.
    assert [p.name for p in results] == ["encoder.fp32.onnx", "decoder.fp32.onnx"]
    assert all(p.ok and p.n == 1000 for p in results)
    assert all(d <= 1e-4 for p in results for d in p.max_abs_diff.values())
    assert man["image_shape"] == [28, 20] and man["latent_dim"] == 2
    assert man["model"]["input_dim"] == 560
    assert set(man["files"]) == {"encoder.fp32.onnx", "decoder.fp32.onnx"}
    assert "quantization" not in man
    for name in man["files"]:
        meta = {p.key: p.value for p in onnx.load(str(export_dir / name)).metadata_props}
        assert meta["edgevae.image_shape"] == "28,20"
        assert meta["edgevae.latent_dim"] == "2"

    # Sample grid of 28x20 tiles: width from W=20, height from H=28.
    out = tmp_path / "f.png"
    _run(capsys, "sample", "--export-dir", str(export_dir), "--precision", "fp32", "--n", "6",
         "--out", str(out))  # fmt: skip
    im = _png(out)
    assert im.mode == "L"
    assert im.size == (3 * (20 + 2) + 2, 2 * (28 + 2) + 2)
    pic = np.asarray(im)
    assert (pic[:, 22:24] == 0).all() and (pic[30:32, :] == 0).all()  # padding between tiles
    assert pic[2:30, 2:22].any()  # a decoded face, not padding
    m = tmp_path / "m.png"
    _run(capsys, "manifold", "--export-dir", str(export_dir), "--precision", "fp32",
         "--steps", "3", "--out", str(m))  # fmt: skip
    assert _png(m).size == (3 * 22 + 2, 3 * 30 + 2)

    # Not quantized yet: the default int8 precision says which file is missing.
    out = tmp_path / "g.png"
    code = main(["sample", "--export-dir", str(export_dir), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "decoder.int8.onnx: no such model file" in err
    assert not out.exists()
