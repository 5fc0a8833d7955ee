"""Named data sets (`mnist`, `fashion-mnist`, `binarized-mnist`, `frey-face`): fetched into the
cache once (`fetch`), then read like the local kind they are (an IDX pair with labels, the
three .amat splits, Frey Face's .mat), with the registry's class names.

`download(name, progress=...)` fetches ahead of time with a progress callback (the CLI renders
it); `load_dataset("mnist")` fetches whatever is missing without one.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from . import fetch, registry
from .labels import idx_labels
from .sources import Raw, read_files


def _named(name: str) -> registry.Named:
    named = registry.lookup(name)
    if named is None:
        raise UsageError(
            f"no named data set {name!r}; named sets: {', '.join(registry.NAMES)}", param="data"
        )
    return named


def is_named(spec: str | None) -> bool:
    return spec is not None and registry.lookup(str(spec)) is not None


def download(
    name: str, progress: fetch.Progress | None = None, timeout: float = fetch.TIMEOUT
) -> dict[str, Path]:
    """Make sure every file of the named data set is in the cache, verified; returns the
    files by role (train, test, ..., train_labels). Downloads only what is missing."""
    return fetch.fetch(_named(name), progress, timeout)


def read_named(name: str, timeout: float = fetch.TIMEOUT) -> Raw:
    named = _named(name)
    paths = fetch.fetch(named, None, timeout)
    images = {role: p for role, p in paths.items() if not role.endswith("_labels")}
    raw = read_files(named.kind, images, fetch.cache_dir(named))
    if named.classes is not None:
        by_image = {images[split]: paths[f"{split}_labels"] for split in images}
        counts = {split: arr.shape[0] for split, arr in raw.parts.items()}
        raw.labels = idx_labels(images, counts, lambda image, _names: by_image[image])
        raw.labels.classes = named.classes
    raw.source = named.name
    raw.named = named.name
    return raw
