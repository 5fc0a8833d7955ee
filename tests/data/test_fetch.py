"""Named data sets: download, verification, cache, mirror and offline use, against a loopback
HTTP server (127.0.0.1 only) and a small fake registry entry."""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from support.loopback import dead_port_url, loopback

from edgevae.data import fetch, registry
from edgevae.data.core import load_dataset
from edgevae.data.named import download
from edgevae.data.registry import Named, RemoteFile
from edgevae.errors import DataError

TIMEOUT = 30.0  # seconds; generous, so a loaded machine never fails a good download
STALL = 0.5  # seconds; a stalled server must end its test quickly


def payloads() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (30, 6, 6), dtype=np.uint8)
    test = rng.integers(0, 256, (10, 6, 6), dtype=np.uint8)
    y_train, y_test = np.arange(30) % 3, np.arange(10) % 3
    return {
        "train-images-idx3-ubyte.gz": struct.pack(">IIII", 0x803, 30, 6, 6) + train.tobytes(),
        "train-labels-idx1-ubyte.gz": struct.pack(">II", 0x801, 30) + bytes(y_train.tolist()),
        "t10k-images-idx3-ubyte.gz": struct.pack(">IIII", 0x803, 10, 6, 6) + test.tobytes(),
        "t10k-labels-idx1-ubyte.gz": struct.pack(">II", 0x801, 10) + bytes(y_test.tolist()),
    }


