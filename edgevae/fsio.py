"""Files: atomic writes, bounded reads of regular files, and sha256.

Every file edgevae writes goes through here: a temporary file in the destination's directory,
flushed and fsync'ed, then `os.replace`d over the target (atomic on POSIX), then the directory
is fsync'ed so the rename itself survives a crash; readers never see a half-written file, and
a failed write keeps the old one.

Every file edgevae reads whole is read with `read_regular`: a FIFO or device named like a
model would block or stream forever, and a huge file would be read before anything checked it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import EdgeVAEError

CHUNK = 1 << 20


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


def _finite(obj: Any) -> Any:
    """`obj` with every non-finite float (inf, nan) as None: strict JSON has no Infinity."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def to_json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text (what any JSON reader accepts): non-finite floats become null, keys
    sorted; one line when `indent` is None."""
    text = json.dumps(_finite(obj), indent=indent, sort_keys=True, allow_nan=False)
    return text if indent is None else text + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """`obj` as strict JSON (`to_json`), written atomically."""
    write_text(path, to_json(obj))


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


def read_regular(
    path: str | os.PathLike, limit: int, error: type[EdgeVAEError] = EdgeVAEError
) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; `error("<path>: <why>")` for a
    missing file, a directory, FIFO or device, a larger file, or a failed read."""
    path = Path(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path}: not a regular file")
        if st.st_size > limit:
            raise error(f"{path}: {st.st_size} bytes, more than the {limit}-byte limit")
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limit:  # grew since stat()
        raise error(f"{path}: more than the {limit}-byte limit")
    return data


def sha256_of(data: bytes) -> str:
    """Hex sha256 of bytes already in memory."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, error: type[EdgeVAEError] = EdgeVAEError) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                digest.update(chunk)
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()


@contextlib.contextmanager
def dir_lock(directory: str | os.PathLike, *, shared: bool = False) -> Iterator[bool]:
    """Hold a lock on `directory` itself (flock on its descriptor: no lock file in it), shared
    for readers or exclusive for a writer, waiting for it; yields whether it is held (False
    when the directory cannot be opened, e.g. missing). The kernel releases it if the
    process dies."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def try_lock_file(path: str | os.PathLike) -> int | None:
    """An exclusive lock on `path` (created if needed) without waiting: the descriptor that
    holds it, or None when another process holds it. OSError for anything else."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd
