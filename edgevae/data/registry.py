"""The named data sets (`--data mnist`): where their files live and what their content must be.

Every checksum is the sha256 of a file's PAYLOAD, not of the bytes on the wire: the decompressed
content of a gzip file (so a mirror that recompressed the same IDX bytes still verifies), the
file itself when it is not compressed, and for Frey Face the 1,965 decoded faces (the original
`.mat` bytes could not be checked here; any `.mat` that holds the same faces verifies).

Where each checksum was computed (on this project's machines; no canonical host was reachable):
- MNIST: the four files of `../shared/data/mnist` (their gzip md5s are the official ones, and
  the decompressed md5s equal those other loaders publish).
- Fashion-MNIST: Debian's `dataset-fashion-mnist` package (recompressed by Debian: its gzip
  md5s differ from Zalando's, while the decompressed md5s equal those other loaders publish).
- binarized MNIST: `../shared/data/binarized_mnist` (equal to the sha256 that TensorFlow
  Datasets lists for Larochelle's uncompressed `.amat` files).
- Frey Face: `../shared/data/frey_face` (the faces' md5 matches its README).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RemoteFile:
    """One file of a named data set."""

    name: str  # canonical file name: the name on every host, in a mirror and in the cache
    sha256: str  # of the payload (see the module docstring)
    payload_bytes: int  # size of the payload (for messages; the checksum decides)
    check: str = "bytes"  # "bytes": decompressed bytes; "frey": the decoded faces (uint8)


@dataclass(frozen=True)
class Named:
    """A named data set: its base URLs (tried in order), files by role, and class names."""

    name: str
    kind: str  # the local kind it reads as: idx, amat or frey
    urls: tuple[str, ...]
    files: dict[str, RemoteFile]  # roles: train, valid, test, train_labels, test_labels
    classes: tuple[str, ...] | None
    about: str


DIGITS = tuple(str(d) for d in range(10))
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_MNIST_FILES = ("train", "train_labels", "test", "test_labels")
_MNIST_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
_MNIST_SIZES = (47040016, 60008, 7840016, 10008)


def _idx_files(*sha256: str) -> dict[str, RemoteFile]:
    return {
        role: RemoteFile(name, digest, size)
        for role, name, digest, size in zip(
            _MNIST_FILES, _MNIST_NAMES, sha256, _MNIST_SIZES, strict=True
        )
    }


REGISTRY: dict[str, Named] = {
    "mnist": Named(
        "mnist",
        "idx",
        # LeCun's own site often answers 403 now; torchvision tries this S3 mirror first too.
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://yann.lecun.com/exdb/mnist/"),
        _idx_files(
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
        DIGITS,
        "MNIST handwritten digits (LeCun, Cortes, Burges): 60,000 train, 10,000 test, labels",
    ),
    "fashion-mnist": Named(
        "fashion-mnist",
        "idx",
        (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        ),
        _idx_files(
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
        FASHION_CLASSES,
        "Fashion-MNIST (Zalando Research): 60,000 train, 10,000 test, ten clothing classes",
    ),
    "binarized-mnist": Named(
        "binarized-mnist",
        "amat",
        ("http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",),
        {
            "train": RemoteFile(
                "binarized_mnist_train.amat",
                "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
                78400000,
            ),
            "valid": RemoteFile(
                "binarized_mnist_valid.amat",
                "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
                15680000,
            ),
            "test": RemoteFile(
                "binarized_mnist_test.amat",
                "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
                15680000,
            ),
        },
        None,
        "binarized MNIST (Larochelle & Murray 2011): 50,000 / 10,000 / 10,000, no labels",
    ),
    "frey-face": Named(
        "frey-face",
        "frey",
        ("https://cs.nyu.edu/~roweis/data/",),
        {
            "train": RemoteFile(
                "frey_rawface.mat",
                "2438ba4f0d2a6bd8bac43de756141eaa33c8d248dd613d464bdb1210d9b7af78",
                1965 * 560,
                check="frey",
            ),
        },
        None,
        "Frey Face (Brendan Frey, from Sam Roweis's page): 1,965 faces of 28x20, no labels",
    ),
}

NAMES: tuple[str, ...] = tuple(REGISTRY)


def lookup(text: str) -> Named | None:
    """The named data set `text` names (exactly, any case), or None."""
    return REGISTRY.get(text.lower())


def classes_for_labels(payload_sha256: str) -> tuple[str, ...] | None:
    """Class names of a registered label file recognised by its payload checksum (a local
    Fashion-MNIST folder gets Fashion-MNIST's names), else None."""
    for named in REGISTRY.values():
        for role, f in named.files.items():
            if role.endswith("_labels") and f.sha256 == payload_sha256:
                return named.classes
    return None
