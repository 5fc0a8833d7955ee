"""edgevae.fsio: atomic writes keep the old file on any failure and leave no temp files."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from edgevae import fsio
from edgevae.errors import EdgeVAEError


def leftovers(directory: Path) -> list[str]:
    """Temp files fsio may have left (hidden `.NAME.*.tmp`)."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def old_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.bin"
    path.write_bytes(b"OLD CONTENT")
    return path


def test_write_bytes_creates_parents_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.bin"
    fsio.write_bytes(target, b"one")
    assert target.read_bytes() == b"one"
    fsio.write_bytes(target, b"two, longer")
    assert target.read_bytes() == b"two, longer"
    assert leftovers(target.parent) == []


def test_written_file_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        fsio.write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    # mkstemp creates 0600; fsio widens it to what a plain open() would give under the umask.
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640


def test_write_text_and_json_round_trip(tmp_path: Path) -> None:
    fsio.write_text(tmp_path / "t.txt", "µ-law ✓\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "µ-law ✓\n"
    fsio.write_json(tmp_path / "j.json", {"b": 1, "a": [1.5, None]})
    text = (tmp_path / "j.json").read_text(encoding="utf-8")
    assert text.endswith("\n") and text.index('"a"') < text.index('"b"')  # sorted keys
    assert json.loads(text) == {"a": [1.5, None], "b": 1}


def test_atomic_open_text_mode(tmp_path: Path) -> None:
    with fsio.atomic_open(tmp_path / "t.txt", "w") as fh:
        fh.write("héllo")
    assert (tmp_path / "t.txt").read_bytes() == "héllo".encode()


def test_atomic_open_refuses_other_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'wb' and 'w'"):
        with fsio.atomic_open(tmp_path / "x", "ab"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_target_not_visible_before_the_block_ends(tmp_path: Path) -> None:
    target = tmp_path / "new.bin"
    with fsio.atomic_open(target) as fh:
        fh.write(b"partial")
        fh.flush()
        assert not target.exists()  # readers never see a half-written file
        assert len(leftovers(tmp_path)) == 1
    assert target.read_bytes() == b"partial"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_exception_midway_keeps_old_file(old_file: Path, exc_type: type) -> None:
    with pytest.raises(exc_type):
        with fsio.atomic_open(old_file) as fh:
            fh.write(b"NEW BYTES THAT NEVER LAND")
            raise exc_type("boom")
    assert old_file.read_bytes() == b"OLD CONTENT"
    assert leftovers(old_file.parent) == []


def test_enospc_at_fsync_is_edgevae_error_and_keeps_old_file(
    old_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(EdgeVAEError) as info:
        fsio.write_bytes(old_file, b"x" * 10_000)
    monkeypatch.undo()
    msg = str(info.value)
    assert str(old_file) in msg and "No space left" in msg and "\n" not in msg
    assert isinstance(info.value.__cause__, OSError)
    assert old_file.read_bytes() == b"OLD CONTENT"
    assert leftovers(old_file.parent) == []


class _FullDiskFile:
    """Wraps a real file object; the second write fails with ENOSPC (after a partial write)."""

    def __init__(self, fh):
        self._fh = fh
        self._writes = 0

    def write(self, data):
        self._writes += 1
        if self._writes > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        self._fh.__enter__()
        return self

    def __exit__(self, *exc):
        return self._fh.__exit__(*exc)


def test_enospc_during_write_keeps_old_file(
    old_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda *a, **kw: _FullDiskFile(real_fdopen(*a, **kw)))
    with pytest.raises(EdgeVAEError, match="No space left"):
        with fsio.atomic_open(old_file) as fh:
            fh.write(b"first chunk")
            fh.write(b"second chunk")
    monkeypatch.undo()
    assert old_file.read_bytes() == b"OLD CONTENT"
    assert leftovers(old_file.parent) == []


def test_failed_rename_keeps_old_file(old_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_rename(src, dst):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(EdgeVAEError, match="cannot write"):
        fsio.write_text(old_file, "new")
    monkeypatch.undo()
    assert old_file.read_bytes() == b"OLD CONTENT"
    assert leftovers(old_file.parent) == []


def test_unwritable_destination_is_edgevae_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("file")
    with pytest.raises(EdgeVAEError, match="cannot write") as info:
        fsio.write_bytes(blocker / "out.bin", b"x")
    assert "\n" not in str(info.value)
    assert blocker.read_text() == "file"
