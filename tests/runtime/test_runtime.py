"""The torch-free runtime: what it imports, what it computes, and how it refuses bad input.

Model files are only ever mutated in copies of the session export under tmp_path.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from edgevae.cli import main
from edgevae.errors import ModelFileError, UsageError
from edgevae.runtime import generate
from edgevae.runtime.model import Model

# --------------------------------------------------------------------------- helpers


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _assert_one_line_error(err: str) -> None:
    assert err.startswith("error: "), err
    assert err.strip().count("\n") == 0, err
    assert "Traceback" not in err


@pytest.fixture
def exp(tiny_export, tmp_path) -> Path:
    dst = tmp_path / "e"
    shutil.copytree(tiny_export, dst)
    return dst


def _images_npy(path: Path, n: int = 100, shape=(28, 28), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.save(path, (rng.random((n, *shape)) * 255).astype(np.uint8))
    return path


def _run_python(code: str, cwd: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- torch-free


def test_runtime_modules_and_sample_do_not_import_torch_or_onnx(tiny_export, tmp_path):
    """The device path (runtime, onnxio, firmware) runs on numpy + onnxruntime + protobuf:
    no torch, no onnx and no ml_dtypes (onnx's dependency, ~0.5 s to import)."""
    out = tmp_path / "s.png"
    code = textwrap.dedent(
        f"""
        import json, sys
        import edgevae.runtime.session, edgevae.runtime.generate, edgevae.runtime.images
        import edgevae.cli.runtime
        import edgevae.runtime.manifest, edgevae.runtime.model, edgevae.runtime.heldout
        import edgevae.runtime.score, edgevae.runtime.anomaly, edgevae.cli.anomaly
        import edgevae.bench.anomaly, edgevae.bench.run, edgevae.api, edgevae.training.runconfig
        import edgevae.onnxio.vet, edgevae.onnxio.graph, edgevae.onnxio.proto
        import edgevae.firmware.qdq, edgevae.firmware.codegen
        from edgevae.cli import main
        rc = main(["sample", "--export-dir", {str(tiny_export)!r}, "--n", "4",
                   "--out", {str(out)!r}])
        rc += main(["score", "--export-dir", {str(tiny_export)!r},
                    "--out", {str(tmp_path / "s.csv")!r}])
        edgevae.firmware.qdq.read_qdq_chain({str(tiny_export / "decoder.int8.static.onnx")!r})
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx",
                       "onnxscript", "safetensors", "scipy", "ml_dtypes"))
        print(json.dumps({{"rc": rc, "heavy": heavy,
                           "torch": "torch" in sys.modules, "onnx": "onnx" in sys.modules}}))
        """
    )
    res = _run_python(code, tmp_path)
    assert res["rc"] == 0
    assert res["torch"] is False and res["onnx"] is False
    assert res["heavy"] == []
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


BLOCKER = """
import importlib.abc, sys
class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnx"):
            raise ImportError(f"{name} is not installed on this device")
        return None
sys.meta_path.insert(0, _Blocker())
for blocked in ("torch", "onnx"):
    try:
        __import__(blocked)
    except ImportError:
        pass
    else:
        raise SystemExit(f"blocker failed for {blocked}")
"""


def test_every_runtime_command_works_without_torch_and_onnx(tiny_export, tmp_path):
    data = _images_npy(tmp_path / "digits.npy")
    e = str(tiny_export)
    cmds = {
        "sample": ["sample", "--export-dir", e, "--n", "4", "--out", "s.png"],
        "reconstruct": ["reconstruct", "--export-dir", e, "--data", str(data), "--n", "8",
                        "--out", "r.png"],
        "manifold": ["manifold", "--export-dir", e, "--steps", "3", "--out", "m.png"],
        "interpolate": ["interpolate", "--export-dir", e, "--data", str(data), "--steps", "3",
                        "--out", "i.png"],
        "encode": ["encode", "--export-dir", e, "--data", str(data), "--out", "z.npy"],
        "decode": ["decode", "--export-dir", e, "--z", "z.npy", "--out", "d.npy"],
        "decode_fp32": ["decode", "--export-dir", e, "--z", "z.npy", "--out", "d.png",
                        "--precision", "fp32"],
    }  # fmt: skip
    code = BLOCKER + textwrap.dedent(
        f"""
        import json
        from edgevae.cli import main
        cmds = {cmds!r}
        rcs = {{name: main(args) for name, args in cmds.items()}}
        print(json.dumps({{"rcs": rcs, "torch": "torch" in sys.modules,
                           "onnx": "onnx" in sys.modules}}))
        """
    )
    res = _run_python(code, tmp_path)
    assert res["rcs"] == {name: 0 for name in cmds}
    assert res["torch"] is False and res["onnx"] is False
    for name in ("s.png", "r.png", "m.png", "i.png", "d.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG", name
    z = np.load(tmp_path / "z.npy")
    assert z.shape == (10, 4) and z.dtype == np.float32  # the 10% test split of 100 images
    d = np.load(tmp_path / "d.npy")
    assert d.shape == (10, 784) and ((d >= 0) & (d <= 1)).all()
    # The subprocess computed what this process computes.
    m = Model(tiny_export, "int8")
    np.testing.assert_allclose(d, m.decode(z), atol=1e-6)


# --------------------------------------------------------------------------- Model


def test_exported_model_reads_manifest(tiny_export):
    m = Model(tiny_export)
    assert m.precision == "int8" and m.latent_dim == 4 and m.image_shape == (28, 28)
    assert m.input_dim == 784 and m.likelihood == "bernoulli" and m.gauss_logvar is None
    assert m.path("decoder") == tiny_export / "decoder.int8.onnx"
    assert m.decoder is m.decoder  # one session per process


def test_encode_decode_shapes_and_errors(tiny_export):
    m = Model(tiny_export, "fp32")
    x = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)
    mu, logvar = m.encode(x)
    assert mu.shape == logvar.shape == (3, 4)
    np.testing.assert_allclose(mu, m.encode(x.reshape(3, 784))[0])
    assert m.images(m.decode(mu)).shape == (3, 28, 28)
    with pytest.raises(UsageError, match="images have 100 pixels, the model expects 784"):
        m.encode(np.zeros((2, 100), np.float32))
    with pytest.raises(UsageError, match=r"z: must be \[N, 4\], got \[2, 3\]"):
        m.decode(np.zeros((2, 3), np.float32))
    with pytest.raises(UsageError, match=r"z: must be \[N, 4\], got \[4\]"):
        m.decode(np.zeros(4, np.float32))
    with pytest.raises(UsageError, match="NaN or Inf"):
        m.decode(np.full((1, 4), np.inf, np.float32))
    with pytest.raises(UsageError, match="precision: must be one of int8, fp32"):
        Model(tiny_export, "fp16")
    with pytest.raises(UsageError, match="threads: must be >= 1"):
        Model(tiny_export, "int8", threads=0)


def test_reconstruct_and_interpolate_stack_images(tiny_export):
    m = Model(tiny_export, "fp32")
    x = np.random.default_rng(1).random((5, 784), dtype=np.float32)
    out = m.reconstruct(x)
    assert out.shape == (5, 28, 28)
    np.testing.assert_allclose(out.reshape(5, -1), m.decode(m.encode(x)[0]), atol=1e-6)
    line = m.interpolate(x[0], x[1], steps=4)
    assert line.shape == (4, 28, 28)
    mu = m.encode(x[:2])[0]
    np.testing.assert_allclose(line[0].reshape(-1), m.decode(mu[:1])[0], atol=1e-6)
    np.testing.assert_allclose(line[-1].reshape(-1), m.decode(mu[1:2])[0], atol=1e-6)
    with pytest.raises(UsageError, match="steps: must be >= 2"):
        m.interpolate(x[0], x[1], steps=1)


# --------------------------------------------------------------------------- generate


def test_prior_z_temperature_scales_the_same_draws():
    base = generate.prior_z(50, 6, seed=7)
    assert base.shape == (50, 6) and base.dtype == np.float32
    np.testing.assert_array_equal(base, generate.prior_z(50, 6, seed=7))
    assert not np.array_equal(base, generate.prior_z(50, 6, seed=8))
    for t in (0.25, 0.7, 2.0):
        np.testing.assert_allclose(generate.prior_z(50, 6, seed=7, temperature=t), base * t,
                                   rtol=1e-6)  # fmt: skip
    big = generate.prior_z(20000, 2, seed=0, temperature=0.5)
    assert abs(big.std() - 0.5) < 0.01


@pytest.mark.parametrize(
    ("n", "t", "match"),
    [(0, 1.0, "n: must be >= 1"), (-3, 1.0, "n: must be >= 1"),
     (4, 0.0, "temperature: must be > 0"), (4, -1.0, "temperature: must be > 0"),
     (4, float("nan"), "temperature: must be > 0")],
)  # fmt: skip
def test_prior_z_validation(n, t, match):
    with pytest.raises(UsageError, match=match):
        generate.prior_z(n, 4, seed=0, temperature=t)


@pytest.mark.parametrize("steps", [2, 5, 20])
def test_manifold_z_grid(steps):
    z = generate.manifold_z(4, steps)
    assert z.shape == (steps * steps, 4) and z.dtype == np.float32
    assert np.isfinite(z).all()
    grid = z.reshape(steps, steps, 4)
    # Corners: finite, symmetric about 0; top-left is (low d0, high d1).
    q_max = grid[0, steps - 1, 0]
    assert q_max > 0 and np.isfinite(q_max)
    assert grid[0, 0, 0] == pytest.approx(-q_max) and grid[0, 0, 1] == pytest.approx(q_max)
    assert grid[-1, -1, 0] == pytest.approx(q_max) and grid[-1, -1, 1] == pytest.approx(-q_max)
    # Columns vary dim 0 increasingly, rows vary dim 1 decreasingly; others stay 0.
    assert (np.diff(grid[0, :, 0]) > 0).all() and (np.diff(grid[:, 0, 1]) < 0).all()
    np.testing.assert_allclose(grid[0, :, 0], -grid[0, ::-1, 0], atol=1e-6)
    assert (grid[:, :, 0] == grid[0:1, :, 0]).all() and (grid[:, :, 1] == grid[:, 0:1, 1]).all()
    assert (z[:, 2:] == 0).all()
    if steps == 2:
        assert q_max == pytest.approx(0.6744897, abs=1e-6)  # inv_cdf(0.75)


def test_manifold_z_other_dims_and_center():
    z = generate.manifold_z(5, 3, dims=(3, 1))
    grid = z.reshape(3, 3, 5)
    assert (grid[1, 1] == 0).all()  # odd steps: the centre is the origin
    assert (z[:, [0, 2, 4]] == 0).all()
    assert (np.diff(grid[0, :, 3]) > 0).all() and (np.diff(grid[:, 0, 1]) < 0).all()


@pytest.mark.parametrize(
    ("latent", "steps", "dims", "match"),
    [(4, 1, (0, 1), "steps: must be >= 2"), (1, 5, (0, 1), "at least 2 dims"),
     (4, 5, (1, 1), "dims: must be two different"), (4, 5, (0, 4), "dims: must be two"),
     (4, 5, (-1, 2), "dims: must be two")],
)  # fmt: skip
def test_manifold_z_validation(latent, steps, dims, match):
    with pytest.raises(UsageError, match=match):
        generate.manifold_z(latent, steps, dims)


# --------------------------------------------------------------------------- bad inputs (CLI)


def _sample(exp: Path, out: Path, *extra: str) -> list[str]:
    return ["sample", "--export-dir", str(exp), "--out", str(out), "--n", "4", *extra]


def _replace_model(exp: Path, mutate) -> None:
    path = exp / "decoder.int8.onnx"
    m = onnx.load(str(path))
    mutate(m)
    path.write_bytes(m.SerializeToString())


def _add_node(node):
    return lambda m: m.graph.node.append(node)


def _set_ir(version: int):
    def f(m):
        m.ir_version = version

    return f


def _set_domain(m):
    m.graph.node[0].domain = "evil.custom"


def _set_opset(m):
    m.opset_import[0].version = 99


def _extra_input(m):
    m.graph.input.append(helper.make_tensor_value_info("evil", onnx.TensorProto.FLOAT, [1]))
    m.graph.node.append(helper.make_node("Identity", ["evil"], ["evil_out"], name="id"))
    m.graph.output.append(helper.make_tensor_value_info("evil_out", onnx.TensorProto.FLOAT, [1]))


MUTATIONS = {
    "missing manifest": (lambda e: (e / "manifest.json").unlink(), r"manifest\.json: missing"),
    "corrupt manifest": (
        lambda e: (e / "manifest.json").write_text('{"latent_dim": 4, "image_'),
        r"manifest\.json: unreadable or not JSON",
    ),
    "missing model": (lambda e: (e / "decoder.int8.onnx").unlink(), "no such model file"),
    "truncated": (
        lambda e: (e / "decoder.int8.onnx").write_bytes(
            (e / "decoder.int8.onnx").read_bytes()[: (e / "decoder.int8.onnx").stat().st_size // 2]
        ),
        "truncated or not an ONNX model",
    ),
    "random bytes": (
        lambda e: (e / "decoder.int8.onnx").write_bytes(np.random.default_rng(0).bytes(70000)),
        "truncated or not an ONNX model",
    ),
    "custom domain": (
        lambda e: _replace_model(e, _set_domain),
        "node 'decoder.body.0.bias_DequantizeLinear' uses custom domain 'evil.custom'",
    ),
    "softmax": (
        lambda e: _replace_model(
            e, _add_node(helper.make_node("Softmax", ["x_mean"], ["p"], name="sm"))
        ),
        "node 'sm' has unexpected op Softmax",
    ),
    "encoder as decoder": (
        lambda e: shutil.copyfile(e / "encoder.int8.onnx", e / "decoder.int8.onnx"),
        "this is an encoder model, expected the decoder",
    ),
    "latent mismatch": (
        lambda e: (e / "manifest.json").write_text(
            json.dumps({**json.loads((e / "manifest.json").read_text()), "latent_dim": 5})
        ),
        r"input shape \['batch', 4\] does not match the manifest \(5 features\)",
    ),
    "image shape mismatch": (
        lambda e: (e / "manifest.json").write_text(
            json.dumps({**json.loads((e / "manifest.json").read_text()), "image_shape": [28, 20]})
        ),
        r"output shape \['batch', 784\] does not match the manifest \(560 features\)",
    ),
    "extra required input": (
        lambda e: _replace_model(e, _extra_input),
        r"requires inputs \['z', 'evil'\], the decoder takes \['z'\]",
    ),
    "ir too new": (lambda e: _replace_model(e, _set_ir(99)), "model IR version 99 is newer"),
    "opset too new": (lambda e: _replace_model(e, _set_opset), "opset 99 is not supported"),
}


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_broken_exports_give_one_line_errors(exp, tmp_path, capsys, case):
    mutate, needle = MUTATIONS[case]
    mutate(exp)
    out = tmp_path / "out" / "grid.png"
    code, stdout, err = _cli(capsys, *_sample(exp, out))
    assert code == 1, err
    _assert_one_line_error(err)
    assert re.search(needle, err), err
    assert not out.exists() and not out.parent.exists()
    assert "wrote" not in stdout


def test_missing_export_dir(tmp_path, capsys):
    out = tmp_path / "grid.png"
    code, _, err = _cli(capsys, *_sample(tmp_path / "nope", out))
    assert code == 1
    _assert_one_line_error(err)
    assert "no such export directory" in err
    assert not out.exists()


def test_loop_node_is_refused_by_name(exp, tmp_path, capsys):
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", onnx.TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("c_out", onnx.TensorProto.BOOL, [])],
    )
    _replace_model(exp, _add_node(helper.make_node("Loop", ["", ""], [], name="lp", body=body)))
    out = tmp_path / "grid.png"
    code, _, err = _cli(capsys, *_sample(exp, out))
    assert code == 1
    _assert_one_line_error(err)
    assert "node 'lp' has unexpected op Loop" in err
    assert not out.exists()


@pytest.mark.parametrize("location", ["../outside.bin", "decoder.int8.onnx.data"])
def test_external_data_models_are_refused(exp, tmp_path, capsys, location):
    m = onnx.load(str(exp / "decoder.fp32.onnx"))
    if location.startswith(".."):
        # onnx refuses to *write* '..' locations, so point the tensors there by hand.
        from onnx.external_data_helper import set_external_data

        blob = bytearray()
        for t in m.graph.initializer:
            set_external_data(t, location, offset=len(blob), length=len(t.raw_data))
            blob += t.raw_data
            t.ClearField("raw_data")
            t.data_location = onnx.TensorProto.EXTERNAL
        (exp.parent / "outside.bin").write_bytes(bytes(blob))
        (exp / "decoder.int8.onnx").write_bytes(m.SerializeToString())
    else:
        onnx.save_model(
            m, str(exp / "decoder.int8.onnx"), save_as_external_data=True, location=location,
            size_threshold=0,
        )  # fmt: skip
        assert (exp / location).exists()
    out = tmp_path / "grid.png"
    code, _, err = _cli(capsys, *_sample(exp, out))
    assert code == 1
    _assert_one_line_error(err)
    assert "is stored as external data" in err and "single-file models only" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--n", "0"], "'--n': 0 is not in the range 1<=x<=100000"),
        (["--n", "-3"], "'--n': -3 is not in the range 1<=x<=100000"),
        (["--nrow", "0"], "'--nrow': 0 is not in the range x>=1"),
        (["--temperature", "0"], "--temperature: must be > 0, got 0.0"),
        (
            ["--precision", "int2"],
            "'--precision': 'int2' is not one of 'int8', 'fp32', 'firmware', 'int4'",
        ),
        (["--threads", "0"], "'--threads': 0 is not in the range x>=1"),
    ],
)
def test_sample_usage_errors(tiny_export, tmp_path, capsys, extra, needle):
    out = tmp_path / "grid.png"
    code, _, err = _cli(capsys, *_sample(tiny_export, out), *extra)
    assert code == 2
    _assert_one_line_error(err)
    assert needle in err
    assert not out.exists()


