"""How much memory a command may take, and the one check every count or size goes through.

A command works out what it will allocate from its options and inputs *before* allocating
it (images to make, importance samples, model sizes, calibration images, ...) and calls
`check`: above the limit it is refused with one line naming the argument, what it would
need and the limit, instead of dying in an allocator or being killed by the kernel. Work
whose size is legitimately large (scoring many images, many importance samples, decoding
many samples) runs in chunks of at most `chunk_rows` rows instead.

The limit is half of the memory this machine has available (`MemAvailable` in
/proc/meminfo, lowered to what a cgroup v2 `memory.max` leaves), or `FALLBACK_BYTES` where
neither can be read. `EDGEVAE_MEMORY_LIMIT` overrides it: bytes, or a number with a K, M, G
or T suffix (powers of 1024): `EDGEVAE_MEMORY_LIMIT=2G`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import UsageError

ENV = "EDGEVAE_MEMORY_LIMIT"
#: Share of the available memory one command may plan to use.
FRACTION = 0.5
#: The limit where the available memory cannot be read (no /proc/meminfo).
FALLBACK_BYTES = 4 << 30
#: Bytes of float32 one chunk of rows may hold (encoder/decoder calls, likelihood terms):
#: fixed, so that results do not depend on the machine, unless the limit is smaller.
CHUNK_BYTES = 256 << 20
#: Most rows in one chunk, whatever their width.
MAX_CHUNK_ROWS = 65536

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'2G' -> 2147483648; '512M', '1.5G', '64KiB', '1000000' (bytes) work too."""
    m = _SIZE.match(text)
    if m is None or float(m.group(1)) <= 0:
        raise UsageError(
            f"{ENV}={text!r}: expected a size such as 2G, 512M or 1000000 (bytes), above 0"
        )
    return max(1, int(float(m.group(1)) * _UNITS[m.group(2).upper()]))


def human(n: int | float) -> str:
    """Bytes as a short human-readable size: 512 B, 3.0 KiB, 1.5 GiB, 2.9 TiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _meminfo_available(path: Path = Path("/proc/meminfo")) -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    m = re.search(r"^MemAvailable:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


def _cgroup_room(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """What a cgroup v2 memory.max leaves (None: no such limit)."""
    try:
        top = (root / "memory.max").read_text().strip()
        used = int((root / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    return None if not top.isdigit() else max(0, int(top) - used)


def available_bytes() -> int | None:
    """The memory this machine has available now, None when it cannot be read."""
    known = [v for v in (_meminfo_available(), _cgroup_room()) if v is not None]
    return min(known) if known else None


def memory_limit() -> int:
    """The bytes one command may plan to allocate (see the module's doc)."""
    env = os.environ.get(ENV, "").strip()
    if env:
        return parse_size(env)
    room = available_bytes()
    return FALLBACK_BYTES if room is None else max(1, int(room * FRACTION))


def _source() -> str:
    if os.environ.get(ENV, "").strip():
        return f"set by {ENV}"
    if available_bytes() is None:
        return f"the default where available memory is unknown; set {ENV} to change it"
    return f"half of the available memory; set {ENV} to change it"


def check(need: int, what: str, param: str | None = None, error: type = UsageError) -> None:
    """Refuse `what` when it would need more than the memory limit: one line naming the
    need and the limit. `error` UsageError (with `param`, the argument at fault) for
    options; DataError or ModelFileError (no param) for a file's declared sizes."""
    limit = memory_limit()
    if need <= limit:
        return
    message = (
        f"{what} would need {human(need)}, more than the memory limit of {human(limit)} "
        f"({_source()})"
    )
    raise error(message, param=param) if issubclass(error, UsageError) else error(message)


def chunk_rows(width: int, bytes_per_value: int = 4, copies: int = 1) -> int:
    """Rows per chunk for rows of `width` values: `CHUNK_BYTES` worth (or less when the
    memory limit is below 8 such chunks), at least 1, at most `MAX_CHUNK_ROWS`."""
    budget = min(CHUNK_BYTES, memory_limit() // 8)
    rows = budget // max(1, width * bytes_per_value * copies)
    return int(max(1, min(MAX_CHUNK_ROWS, rows)))
