"""Atomic file writes: readers never see a half-written file, and a failed write keeps the old one.

Every file edgevae writes goes through here: a temporary file in the destination's directory,
flushed and fsync'ed, then `os.replace`d over the target (atomic on POSIX), then the directory
is fsync'ed so the rename itself survives a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import EdgeVAEError


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file next to `path`; on clean exit it replaces `path`, on error it vanishes."""
    if mode not in ("wb", "w"):
        raise ValueError("atomic_open supports 'wb' and 'w' only")
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise EdgeVAEError(f"cannot write {target}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would surprise whoever shares the output
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise EdgeVAEError(f"cannot write {target}: {exc.strerror or exc}") from exc
        raise
    _fsync_dir(directory)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def move_into(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Move a finished file (fsync'ed, same filesystem, e.g. from a staging dir inside the
    destination's directory) over `dst` in one atomic rename."""
    src, dst = Path(src), Path(dst)
    try:
        with open(src, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(src, dst)
    except OSError as exc:
        raise EdgeVAEError(f"cannot write {dst}: {exc.strerror or exc}") from exc
    _fsync_dir(dst.parent if str(dst.parent) else Path("."))