ROLES = {
    "train": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def toy(urls: tuple[str, ...]) -> Named:
    data = payloads()
    files = {
        role: RemoteFile(name, hashlib.sha256(data[name]).hexdigest(), len(data[name]))
        for role, name in ROLES.items()
    }
    return Named("toy", "idx", urls, files, ("red", "green", "blue"), "a toy set")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An empty cache under tmp_path, no mirror, no proxy for loopback."""
    monkeypatch.setenv("EDGEVAE_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGEVAE_DATA_MIRROR", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    return tmp_path / "cache" / "toy"


@pytest.fixture
def server():
    with loopback() as s:
        yield s


def register(monkeypatch, urls: tuple[str, ...]) -> Named:
    named = toy(urls)
    monkeypatch.setitem(registry.REGISTRY, "toy", named)
    return named


def serve_all(server, prefix: str, gz: bool = True) -> None:
    for name, data in payloads().items():
        server.serve(f"{prefix}/{name}", gzip.compress(data, mtime=0) if gz else data)


def cache_listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def one_line_error(call) -> str:
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------ good paths


def test_download_then_offline_reuse(env, server, monkeypatch):
    register(monkeypatch, (f"{server.url}/a/",))
    serve_all(server, "/a")
    reports = []
    paths = download("toy", progress=lambda *r: reports.append(r), timeout=TIMEOUT)
    assert cache_listing(env) == sorted(ROLES.values())  # no staging or partial files left
    assert set(paths) == set(ROLES)
    last = {stage: (done, total) for stage, done, total in reports}
    assert "download t10k-images-idx3-ubyte.gz (kB)" in last
    assert all(done == total for done, total in last.values())
    ds = load_dataset("toy", seed=1)
    assert ds.kind == "idx" and ds.source == "toy" and ds.named == "toy"
    assert ds.classes == ("red", "green", "blue")
    assert len(ds.test) == 10 and ds.train_labels is not None
    spec = ds.spec()
    assert spec["named"] == "toy" and spec["classes"] == ["red", "green", "blue"]
    # the server is asked for nothing more, then goes away: the cache is enough
    count = len(server.requests)
    load_dataset("toy", seed=1)
    assert len(server.requests) == count
    monkeypatch.setenv("EDGEVAE_DATA_MIRROR", dead_port_url())
    again = load_dataset("toy", seed=1, labels=True)
    np.testing.assert_array_equal(again.test_labels, ds.test_labels)


def test_hosts_tried_in_order_first_that_works_wins(env, server, monkeypatch):
    register(monkeypatch, (f"{server.url}/gone/", f"{server.url}/b/"))
    serve_all(server, "/b")
    download("toy", timeout=TIMEOUT)
    assert server.requests[:2] == [
        "/gone/train-images-idx3-ubyte.gz",
        "/b/train-images-idx3-ubyte.gz",
    ]


def test_mirror_replaces_every_host(env, server, monkeypatch):
    register(monkeypatch, ("http://canonical.invalid/x/", "http://other.invalid/y/"))
    serve_all(server, "/mirror")
    monkeypatch.setenv("EDGEVAE_DATA_MIRROR", f"{server.url}/mirror")  # no trailing slash
    download("toy", timeout=TIMEOUT)
    assert sorted(server.requests) == sorted(f"/mirror/{name}" for name in ROLES.values())


def test_recompressed_or_plain_payload_verifies(env, server, monkeypatch):
    register(monkeypatch, (f"{server.url}/m/",))
    for i, (name, data) in enumerate(payloads().items()):
        if i % 2:  # a different gzip stream of the same bytes: level, header name, mtime
            body = gzip.compress(data, compresslevel=1, mtime=12345)
            assert body != gzip.compress(data, mtime=0)
        else:  # the decompressed payload served under the .gz name
            body = data
        server.serve(f"/m/{name}", body)
    download("toy", timeout=TIMEOUT)
    assert load_dataset("toy").classes == ("red", "green", "blue")


def test_file_placed_by_hand_is_used_offline(env, monkeypatch):
    register(monkeypatch, (dead_port_url() + "/",))
    env.mkdir(parents=True)
    for name, data in payloads().items():
        plain = name.removesuffix(".gz")  # the decompressed file under its own name
        (env / (plain if "labels" in name else name)).write_bytes(
            data if "labels" in name else gzip.compress(data)
        )
    ds = load_dataset("toy")
    assert ds.classes == ("red", "green", "blue")


# ------------------------------------------------------------------------------ bad paths


def _assert_clean_failure(message: str, env: Path, url: str, name: str) -> None:
    assert url in message
    assert f"place {name} (or its decompressed content) in {env}" in message
    assert cache_listing(env) == []  # nothing partial, no staging folder


@pytest.mark.parametrize(
    ("route", "why"),
    [
        ({"status": 404}, "HTTP 404"),
        ({"corrupt": True}, "corrupt download"),
        ({"cut": 200}, "transfer cut short"),
        ({"stall": "headers"}, f"no response for {STALL:g} s"),
        ({"stall": "body"}, f"no response for {STALL:g} s"),
        ({"length": 10**12}, "announces"),
        ({"not_gzip": True}, "corrupt download"),
    ],
)
def test_failed_download_leaves_nothing(env, server, monkeypatch, route, why):
    register(monkeypatch, (f"{server.url}/a/",))
    name = "train-images-idx3-ubyte.gz"
    body = gzip.compress(payloads()[name], mtime=0)
    if route.pop("corrupt", False):
        body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
    if route.pop("not_gzip", False):
        body = b"\x1f\x8b" + b"\0" * 200
    if route.get("status") == 404:
        route.pop("status")
    else:
        server.serve(f"/a/{name}", body, **route)
    message = one_line_error(lambda: download("toy", timeout=STALL))
    assert why in message, message
    _assert_clean_failure(message, env, f"{server.url}/a/{name}", name)


def test_a_cached_file_that_does_not_match_is_refused_not_replaced(env, server, monkeypatch):
    register(monkeypatch, (f"{server.url}/a/",))
    serve_all(server, "/a")
    download("toy", timeout=TIMEOUT)
    target = env / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(gzip.compress(b"something else"))
    before = len(server.requests)
    message = one_line_error(lambda: load_dataset("toy"))
    assert str(target) in message and "does not match toy's t10k-labels-idx1-ubyte.gz" in message
    assert "delete it to download it again" in message
    assert len(server.requests) == before and gzip.decompress(target.read_bytes()) == (
        b"something else"
    )


def test_a_refused_file_stops_before_any_download(env, server, monkeypatch):
    register(monkeypatch, (f"{server.url}/a/",))
    serve_all(server, "/a")
    env.mkdir(parents=True)
    (env / "t10k-labels-idx1-ubyte").write_bytes(b"\x1f\x8b broken")
    message = one_line_error(lambda: download("toy", timeout=TIMEOUT))
    assert "t10k-labels-idx1-ubyte" in message and server.requests == []


def test_mirror_must_be_http(env, monkeypatch):
    register(monkeypatch, ("http://canonical.invalid/",))
    monkeypatch.setenv("EDGEVAE_DATA_MIRROR", "ftp://example.invalid/data")
    assert "EDGEVAE_DATA_MIRROR" in one_line_error(lambda: download("toy"))


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGEVAE_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert fetch.cache_root() == tmp_path / "home" / ".cache" / "edgevae"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fetch.cache_root() == tmp_path / "xdg" / "edgevae"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert fetch.cache_root() == tmp_path / "home" / ".cache" / "edgevae"
    monkeypatch.setenv("EDGEVAE_DATA_DIR", str(tmp_path / "mine"))
    assert fetch.cache_root() == tmp_path / "mine"


# --------------------------------------------------------------------------- Frey's content


def mat_v5_uint8(name: str, arr: np.ndarray, compress: bool) -> bytes:
    """A MATLAB v5 file holding one uint8 matrix (column-major), optionally miCOMPRESSED."""

    def element(kind: int, data: bytes) -> bytes:
        pad = (-len(data)) % 8
        return struct.pack("<II", kind, len(data)) + data + b"\0" * pad

    rows, cols = arr.shape
    body = (
        element(6, struct.pack("<II", 9, 0))  # array flags: mxUINT8_CLASS
        + element(5, struct.pack("<ii", rows, cols))
        + element(1, name.encode())
        + element(2, np.asfortranarray(arr).tobytes(order="F"))
    )
    matrix = struct.pack("<II", 14, len(body)) + body
    if compress:
        packed = zlib.compress(matrix, 9)
        matrix = struct.pack("<II", 15, len(packed)) + packed
    header = b"MATLAB 5.0 MAT-file, test".ljust(116, b" ") + b"\0" * 8 + b"\x00\x01IM"
    return header + matrix


def test_frey_is_verified_by_its_faces(env, server, monkeypatch):
    faces = np.random.default_rng(1).integers(0, 256, (12, 28, 20), dtype=np.uint8)
    ff = faces.reshape(12, 560).T  # 560 x N, one face a column
    f = RemoteFile(
        "frey_rawface.mat", hashlib.sha256(faces.tobytes()).hexdigest(), 12 * 560, "frey"
    )
    named = Named("toy", "frey", (f"{server.url}/f/",), {"train": f}, None, "toy faces")
    monkeypatch.setitem(registry.REGISTRY, "toy", named)
    server.serve("/f/frey_rawface.mat", mat_v5_uint8("ff", ff, compress=True))
    download("toy", timeout=TIMEOUT)
    ds = load_dataset("toy")
    assert ds.kind == "frey" and ds.likelihood == "gaussian" and ds.classes is None
    # the same faces in an uncompressed file verify too; other faces do not
    (env / "frey_rawface.mat").write_bytes(mat_v5_uint8("ff", ff, compress=False))
    load_dataset("toy")
    (env / "frey_rawface.mat").write_bytes(mat_v5_uint8("ff", ff[:, ::-1], compress=False))
    assert "does not match" in one_line_error(lambda: load_dataset("toy"))


def test_an_unwritable_cache_is_one_line(env, monkeypatch, tmp_path):
    register(monkeypatch, (dead_port_url() + "/",))
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    assert "cannot write in the cache folder" in one_line_error(lambda: download("toy"))
