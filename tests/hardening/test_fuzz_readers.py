"""Fuzzing of every reader: mutated valid files (bytes, headers, fields) fed to each reader
that test_data.py / test_onnxcheck.py do not fuzz already (data files, latent vectors,
manifests, checkpoints, run configs, models through the runtime, and the newer readers: label
files, the download cache, held-out images, crosscheck results, threshold entries); only a
clean one-line error of the reader's own type, or a valid result, is accepted.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from support import table
from support.hardening import (
    DIM,
    LATENT,
    amat_bytes,
    fix_png_crcs,
    gz,
    idx_bytes,
    idx_label_bytes,
    images,
    manifest_dict,
    mat_bytes,
    mini_export,
    npy_bytes,
    npz_bytes,
    onnx_model,
    png_bytes,
    with_heldout,
)

from edgevae.config import ModelConfig
from edgevae.data import npy as npyfile
from edgevae.data.core import load_dataset, load_images
from edgevae.errors import DataError, EdgeVAEError, ModelFileError
from edgevae.runtime import manifest
from edgevae.runtime.model import Model
from edgevae.runtime.session import open_session, run_session
from edgevae.training import checkpoint, runconfig

runs = table.runs  # the shared fixture, visible to this module's tests

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# (byte edits at fractions of the span, optional cut fraction, appended bytes)
MUTATION = st.tuples(
    st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)), max_size=6),
    st.one_of(st.none(), st.floats(0.0, 1.0)),
    st.binary(max_size=12),
)

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip


def mutate(data: bytes, mutation, span: int | None = None) -> bytes:
    """Apply a MUTATION; `span` aims the byte edits at the first `span` bytes (the header)."""
    edits, cut, extra = mutation
    out = bytearray(data)
    reach = len(out) if span is None else min(span, len(out))
    for frac, value in edits:
        out[int(frac * reach)] = value
    if cut is not None:
        out = out[: int(cut * len(out))]
    return bytes(out) + extra


def _reason(exc: Exception) -> str:
    """A coarse label of an error for --hypothesis-show-statistics (which check fired)."""
    text = str(exc).split(": ", 1)[-1]
    return "refused: " + re.sub(r"[\d'\[(].*", "", text)[:40]


def _only_clean_data_errors(spec: str) -> None:
    try:
        x, _ = load_images(spec, split="all")
    except DataError as exc:
        assert "\n" not in str(exc)
        event(_reason(exc))
        return
    event("read")
    assert x.dtype == np.float32 and x.ndim == 2 and 0 <= x.min() <= x.max() <= 1


AMAT_SEED = amat_bytes(np.random.default_rng(5).integers(0, 2, (6, 16)))


AMAT_MUTATION = st.tuples(
    st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.sampled_from(b"01 \t\r\n")),
             max_size=6),
    st.one_of(st.none(), st.floats(0.0, 1.0)),
    st.binary(max_size=12) | st.sampled_from([b"", b"\n", b"0 1\n", b"\n\n1 1 1 1\n"]),
)  # fmt: skip


@FUZZ
@given(mutation=MUTATION | AMAT_MUTATION, gzipped=st.booleans())
def test_fuzz_amat(tmp_path, mutation, gzipped) -> None:
    # AMAT_MUTATION keeps to 0/1/whitespace, so rows change length rather than values
    data = mutate(AMAT_SEED, mutation)
    path = tmp_path / "fuzz.amat"
    path.write_bytes(gz(data) if gzipped else data)
    _only_clean_data_errors(f"amat:{path}")


FREY = np.random.default_rng(6).integers(0, 256, (560, 3), dtype=np.uint8)
MAT_SEEDS = [mat_bytes(FREY), mat_bytes(FREY, compressed=True)]


@FUZZ
@given(which=st.integers(0, 1), mutation=MUTATION, header=st.booleans())
def test_fuzz_frey_mat(tmp_path, which, mutation, header) -> None:
    # header: edits land in the 128-byte file header and the element tags after it
    data = mutate(MAT_SEEDS[which], mutation, span=256 if header else None)
    path = tmp_path / "fuzz.mat"
    path.write_bytes(data)
    _only_clean_data_errors(f"frey:{path}")


NPZ_SEEDS = [
    npz_bytes(x_train=images(6, 4, 4), x_test=images(2, 4, 4, seed=1)),
    npz_bytes(train=images(6, 4, 4).astype(np.float32) / 255),
]


NPZ_MEMBERS = {"x_train": npy_bytes(images(6, 4, 4)), "x_test": npy_bytes(images(2, 4, 4))}


@FUZZ
@given(which=st.integers(0, 2), mutation=MUTATION, header=st.booleans())
def test_fuzz_npz(tmp_path, which, mutation, header) -> None:
    # header: edits land near the zip's local header and member .npy header
    if which < 2:
        data = mutate(NPZ_SEEDS[which], mutation, span=160 if header else None)
    else:  # a mutated x_train.npy in a well-formed zip (CRCs right): reaches the .npy parser
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("x_train.npy", mutate(NPZ_MEMBERS["x_train"], mutation, span=128))
            zf.writestr("x_test.npy", NPZ_MEMBERS["x_test"])
        data = buf.getvalue()
    path = tmp_path / "fuzz.npz"
    path.write_bytes(data)
    _only_clean_data_errors(f"npz:{path}")


PNG_SEEDS = [png_bytes(images(1, 6, 6)[0]), png_bytes(images(1, 6, 6, seed=2)[0], mode="RGB")]


@FUZZ
@given(which=st.integers(0, 1), mutation=MUTATION, fix_crc=st.booleans())
def test_fuzz_png(tmp_path, which, mutation, fix_crc) -> None:
    # fix_crc: the chunk CRCs are recomputed, so mutated sizes/modes reach Pillow's checks
    folder = tmp_path / "pngs"
    folder.mkdir(exist_ok=True)
    data = mutate(PNG_SEEDS[which], mutation, span=64)
    (folder / "a.png").write_bytes(PNG_SEEDS[1 - which])
    (folder / "b.png").write_bytes(fix_png_crcs(data) if fix_crc else data)
    _only_clean_data_errors(f"png:{folder}")


LATENT_SEEDS = [
    npy_bytes(np.random.default_rng(7).standard_normal((3, 4)).astype(np.float32)),
    npy_bytes(np.arange(8, dtype=np.int16).reshape(2, 4)),
]


@FUZZ
@given(which=st.integers(0, 1), mutation=MUTATION)
def test_fuzz_latent_npy(tmp_path, which, mutation) -> None:
    """The reader behind `decode --z`."""
    path = tmp_path / "z.npy"
    path.write_bytes(mutate(LATENT_SEEDS[which], mutation, span=128))
    try:
        z = npyfile.read_npy(path)
    except DataError as exc:
        assert "\n" not in str(exc)
        event(_reason(exc))
        return
    event("read")
    assert z.dtype == np.float32 and z.ndim == 2 and np.isfinite(z).all()


@pytest.fixture(scope="module")
def fuzz_export(tmp_path_factory) -> Path:
    return mini_export(tmp_path_factory.mktemp("fuzz") / "exp")


MANIFEST_KEYS = ["latent_dim", "image_shape", "likelihood", "gaussian_logvar", "schema"]


@FUZZ
@given(
    mutation=MUTATION,
    key=st.sampled_from(MANIFEST_KEYS),
    value=JSON_VALUES | st.integers(-3, 800),
    as_bytes=st.booleans(),
)
def test_fuzz_manifest(fuzz_export, mutation, key, value, as_bytes) -> None:
    """manifest.read and the runtime that trusts it: ModelFileError/UsageError, or samples."""
    man = {**manifest_dict(), key: value}
    text = json.dumps(manifest_dict()).encode()
    data = mutate(text, mutation) if as_bytes else json.dumps(man).encode()
    (fuzz_export / "manifest.json").write_bytes(data)
    try:
        read = manifest.read(fuzz_export)
        model = Model(fuzz_export, "fp32")
        pictures = model.sample(2, seed=0)
    except EdgeVAEError as exc:
        assert "\n" not in str(exc)
        event(_reason(exc))
        return
    event("sampled")
    assert pictures.shape == (2, *read["image_shape"])


def _safetensors_parts(data: bytes) -> tuple[dict, bytes]:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _safetensors_join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + body


@pytest.fixture(scope="module")
def fuzz_run(runs, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("fuzz") / "run"
    shutil.copytree(runs["run"], dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


@FUZZ
@given(
    name=st.sampled_from([runconfig.MODEL, runconfig.STATE]),
    mutation=MUTATION,
    how=st.sampled_from(["bytes", "tensor", "state"]),
    index=st.integers(0, 100),
    field_name=st.sampled_from(["dtype", "shape", "data_offsets", "epoch", "batch", "partial",
                                "lr_schedule", "samples_seen"]),
    value=JSON_VALUES | st.lists(st.integers(-2, 2000), max_size=3),
)  # fmt: skip
def test_fuzz_safetensors(fuzz_run, name, mutation, how, index, field_name, value) -> None:
    """checkpoint.read_safetensors (+ the resume-state check and load_model_weights)."""
    original = (fuzz_run / name).read_bytes()
    header, body = _safetensors_parts(original)
    if how == "bytes":
        data = mutate(original, mutation, span=8 + int.from_bytes(original[:8], "little"))
    elif how == "tensor":  # one tensor entry's dtype, shape or offsets
        names = sorted(k for k in header if k != "__metadata__")
        entry = header[names[index % len(names)]]
        entry[field_name if field_name in entry else "shape"] = value
        data = _safetensors_join(header, body)
    else:  # the resume JSON inside the metadata
        meta = header.setdefault("__metadata__", {})
        state = json.loads(meta.get("state", "{}"))
        state[field_name] = value
        meta["state"] = json.dumps(state)
        data = _safetensors_join(header, body)
    path = fuzz_run / name
    try:
        path.write_bytes(data)
        checkpoint.read_safetensors(path)
        if name == runconfig.MODEL:
            cfg = ModelConfig.from_dict(runconfig.load_config(fuzz_run)["model"])
            checkpoint.load_model_weights(fuzz_run, cfg)
        event("accepted")
    except ModelFileError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path))
        event(_reason(exc))
    finally:
        path.write_bytes(original)


CONFIG_FIELDS = ["model.hidden", "model.latent_dim", "model.input_dim", "model.image_shape",
                 "model.activation", "model.likelihood", "train.epochs", "train.batch_size",
                 "train.lr", "train.data", "model", "train"]  # fmt: skip


PLAUSIBLE = st.integers(1, 40) | st.lists(st.integers(1, 40), min_size=1, max_size=2)


@FUZZ
@given(
    where=st.sampled_from(CONFIG_FIELDS),
    value=JSON_VALUES | st.lists(st.integers(-2, 10**6), max_size=3) | PLAUSIBLE,
    mutation=MUTATION,
    as_bytes=st.booleans(),
)
def test_fuzz_run_config(fuzz_run, monkeypatch, where, value, mutation, as_bytes) -> None:
    """runconfig.load_config, then the weights checked against whatever it accepted."""
    monkeypatch.setattr(runconfig, "MAX_PARAMETERS", 2_000_000)  # keep accepted models small
    path = fuzz_run / runconfig.CONFIG
    original = path.read_bytes()
    cfg = json.loads(original)
    if as_bytes:
        data = mutate(original, mutation)
    else:
        section, _, key = where.partition(".")
        if key:
            cfg[section][key] = value
        else:
            cfg[section] = value
        data = json.dumps(cfg).encode()
    try:
        path.write_bytes(data)
        loaded = runconfig.load_config(fuzz_run)
        checkpoint.load_model_weights(fuzz_run, ModelConfig.from_dict(loaded["model"]))
        event("accepted")
    except ModelFileError as exc:
        assert "\n" not in str(exc)
        event(_reason(exc))
    finally:
        path.write_bytes(original)


ONNX_SEED = onnx_model("decoder", hidden=3).SerializeToString()
OPS = ["Gemm", "MatMul", "Relu", "Sigmoid", "Identity", "Reshape", "Softmax", "Loop", "", "Add"]


def _proto_mutation(what: str, index: int, number: int, op: str) -> bytes:
    """A well-formed model with one field changed (what reaches onnxruntime after vetting)."""
    m = onnx.ModelProto()
    m.ParseFromString(ONNX_SEED)
    g = m.graph
    if what == "dim":
        t = g.initializer[index % len(g.initializer)]
        t.dims[index % len(t.dims)] = number
    elif what == "op":
        g.node[index % len(g.node)].op_type = op
    elif what == "node_input":
        node = g.node[index % len(g.node)]
        node.input[index % len(node.input)] = ["z", "h", "dec.0.bias", "", "nope"][number % 5]
    elif what == "io_dim":
        vi = g.input[0] if index % 2 else g.output[index % len(g.output)]
        vi.type.tensor_type.shape.dim[1].dim_value = number
    elif what == "versions":
        m.ir_version, m.opset_import[0].version = number % 16, number % 30
    elif what == "dtype":
        g.initializer[index % len(g.initializer)].data_type = number % 24
    return m.SerializeToString()


@FUZZ
@given(
    mutation=MUTATION,
    how=st.sampled_from(["bytes", "header", "dim", "op", "node_input", "io_dim", "versions",
                         "dtype"]),
    index=st.integers(0, 50),
    number=st.integers(0, 2**20),
    op=st.sampled_from(OPS),
)  # fmt: skip
def test_fuzz_onnx_through_the_runtime(tmp_path, mutation, how, index, number, op) -> None:
    """vet + onnxruntime + run: a mutated model is refused, or it loads and runs, nothing else
    (test_onnxcheck.py fuzzes read_info/vet alone)."""
    path = tmp_path / "decoder.fp32.onnx"
    if how in ("bytes", "header"):  # header: edits avoid the weight bytes
        path.write_bytes(mutate(ONNX_SEED, mutation, span=160 if how == "header" else None))
    else:
        path.write_bytes(_proto_mutation(how, index, number, op))
    try:
        sess = open_session(path, "decoder")
        z = np.zeros((2, LATENT), np.float32)
        (out,) = run_session(sess, path, ["x_mean"], {"z": z}, width=DIM)
    except ModelFileError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path))
        event(_reason(exc))
        return
    event("ran")
    assert out.shape == (2, DIM) and out.dtype == np.float32


# ------------------------------------------------------------- the newer readers


def _labels_ok(ds) -> None:
    """A dataset read with labels: one int64 label per image, each naming a class."""
    for split in ("train", "valid", "test"):
        y = ds.labels(split)
        assert y.dtype == np.int64 and len(y) == len(getattr(ds, split))
        assert y.min() >= 0 and y.max() < len(ds.classes)


LABELS = (np.arange(8) % 3).astype(np.int64)
LABEL_SEEDS = [npy_bytes(LABELS), npy_bytes(LABELS.astype(np.float32)), npy_bytes(LABELS[:, None])]


@FUZZ
@given(
    which=st.integers(0, 2),
    mutation=MUTATION,
    header=st.booleans(),
    names=st.none() | st.integers(0, 4),
)
def test_fuzz_npz_labels(tmp_path, which, mutation, header, names) -> None:
    """An .npz's label member (a mutated y in a well-formed zip, optionally class names)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", npy_bytes(images(8, 4, 4)))
        zf.writestr("y.npy", mutate(LABEL_SEEDS[which], mutation, span=128 if header else None))
        if names is not None:
            zf.writestr("classes.npy", npy_bytes(np.array([f"c{i}" for i in range(names)])))
    path = tmp_path / "lab.npz"
    path.write_bytes(buf.getvalue())
    _load_labelled(path)