def test_unwritable_outputs(tiny_export, tmp_path, capsys):
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    a_dir = tmp_path / "adir"
    a_dir.mkdir()
    cases = [
        (a_file / "grid.png", "is not a directory"),
        (a_dir, "is a directory, expected a file path"),
        (tmp_path / "x.jpg", "should end in .png"),
    ]
    for out, needle in cases:
        code, _, err = _cli(capsys, *_sample(tiny_export, out))
        assert code == 2, out
        _assert_one_line_error(err)
        assert needle in err
    # A parent *beyond* an existing file cannot be created: a runtime error, still one line.
    deep = a_file / "sub" / "grid.png"
    code, _, err = _cli(capsys, *_sample(tiny_export, deep))
    assert code in (1, 2)
    _assert_one_line_error(err)
    assert a_file.read_text() == "x" and sorted(p.name for p in a_dir.iterdir()) == []
    assert not (tmp_path / "x.jpg").exists()


def test_decode_refuses_pickled_npy(tiny_export, tmp_path, capsys):
    def evil_npy(path: Path, marker: Path) -> None:
        class Evil:
            def __reduce__(self):
                return (Path.touch, (marker,))

        payload = np.empty(2, dtype=object)
        payload[0], payload[1] = Evil(), 1.0
        np.save(path, payload, allow_pickle=True)

    # The payload is live: unpickling it does create its marker.
    evil_npy(tmp_path / "probe.npy", tmp_path / "probe-marker")
    np.load(tmp_path / "probe.npy", allow_pickle=True)
    assert (tmp_path / "probe-marker").exists()

    marker = tmp_path / "PWNED"
    evil_npy(tmp_path / "z.npy", marker)
    out = tmp_path / "d.png"
    code, _, err = _cli(
        capsys, "decode", "--export-dir", str(tiny_export), "--z", str(tmp_path / "z.npy"),
        "--out", str(out),
    )  # fmt: skip
    assert code == 1
    _assert_one_line_error(err)
    assert "not a readable .npy without pickle" in err
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize(
    ("z", "code", "needle"),
    [
        (np.zeros((3, 7), np.float32), 2, r"--z: must be [N, 4], got [3, 7]"),
        (np.zeros((2, 2, 4), np.float32), 1, "expected a non-empty [N, L] array"),
        (np.array([[np.nan] * 4], np.float32), 1, "holds NaN or Inf"),
        (np.array([["a"] * 4]), 1, "is not numeric"),
    ],
)
def test_decode_refuses_bad_latents(tiny_export, tmp_path, capsys, z, code, needle):
    np.save(tmp_path / "z.npy", z)
    out = tmp_path / "d.npy"
    got, _, err = _cli(
        capsys, "decode", "--export-dir", str(tiny_export), "--z", str(tmp_path / "z.npy"),
        "--out", str(out),
    )  # fmt: skip
    assert got == code
    _assert_one_line_error(err)
    assert needle in err
    assert not out.exists()


