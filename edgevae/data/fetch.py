"""The download cache of the named data sets: find, download (pooch), verify, keep.

- Cache: `$EDGEVAE_DATA_DIR/<name>/`, by default `$XDG_CACHE_HOME/edgevae/<name>/` or
  `~/.cache/edgevae/<name>/`. A file is looked for under its canonical name, and also with
  `.gz` added or removed, so the original compressed file or its decompressed content can be
  placed there by hand for offline use.
- Every file is verified against the sha256 of its payload (`registry`) when it is downloaded
  AND each time it is used. A cached file that does not match is refused, never downloaded
  over: downloads only ever land verified, so a mismatch means the file was put there or
  changed by someone else (or the disk), and the user decides what to do with it.
- A download goes to a private staging folder inside the cache folder (pooch writes it there),
  is verified there, and only then is renamed into place; anything that fails (HTTP error,
  timeout, truncated transfer, wrong checksum, more bytes than the file can have) removes the
  staging folder, so the cache never holds a partial or corrupt file.
- `EDGEVAE_DATA_MIRROR=URL` replaces every data set's hosts by one base URL: each file is
  fetched as `URL/<canonical file name>`. Otherwise each data set's hosts are tried in order.
- `timeout` bounds both connecting and every wait for the next bytes, so a stalled server ends
  the command with an error instead of hanging it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import fsio
from ..errors import DataError, one_line
from . import checks as c
from .registry import Named, RemoteFile

ENV_DIR = "EDGEVAE_DATA_DIR"
ENV_MIRROR = "EDGEVAE_DATA_MIRROR"
#: Seconds to wait for a connection, and for each next part of the response, before giving up.
TIMEOUT = 30.0
CHUNK = 1 << 16

Progress = Callable[[str, int, int], None]  # (stage, done kB, total kB); total 0 = unknown


def cache_root() -> Path:
    """The folder that holds one subfolder per named data set (not created here)."""
    env = os.environ.get(ENV_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg and Path(xdg).expanduser().is_absolute() else None
    return (base or Path.home() / ".cache") / "edgevae"


def cache_dir(named: Named) -> Path:
    return cache_root() / named.name


def base_urls(named: Named) -> tuple[str, ...]:
    """The base URLs to try, in order: the mirror alone when one is set."""
    mirror = os.environ.get(ENV_MIRROR, "").strip()
    if not mirror:
        return named.urls
    if not mirror.lower().startswith(("http://", "https://")):
        raise DataError(f"{ENV_MIRROR}={mirror!r}: expected an http:// or https:// URL")
    return (mirror.rstrip("/") + "/",)


# ------------------------------------------------------------------------------ verification


def payload_sha256(path: Path, f: RemoteFile) -> str:
    """sha256 of the file's payload (see `registry`); DataError when it cannot be read."""
    if f.check == "frey":
        from .readers import read_frey

        faces = read_frey(path)
        if faces.dtype != np.uint8:
            as_u8 = faces.astype(np.uint8)
            if not np.array_equal(as_u8, faces):
                return "faces that are not uint8 values"
            faces = as_u8
        return hashlib.sha256(np.ascontiguousarray(faces).tobytes()).hexdigest()
    digest = hashlib.sha256()
    seen = 0
    with c.open_content(path) as (stream, _gz):
        while chunk := stream.read(c.CHUNK):
            seen += len(chunk)
            if seen > f.payload_bytes:  # also stops a gzip bomb early
                return f"more than the {f.payload_bytes} bytes it has"
            digest.update(chunk)
    return digest.hexdigest()


def _mismatch(path: Path, f: RemoteFile) -> str | None:
    """Why `path` is not the file `f` (None: it is)."""
    try:
        got = payload_sha256(path, f)
    except DataError as exc:
        return one_line(exc, 200).removeprefix(f"{path}: ")
    if got == f.sha256:
        return None
    shown = got if " " in got else f"sha256 {got[:16]}..."
    return f"content is {shown}, expected sha256 {f.sha256[:16]}..."


def _candidates(f: RemoteFile) -> tuple[str, ...]:
    other = f.name[:-3] if f.name.endswith(".gz") else f.name + ".gz"
    return (f.name, other)