def _load_labelled(source) -> None:
    """Read `source` with its labels: a one-line DataError, or labels that follow the rules."""
    try:
        ds = load_dataset(str(source), labels=True)
    except DataError as exc:
        assert "\n" not in str(exc)
        event(_reason(exc))
        return
    event("read")
    _labels_ok(ds)


IDX_LABELS = idx_label_bytes(np.arange(10) % 4)


@FUZZ
@given(mutation=MUTATION, header=st.booleans(), gzipped=st.booleans())
def test_fuzz_idx_labels(tmp_path, mutation, header, gzipped) -> None:
    """The label file beside IDX images (header edits land in its 8-byte header)."""
    folder = tmp_path / "pair"
    folder.mkdir(exist_ok=True)
    (folder / "train-images-idx3-ubyte").write_bytes(idx_bytes(images(10, 4, 4)))
    (folder / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images(3, 4, 4, seed=1)))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_label_bytes([0, 1, 2]))
    data = mutate(IDX_LABELS, mutation, span=8 if header else None)
    for name in ("train-labels-idx1-ubyte", "train-labels-idx1-ubyte.gz"):
        (folder / name).unlink(missing_ok=True)
    name = "train-labels-idx1-ubyte" + (".gz" if gzipped else "")
    (folder / name).write_bytes(gz(data) if gzipped else data)
    _load_labelled(folder)


CACHE_SEEDS = [gz(idx_label_bytes(np.arange(10) % 10)), idx_label_bytes(np.arange(10) % 10)]


@FUZZ
@given(which=st.integers(0, 1), mutation=MUTATION, as_name=st.integers(0, 1))
def test_fuzz_cache_file(tmp_path, monkeypatch, which, mutation, as_name) -> None:
    """A named set's cached file (mnist's test labels, gzipped or not, under either name):
    never accepted unless its payload's sha256 is the registry's, refused naming the file."""
    from edgevae.data import fetch, registry

    monkeypatch.setenv(fetch.ENV_DIR, str(tmp_path / "cache"))
    named = registry.lookup("mnist")
    f = named.files["test_labels"]
    folder = fetch.cache_dir(named)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    path = folder / (f.name, f.name[:-3])[as_name]
    path.write_bytes(mutate(CACHE_SEEDS[which], mutation, span=32))
    with pytest.raises(DataError) as info:
        fetch.find_cached(named, f)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(path))
    event(_reason(info.value))


@pytest.fixture(scope="module")
def heldout_export(tmp_path_factory) -> Path:
    return with_heldout(mini_export(tmp_path_factory.mktemp("fuzz") / "held"), n=6)


HELDOUT_SEEDS = [npy_bytes(images(6).reshape(6, -1)), npy_bytes((images(6) / 255.0).reshape(6, -1))]