def test_decode_and_encode_output_suffixes(tiny_export, tmp_path, capsys):
    np.save(tmp_path / "z.npy", np.zeros((2, 4), np.float32))
    code, _, err = _cli(
        capsys, "decode", "--export-dir", str(tiny_export), "--z", str(tmp_path / "z.npy"),
        "--out", str(tmp_path / "d.txt"),
    )  # fmt: skip
    assert code == 2 and "should end in .png or .npy" in err
    data = _images_npy(tmp_path / "x.npy", n=20)
    code, _, err = _cli(
        capsys, "encode", "--export-dir", str(tiny_export), "--data", str(data),
        "--out", str(tmp_path / "z.png"),
    )  # fmt: skip
    assert code == 2 and "should end in .npy" in err
    assert not (tmp_path / "d.txt").exists() and not (tmp_path / "z.png").exists()


def test_decode_single_vector_npy(tiny_export, tmp_path, capsys):
    """A 1-D [L] vector is one latent; the output matches the library."""
    z = np.linspace(-1, 1, 4).astype(np.float64)
    np.save(tmp_path / "z.npy", z)
    code, out, err = _cli(
        capsys, "decode", "--export-dir", str(tiny_export), "--z", str(tmp_path / "z.npy"),
        "--out", str(tmp_path / "d.npy"),
    )  # fmt: skip
    assert code == 0, err
    assert "[1, 784]" in out
    got = np.load(tmp_path / "d.npy")
    np.testing.assert_allclose(got, Model(tiny_export).decode(z[None]), atol=1e-6)


