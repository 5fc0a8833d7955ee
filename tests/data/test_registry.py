"""The named data sets' checksums, checked against the real files where this machine has them
(../shared/data for MNIST, binarized MNIST and Frey Face; Debian's dataset-fashion-mnist)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import shared_data

from edgevae.data import registry
from edgevae.data.core import load_dataset
from edgevae.data.fetch import payload_sha256

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_registry_entries_are_well_formed():
    for name, named in registry.REGISTRY.items():
        assert named.name == name and re.fullmatch(r"[a-z-]+", name)
        assert named.kind in ("idx", "amat", "frey")
        assert named.urls and all(u.startswith(("http://", "https://")) for u in named.urls)
        assert all(u.endswith("/") for u in named.urls)
        assert "train" in named.files
        for f in named.files.values():
            assert re.fullmatch(r"[0-9a-f]{64}", f.sha256) and "/" not in f.name
        has_labels = any(role.endswith("_labels") for role in named.files)
        assert has_labels == (named.classes is not None)
    assert len(registry.FASHION_CLASSES) == 10 and registry.FASHION_CLASSES[0] == "T-shirt/top"


def _check_folder(named: registry.Named, folder: Path) -> None:
    for f in named.files.values():
        candidates = [folder / f.name, folder / (f.name + ".gz")]
        path = next(p for p in candidates if p.is_file())
        assert payload_sha256(path, f) == f.sha256, path


@pytest.mark.shared
@pytest.mark.parametrize(
    ("name", "folder"),
    [("mnist", "mnist"), ("binarized-mnist", "binarized_mnist"), ("frey-face", "frey_face")],
)
def test_checksums_match_the_reference_files(name, folder):
    _check_folder(registry.REGISTRY[name], shared_data(folder))


@pytest.mark.skipif(
    not DEBIAN_FASHION.is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (apt-get install it to run this)",
)
def test_fashion_mnist_checksums_and_names_from_a_local_folder():
    _check_folder(registry.REGISTRY["fashion-mnist"], DEBIAN_FASHION)
    ds = load_dataset(str(DEBIAN_FASHION), classes=["Trouser", "Bag"])
    assert ds.source_classes == registry.FASHION_CLASSES
    assert ds.classes == ("Trouser", "Bag") and len(ds.test) == 2000
