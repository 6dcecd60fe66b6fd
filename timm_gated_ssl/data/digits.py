"""The embedded offline dataset: scikit-learn's 8x8 handwritten digits as 32x32 RGB images.

Source: the UCI "Optical Recognition of Handwritten Digits" test set (Alpaydin & Kaynak, 1998), as
bundled with scikit-learn (``sklearn.datasets.load_digits``: 1,797 images, 8x8, values 0..16). It
needs no download, which makes it the default for tests, examples and smoke runs.
"""

from __future__ import annotations

import functools

import datasets
import numpy as np
from PIL import Image

__all__ = [
    "DIGITS_MEAN",
    "DIGITS_NUM_TRAIN",
    "DIGITS_SIZE",
    "DIGITS_STD",
    "load_digits_dataset",
]

DIGITS_SIZE = 32
"""Side of the upsampled images."""
DIGITS_NUM_TRAIN = 1500
"""The first 1,500 samples form the train split, the last 297 the test split."""
DIGITS_MEAN = (0.3091, 0.3091, 0.3091)
"""Per-channel mean of the train split after upsampling (identical channels)."""
DIGITS_STD = (0.3476, 0.3476, 0.3476)
"""Per-channel std of the train split after upsampling."""


def _to_image(pixels: np.ndarray) -> Image.Image:
    gray = np.round(pixels * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    small = Image.fromarray(gray, mode="L")
    return small.resize((DIGITS_SIZE, DIGITS_SIZE), Image.Resampling.BICUBIC).convert("RGB")


@functools.lru_cache(maxsize=1)
def load_digits_dataset() -> datasets.DatasetDict:
    """Load the digits as a ``DatasetDict`` with deterministic "train" and "test" splits.

    Each 8x8 image is rescaled from 0..16 to 0..255, upsampled to 32x32 with bicubic interpolation
    (smooth strokes, closer to natural images than nearest-neighbour blocks; small overshoot is
    clipped) and stored as an RGB PIL image in the ``image`` column; ``label`` is a ``ClassLabel``
    with names "0".."9". The split is positional: the first 1,500 samples are "train", the last 297
    "test" (every class has 146-153 train and 27-33 test samples). The result is cached per process.

    Returns:
        ``DatasetDict`` with "train" (1,500 rows) and "test" (297 rows).

    Raises:
        ImportError: When scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - exercised only without scikit-learn
        raise ImportError(
            "the 'digits' dataset needs scikit-learn: pip install scikit-learn"
        ) from err
    bunch = load_digits()
    images = [_to_image(x) for x in bunch.images]
    labels = [int(y) for y in bunch.target]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )

    def make(sl: slice) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {"image": images[sl], "label": labels[sl]}, features=features
        )

    return datasets.DatasetDict(
        {"train": make(slice(0, DIGITS_NUM_TRAIN)), "test": make(slice(DIGITS_NUM_TRAIN, None))}
    )