def test_reconstruct_refuses_images_of_the_wrong_size(tiny_export, tmp_path, capsys):
    data = _images_npy(tmp_path / "small.npy", n=50, shape=(10, 10))
    out = tmp_path / "r.png"
    code, _, err = _cli(
        capsys, "reconstruct", "--export-dir", str(tiny_export), "--data", str(data),
        "--out", str(out),
    )  # fmt: skip
    assert code == 2
    _assert_one_line_error(err)
    assert "images have 100 pixels, the model expects 784" in err
    assert not out.exists()


def test_library_errors_are_typed(exp):
    (exp / "decoder.int8.onnx").unlink()
    m = Model(exp)
    with pytest.raises(ModelFileError, match="no such model file"):
        m.decode(np.zeros((1, 4), np.float32))
    assert m.encode(np.zeros((1, 784), np.float32))[0].shape == (1, 4)  # encoder still fine


def test_output_paths_that_look_like_markup_are_printed_verbatim(tiny_export, tmp_path, capsys):
    """Rich used to parse the path in "wrote <path>" as markup: '[/x]' crashed after writing."""
    closing = tmp_path / "[" / "x].png"  # the string ends in "[/x].png"
    opening = tmp_path / "[red]" / "s.png"
    for out in (closing, opening):
        code, stdout, err = _cli(capsys, *_sample(tiny_export, out))
        assert code == 0, err
        assert out.read_bytes()[:4] == b"\x89PNG"
        assert f"wrote {out} (62x62 px)" in stdout.replace("\n", "")
    z = tmp_path / "[b]z.npy"
    np.save(z, np.zeros((2, 4), np.float32))
    out = tmp_path / "[/b]" / "d.npy"
    code, stdout, err = _cli(
        capsys, "decode", "--export-dir", str(tiny_export), "--z", str(z), "--out", str(out)
    )
    assert code == 0, err
    assert f"wrote {out}: x_mean [2, 784]" in stdout.replace("\n", "")
