"""A small image-folder dataset cut from real photographs the defaults were never tuned on.

scikit-image bundles a few public-domain photographs (``skimage.data``: an astronaut, a cat, a
coffee cup, coins, a rocket, a retina, the Hubble deep field, ...). Each photograph is one class; its images
are random square crops. Training crops come from the left 75 % of the photograph and test crops
from the right 25 %, so the two splits share no pixels. The folder has the layout users give
``--dataset PATH`` (``train/<class>/*.png``, ``test/<class>/*.png``; docs/training.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "gravel", "grass", "hubble_deep_field",
          "immunohistochemistry", "moon", "retina", "rocket")
"""The 12 classes: photographs shipped inside scikit-image (no download)."""


def _photo(name: str) -> np.ndarray:
    import skimage.data  # the benchmarks' and tests' extra (pyproject ``test``)

    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image[..., :3].astype(np.uint8)


def _crops(image: np.ndarray, *, count: int, size: int, columns: tuple[float, float],
           rng: np.random.Generator) -> list[Image.Image]:
    height, width = image.shape[:2]
    left, right = int(columns[0] * width), int(columns[1] * width)
    out = []
    for _ in range(count):
        side = int(rng.uniform(0.15, 0.25) * min(height, width))
        side = min(side, right - left)
        x = int(rng.integers(left, right - side + 1))
        y = int(rng.integers(0, height - side + 1))
        crop = Image.fromarray(image[y:y + side, x:x + side])
        out.append(crop.resize((size, size), Image.Resampling.BILINEAR))
    return out


def build_photo_crops(root: str | Path, *, train_per_class: int = 60, test_per_class: int = 20,
                      size: int = 48, classes: int = len(PHOTOS), seed: int = 0) -> Path:
    """Write the dataset under ``root`` (``train/`` and ``test/``) and return ``root``.

    Args:
        root: Output folder (created; existing files of the same names are replaced).
        train_per_class, test_per_class: Crops per photograph in each split.
        size: Side of the saved crops in pixels (the recipe resizes to its ``image_size``).
        classes: How many of :data:`PHOTOS` to use (the first ones).
        seed: Seed of the crop positions and sizes.
    """
    if not 2 <= classes <= len(PHOTOS):
        raise ValueError(f"classes must be in [2, {len(PHOTOS)}], got {classes}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for name in PHOTOS[:classes]:
        image = _photo(name)
        for split, count, columns in (("train", train_per_class, (0.0, 0.75)),
                                      ("test", test_per_class, (0.75, 1.0))):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, crop in enumerate(_crops(image, count=count, size=size, columns=columns, rng=rng)):
                crop.save(folder / f"{i:04d}.png")
    return root