@FUZZ
@given(which=st.integers(0, 1), mutation=MUTATION, header=st.booleans())
def test_fuzz_heldout(heldout_export, which, mutation, header) -> None:
    """heldout.npy mutated, with the manifest's sha256 made to match (a file that passes the
    checksum still has its header, dtype, shape and pixels checked)."""
    from edgevae import fsio
    from edgevae.runtime import heldout

    data = mutate(HELDOUT_SEEDS[which], mutation, span=128 if header else None)
    entry = {"sha256": fsio.sha256_of(data)}
    (heldout_export / heldout.NAME).write_bytes(data)
    try:
        x = heldout.read(heldout_export, entry, DIM)
    except ModelFileError as exc:
        assert "\n" not in str(exc)
        event(_reason(exc))
        return
    event("read")
    assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == DIM
    assert 0 <= x.min() <= x.max() <= 1


@pytest.fixture(scope="module")
def results_seed(tmp_path_factory) -> bytes:
    from edgevae.crosscheck.run import run_and_save

    exp = mini_export(tmp_path_factory.mktemp("fuzz") / "cc")
    out = exp.parent / "ref.npz"
    run_and_save(exp, out, sample=False)
    return out.read_bytes()


@FUZZ
@given(mutation=MUTATION, header=st.booleans())
def test_fuzz_crosscheck_results(tmp_path, results_seed, mutation, header) -> None:
    """`crosscheck compare`/`run --inputs`'s reader of a results .npz."""
    from edgevae.crosscheck.compare import CrosscheckError
    from edgevae.crosscheck.results import load_results

    path = tmp_path / "r.npz"
    path.write_bytes(mutate(results_seed, mutation, span=200 if header else None))
    try:
        results = load_results(path)
    except CrosscheckError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path))
        event(_reason(exc))
        return
    event("read")
    assert isinstance(results.meta, dict)