def find_cached(named: Named, f: RemoteFile) -> Path | None:
    """The verified cached copy of `f`, None when there is none; DataError when one is there
    but is not a regular file or does not match its checksum."""
    directory = cache_dir(named)
    for name in _candidates(f):
        path = directory / name
        if not os.path.lexists(path):
            continue
        if not path.is_file():
            raise DataError(f"{path}: not a regular file; remove it or put {f.name} there")
        why = _mismatch(path, f)
        if why is not None:
            raise DataError(
                f"{path}: does not match {named.name}'s {f.name} ({why}); delete it to "
                "download it again, or replace it with the original file"
            )
        return path
    return None


# ---------------------------------------------------------------------------------- download


class _Failed(Exception):
    """One URL did not give the file (the reason is the message)."""


class _Bar:
    """pooch's progress-bar protocol (total, update, reset, close), reported in kB, with a
    cap on the bytes accepted: a server cannot fill the disk with an endless response."""

    def __init__(self, stage: str, report: Progress | None, limit: int):
        self.stage, self.report, self.limit = stage, report, limit
        self.done = 0
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, value: int) -> None:
        if value > self.limit:
            raise _Failed(f"the server announces {value} bytes, more than the file can have")
        self._total = int(value)
        self._show()

    def update(self, n: int) -> None:
        self.done += int(n)
        if self.done > self.limit + CHUNK:  # pooch counts whole chunks
            raise _Failed("more bytes than the file can have")
        self._show()

    def reset(self) -> None:
        self.done = 0

    def close(self) -> None:
        self._show()

    def _show(self) -> None:
        if self.report is not None:
            done = min(self.done, self._total) if self._total else self.done
            self.report(self.stage, done // 1000, self._total // 1000)


def _reason(exc: BaseException, timeout: float) -> str:
    import requests

    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason or ''}".strip()
    if isinstance(exc, requests.exceptions.Timeout) or "timed out" in str(exc).lower():
        return f"no response for {timeout:g} s"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        short = re.search(r"IncompleteRead\(([^()]*)\)", str(exc))
        return f"transfer cut short ({short.group(1) if short else one_line(exc, 120)})"
    return one_line(exc, 160, with_type=True)


def _get(url: str, target: Path, f: RemoteFile, progress: Progress | None, timeout: float):
    import pooch
    import requests

    pooch.get_logger().setLevel("WARNING")  # the library prints nothing; progress is a callback
    limit = f.payload_bytes + f.payload_bytes // 8 + (1 << 20)  # gzip never grows data more
    bar = _Bar(f"download {f.name} (kB)", progress, limit)
    downloader = pooch.HTTPDownloader(progressbar=bar, chunk_size=CHUNK, timeout=timeout)
    try:
        downloader(url, str(target), None)
    except _Failed:
        raise
    except (requests.exceptions.RequestException, OSError) as exc:
        raise _Failed(_reason(exc, timeout)) from None


def download(
    named: Named, f: RemoteFile, progress: Progress | None = None, timeout: float = TIMEOUT
) -> Path:
    """Fetch `f` from the first base URL that gives a verified copy; returns its cache path.
    DataError (one line) naming every URL tried and where to put the file to work offline."""
    directory = cache_dir(named)
    failures = []
    for base in base_urls(named):
        url = base + f.name
        try:
            directory.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".download-", dir=directory))
        except OSError as exc:
            raise DataError(
                f"{directory}: cannot write in the cache folder ({exc.strerror or exc})"
            ) from None
        try:
            part = staging / f.name
            _get(url, part, f, progress, timeout)
            why = _mismatch(part, f)
            if why is not None:
                raise _Failed(f"corrupt download: {why}")
            fsio.move_into(part, directory / f.name)
            return directory / f.name
        except _Failed as exc:
            failures.append(f"{url}: {exc}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    raise DataError(
        f"{named.name}: cannot download {f.name} ({'; '.join(failures)}); to work offline, "
        f"place {f.name} (or its decompressed content) in {directory}{os.sep}"
    )


def fetch(
    named: Named, progress: Progress | None = None, timeout: float = TIMEOUT
) -> dict[str, Path]:
    """Every file of `named` as a verified local path (role -> path), downloading the ones
    the cache does not have; the cache is checked first, so a complete cache needs no network."""
    cached = {role: find_cached(named, f) for role, f in named.files.items()}  # refusals first
    return {
        role: path or download(named, named.files[role], progress, timeout)
        for role, path in cached.items()
    }
