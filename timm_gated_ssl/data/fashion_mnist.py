"""Fashion-MNIST from the IDX files of the Debian package ``dataset-fashion-mnist``.

Xiao, Rasul & Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
Algorithms", arXiv:1708.07747. 60,000 train and 10,000 test 28x28 grayscale images, 10 classes.
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import datasets
import numpy as np

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "load_fashion_mnist",
    "read_idx",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where ``apt-get install dataset-fashion-mnist`` puts the IDX files."""
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_FILES = {"train": "train", "test": "t10k"}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an (optionally gzipped) IDX file of unsigned bytes into an array.

    Raises:
        ValueError: If the magic number is not that of a uint8 IDX file.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file (magic bytes {raw[:4].hex()})")
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {root}. Install it with "
        "'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu) or pass root= a folder "
        "holding the four IDX files from github.com/zalandoresearch/fashion-mnist"
    )


@functools.lru_cache(maxsize=4)
def load_fashion_mnist(
    split: str, root: str | os.PathLike[str] = FASHION_MNIST_DIR
) -> datasets.Dataset:
    """Load one Fashion-MNIST split as a ``datasets.Dataset`` (``image``: 28x28 "L", ``label``).

    Encoding the 60,000 training images takes a few seconds; the result is cached per process.

    Args:
        split: "train" or "test".
        root: Folder with ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.

    Raises:
        ValueError: Unknown split.
        FileNotFoundError: Files missing (the message gives the install command).
    """
    if split not in _FILES:
        raise ValueError(f"Fashion-MNIST split must be one of {sorted(_FILES)}, got {split!r}")
    root = Path(root)
    prefix = _FILES[split]
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels in {root} ({split})")
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(FASHION_MNIST_CLASSES))}
    )
    return datasets.Dataset.from_dict(
        {"image": list(images), "label": labels.astype(np.int64).tolist()}, features=features
    )