THRESHOLD = {"score": "elbo", "precision": "int8", "value": 101.5, "fpr_target": 0.01,
             "fpr_measured": 0.01, "n_images": 500, "data": {}, "k": None, "firmware": None,
             "models": {"decoder.int8.onnx": "0" * 64}}  # fmt: skip


@FUZZ
@given(
    key=st.sampled_from(sorted(THRESHOLD) + ["extra"]),
    value=JSON_VALUES | st.sampled_from(["iwae", "fp32", "int4", 0.5, 1.0, 64, -1]),
    drop=st.booleans(),
)
def test_fuzz_threshold_entry(key, value, drop) -> None:
    """The manifest's threshold entry as `detect` reads it (`anomaly.stored`)."""
    from edgevae.runtime import anomaly

    entry = dict(THRESHOLD)
    if drop:
        entry.pop(key, None)
    else:
        entry[key] = value
    try:
        t = anomaly.stored({"threshold": entry}, "m.json")
    except ModelFileError as exc:
        assert str(exc) == "m.json: malformed threshold entry"
        event("refused")
        return
    event("accepted")
    assert t.score in anomaly.SCORES and np.isfinite(t.value) and 0 < t.fpr_target < 1
    assert t.k is None or (isinstance(t.k, int) and t.k >= 1)


# --------------------------------------------------------------- the 4-bit decoder


@pytest.fixture(scope="module")
def int4_seed(tmp_path_factory) -> bytes:
    """A 3-6-5-16 decoder through the int4 recipe (an int8 layer, then two 4-bit layers)."""
    from support.firmware import Variant
    from support.firmware_int4 import make_int4_decoder

    root = tmp_path_factory.mktemp("fuzz4")
    v = Variant("fuzz4", latent=3, hidden=(6, 5), out=16, seed=2)
    return make_int4_decoder(root, v).read_bytes()


def _int4_mutation(seed: bytes, how: str, index: int, number: int, value, text) -> bytes:
    """One field of the int4 decoder changed: a weight, a weight scale or zero point, a
    weight's data type, or the edgevae.weight_bits metadata (None: removed)."""
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.ParseFromString(seed)
    inits = {t.name: t for t in m.graph.initializer}
    producers = {out: node for node in m.graph.node for out in node.output}
    gemms = [n for n in m.graph.node if n.op_type == "Gemm"]
    dq = producers[gemms[index % len(gemms)].input[1]]
    weight, scale, zero = (inits[name] for name in dq.input[:3])
    if how == "weight":
        w = numpy_helper.to_array(weight).copy()
        w.flat[number % w.size] = value
        weight.CopyFrom(numpy_helper.from_array(w.astype(np.int8), weight.name))
    elif how == "scale":
        s = numpy_helper.to_array(scale).copy()
        s.flat[number % s.size] = np.float32(value / 64)
        scale.CopyFrom(numpy_helper.from_array(s, scale.name))
    elif how == "zero_point":
        z = numpy_helper.to_array(zero).copy()
        z.flat[number % z.size] = value
        zero.CopyFrom(numpy_helper.from_array(z.astype(np.int8), zero.name))
    elif how == "dtype":
        weight.data_type = number % 24
    else:  # metadata
        for prop in list(m.metadata_props):
            if prop.key == "edgevae.weight_bits":
                m.metadata_props.remove(prop)
        if text is not None:
            m.metadata_props.add(key="edgevae.weight_bits", value=text)
    return m.SerializeToString()


@FUZZ
@given(
    mutation=MUTATION,
    how=st.sampled_from(["bytes", "header", "weight", "scale", "zero_point", "dtype", "metadata"]),
    index=st.integers(0, 5),
    number=st.integers(0, 2**20),
    value=st.integers(-128, 127),
    text=st.none() | st.sampled_from(["4", "8", "", "four", " 4", "04"]) | st.text(max_size=3),
)
def test_fuzz_int4_decoder(tmp_path, int4_seed, mutation, how, index, number, value, text) -> None:
    """`firmware --weight-bits 4`'s reader of decoder.int4.static.onnx (`load_int_model(.., 4)`):
    a mutated file is refused in one line, or it is a 4-bit decoder (metadata '4', every layer
    but the first in -8..7) that the integer reference decodes."""
    from edgevae.firmware.intmodel import NIBBLE_RANGE
    from edgevae.firmware.intref import decode_int, load_int_model

    path = tmp_path / "decoder.int4.static.onnx"
    if how in ("bytes", "header"):  # header: edits avoid the weight bytes
        path.write_bytes(mutate(int4_seed, mutation, span=160 if how == "header" else None))
    else:
        path.write_bytes(_int4_mutation(int4_seed, how, index, number, value, text))
    try:
        model = load_int_model(path, 4)
    except ModelFileError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(path.name)
        event(_reason(exc))
        return
    event("accepted")
    assert model.metadata.get("edgevae.weight_bits") == "4"
    for layer in model.layers[1:]:
        assert layer.weight_bits == 4
        assert NIBBLE_RANGE[0] <= layer.weight.min() <= layer.weight.max() <= NIBBLE_RANGE[1]
    z = np.random.default_rng(0).standard_normal((3, model.latent_dim)).astype(np.float32)
    pixels = decode_int(model, z)
    assert pixels.dtype == np.uint8 and pixels.shape == (3, model.output_dim)


NAME_KEYS = ["firmware_decoder_int4", "firmware_decoder", "firmware_encoder"]


@FUZZ
@given(
    key=st.sampled_from(NAME_KEYS),
    value=JSON_VALUES
    | st.sampled_from(["decoder.int4.static.onnx", "../decoder.int4.static.onnx", ".", "..",
                       "/etc/passwd", "a/b.onnx", "nope.onnx", "decoder.int8.onnx", "x\0y"]),
    bits=st.sampled_from([4, 8]),
)  # fmt: skip
def test_fuzz_manifest_model_names(fuzz_export, key, value, bits) -> None:
    """The manifest's names of the firmware models, as manifest.read and the firmware's
    decoder lookup read them: refused in one line, or a file inside the export."""
    from edgevae.firmware.codegen import find_firmware_decoder

    man = {**manifest_dict(), key: value}
    (fuzz_export / "manifest.json").write_text(json.dumps(man))
    readers = (lambda: manifest.read(fuzz_export), lambda: find_firmware_decoder(fuzz_export, bits))
    for read in readers:
        try:
            got = read()
        except ModelFileError as exc:
            assert "\n" not in str(exc)
            event(_reason(exc))
            continue
        event("accepted")
        if isinstance(got, Path):
            assert got.parent == fuzz_export and got.is_file()
