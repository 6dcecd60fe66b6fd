"""Load image datasets for SSL pretraining and evaluation as ``datasets.Dataset`` plus metadata.

Presets cover the datasets of Krishna et al., BMVC 2023 (arXiv:2301.09164): CIFAR-10/100, STL-10,
ImageNet-100, plus two offline ones (the embedded scikit-learn digits and Fashion-MNIST from a
Debian package). Anything else is a local image folder or a Hugging Face Hub id.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from timm_gated_ssl.data.digits import DIGITS_MEAN, DIGITS_SIZE, DIGITS_STD, load_digits_dataset
from timm_gated_ssl.data.fashion_mnist import load_fashion_mnist
from timm_gated_ssl.errors import DataError, UnknownSplitError

__all__ = [
    "DATASET_PRESETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DatasetPreset",
    "ImageDataset",
    "detect_columns",
    "load_image_dataset",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LABEL_NAMES = ("label", "labels", "fine_label")

Stats = tuple[float, float, float]


@dataclass(frozen=True)
class DatasetPreset:
    """Where a named dataset lives and its defaults.

    Attributes:
        hub_id: Hugging Face Hub id, or ``None`` for local/embedded data.
        image_column: Preferred image column (auto-detected if absent).
        label_column: Preferred label column (auto-detected if absent).
        num_classes: Number of classes.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        image_size: Default crop / evaluation size.
        pretrain_split: Split the paper pretrains on.
    """

    hub_id: str | None
    image_column: str
    label_column: str | None
    num_classes: int
    mean: Stats
    std: Stats
    image_size: int
    pretrain_split: str = "train"


DATASET_PRESETS: dict[str, DatasetPreset] = {
    "cifar10": DatasetPreset(
        "uoft-cs/cifar10", "img", "label", 10,
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 32,
    ),
    "cifar100": DatasetPreset(
        "uoft-cs/cifar100", "img", "fine_label", 100,
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 32,
    ),
    # STL-10: the paper pretrains on the 100k "unlabeled" split. tanganke/stl10 is known to carry
    # train (5k) and test (8k); whether it has an unlabeled split could not be checked offline, so
    # split="unlabeled" is forwarded as is and a clear error is raised if the repo lacks it (pass
    # hub_id= a repo that has it, or data_dir= a local image folder of the 100k images).
    "stl10": DatasetPreset(
        "tanganke/stl10", "image", "label", 10, IMAGENET_MEAN, IMAGENET_STD, 96, "unlabeled"
    ),
    # ImageNet-100: no canonical copy; pass data_dir= (image folder) or hub_id=.
    "imagenet100": DatasetPreset(None, "image", "label", 100, IMAGENET_MEAN, IMAGENET_STD, 224),
    "digits": DatasetPreset(None, "image", "label", 10, DIGITS_MEAN, DIGITS_STD, DIGITS_SIZE),
    "fashion_mnist": DatasetPreset(
        None, "image", "label", 10, (0.2860,) * 3, (0.3530,) * 3, 28
    ),
}  # fmt: skip
"""Named datasets accepted by :func:`load_image_dataset`."""


@dataclass(frozen=True)
class ImageDataset:
    """A loaded split and what a recipe needs to know about it.

    Attributes:
        dataset: The rows; ``dataset[i][image_column]`` is a PIL image.
        name: Preset name, folder path or Hub id it came from.
        split: Split name.
        image_column: Column holding images.
        label_column: Column holding integer class labels, or ``None`` (unlabeled data).
        num_classes: Number of classes, or ``None`` without labels.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        image_size: Default crop / evaluation size.
    """

    dataset: datasets.Dataset
    name: str
    split: str
    image_column: str
    label_column: str | None
    num_classes: int | None
    mean: Stats
    std: Stats
    image_size: int

    def __len__(self) -> int:
        return len(self.dataset)


def detect_columns(
    features: datasets.Features,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
) -> tuple[str, str | None]:
    """Find the image column (first ``datasets.Image`` feature) and the label column.

    The label column is the first ``ClassLabel`` feature, else a column named "label", "labels" or
    "fine_label", else ``None``. Explicit names are checked and returned.

    Raises:
        ValueError: No image column, or an explicit name that is not a column; the message lists the
            columns present.
    """
    columns = list(features)
    for name, value in (("image_column", image_column), ("label_column", label_column)):
        if value is not None and value not in features:
            raise ValueError(f"{name}={value!r} is not a column; columns present: {columns}")
    if image_column is None:
        image_column = next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
        if image_column is None:
            raise ValueError(f"no image column (datasets.Image feature) found; columns: {columns}")
    if label_column is None:
        label_column = next(
            (c for c, f in features.items() if isinstance(f, datasets.ClassLabel)), None
        ) or next((c for c in _LABEL_NAMES if c in features), None)
    return image_column, label_column


def _count_classes(ds: datasets.Dataset, label_column: str, *, source: str = "the dataset",
                   image_column: str | None = None) -> tuple[datasets.Dataset, int]:
    """The dataset (string labels class-encoded) and its number of classes.

    Raises:
        DataError: An integer label below 0 or a fractional one, naming the row and its image file
            (cross-entropy would fail on it deep inside torch, after training started).
    """
    feature = ds.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return ds, feature.num_classes
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        ds = ds.class_encode_column(label_column)
        return ds, ds.features[label_column].num_classes
    values = ds.unique(label_column)
    bad = [v for v in values if v is None or v < 0 or float(v) != int(v)]
    if bad:
        labels = ds[label_column]
        row = labels.index(bad[0])
        raise DataError(
            f"{source}: label {bad[0]!r} in column {label_column!r} at row {row}"
            f"{_row_file(ds, image_column, row)} is not a class index; labels must be integers "
            "0, 1, ..., N-1 (or class names): fix the labels (e.g. the folder's metadata.csv)"
        )
    return ds, int(max(values)) + 1 if values else 0


def _row_file(ds: datasets.Dataset, image_column: str | None, row: int) -> str:
    """`` (image FILE)`` of ``row`` when the images are files (image folders), else ``""``."""
    if image_column is None or not isinstance(ds.features.get(image_column), datasets.Image):
        return ""
    value = ds.cast_column(image_column, datasets.Image(decode=False))[row][image_column]
    path = value.get("path") if isinstance(value, dict) else None
    return f" (image {path})" if path else ""


def _load_preset(
    name: str, preset: DatasetPreset, split: str, data_dir: str | None, hub_id: str | None,
    load_kwargs: dict[str, Any],
) -> datasets.Dataset:  # fmt: skip
    if name == "digits":
        splits = load_digits_dataset()
        if split not in splits:
            raise UnknownSplitError(f"the digits dataset has no split {split!r}; it has: "
                                    f"{', '.join(sorted(splits))}", split=split, available=sorted(splits))
        return splits[split]
    if name == "fashion_mnist":
        if split not in ("train", "test"):
            raise UnknownSplitError(f"fashion_mnist has no split {split!r}; it has: train, test",
                                    split=split, available=["train", "test"])
        return load_fashion_mnist(split, *([data_dir] if data_dir else []))
    if data_dir is not None:
        return _load_folder(data_dir, split, load_kwargs)
    repo = hub_id or preset.hub_id
    if repo is None:
        raise DataError(f"dataset {name!r} has no default location: pass data_dir= or hub_id=")
    return _load_hub(repo, split, load_kwargs, hint=" Pass hub_id= a repository that has it or "
                     "data_dir= a local image folder")


_SPLIT_PATTERN = re.compile(r"""Unknown split ["']?([^"']+)["']?\. Should be one of \[(.*)\]""")


def _split_error(source: str, split: str, err: Exception, hint: str = "") -> UnknownSplitError | None:
    """Our error for ``datasets``' 'Unknown split "x". Should be one of [...]' (else None)."""
    match = _SPLIT_PATTERN.search(str(err))
    if match is None:
        return None
    available = [a.strip().strip("'\"") for a in match.group(2).split(",") if a.strip()]
    return UnknownSplitError(f"{source} has no split {split!r}; it has: {', '.join(available)}.{hint}",
                             split=split, available=available)


def _load_hub(repo: str, split: str, load_kwargs: dict[str, Any], *, hint: str = "") -> datasets.Dataset:
    try:
        return datasets.load_dataset(repo, split=split, **load_kwargs)
    except ValueError as err:
        translated = _split_error(f"Hub dataset {repo}", split, err, hint)
        if translated is not None:
            raise translated from None
        raise


def _load_folder(folder: str, split: str, load_kwargs: dict[str, Any]) -> datasets.Dataset:
    """An image folder's split, with errors naming the folder, its splits and what to do."""
    layout = (f"expected {folder}/<class>/<image> or {folder}/<split>/<class>/<image> (split folders "
              "train/, test/, validation/)")
    extensions = ", ".join(_IMAGE_EXTENSIONS[:6])
    try:
        builder = datasets.load_dataset_builder("imagefolder", data_dir=folder, **load_kwargs)
    except datasets.data_files.EmptyDatasetError:
        raise DataError(f"image folder {folder} holds no images ({extensions}, ...); {layout}") from None
    available = [str(name) for name in (builder.config.data_files or {})]
    if split not in available:
        raise UnknownSplitError(
            f"image folder {folder} has no split {split!r}; it has: {', '.join(available) or 'none'} "
            f"({layout})", split=split, available=available)
    try:
        return datasets.load_dataset("imagefolder", data_dir=folder, split=split, **load_kwargs)
    except ValueError as err:
        if "corresponds to no data" in str(err):
            raise DataError(f"split {split!r} of image folder {folder} holds no images ({extensions}, "
                            f"...); {layout}") from None
        translated = _split_error(f"image folder {folder}", split, err)
        if translated is not None:
            raise translated from None
        raise


def _image_extensions() -> list[str]:
    try:
        from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

        return list(ImageFolder.EXTENSIONS)
    except (ImportError, AttributeError):  # pragma: no cover - other datasets versions
        return [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"]


_IMAGE_EXTENSIONS = sorted(_image_extensions(), key=lambda e: e not in (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif"))


def load_image_dataset(
    name_or_path: str | os.PathLike[str] | datasets.Dataset,
    *,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    hub_id: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    image_size: int | None = None,
    mean: Stats | None = None,
    std: Stats | None = None,
    **load_kwargs: Any,
) -> ImageDataset:
    """Load one split of an image dataset with its metadata.

    Resolution of ``name_or_path``:

    * a preset of :data:`DATASET_PRESETS` ("cifar10", "cifar100", "stl10", "imagenet100",
      "digits", "fashion_mnist"), with its Hub id, normalisation statistics and image size;
    * an existing local directory: ``datasets.load_dataset("imagefolder", data_dir=...)`` (class
      sub-folders become a ``ClassLabel``; split sub-folders such as ``train/``/``test/`` become
      splits); statistics default to ImageNet's and the size to 224;
    * a string containing "/": a Hugging Face Hub id, loaded with ``datasets.load_dataset``;
    * a ``datasets.Dataset`` already in memory (e.g. from ``Dataset.from_dict``), used as is.

    Columns are auto-detected (:func:`detect_columns`); string labels are class-encoded. Images may
    have mixed modes and sizes: the transforms convert them to RGB and crop/resize them.

    Args:
        name_or_path: Preset name, local folder, Hub id or an in-memory ``datasets.Dataset``.
        split: Split to load ("train", "test", "unlabeled" for STL-10, ...).
        data_dir: Local folder for a preset (required for "imagenet100" unless ``hub_id``; for
            "fashion_mnist" the folder holding the IDX files).
        hub_id: Override a preset's Hub id.
        image_column: Force the image column.
        label_column: Force the label column.
        image_size: Override the default image size.
        mean: Override the normalisation mean.
        std: Override the normalisation std.
        **load_kwargs: Passed to ``datasets.load_dataset`` (``cache_dir``, ``revision``, ...).

    Returns:
        An :class:`ImageDataset`.

    Raises:
        ValueError: Unknown preset-like name (the message lists presets), a missing image column
            (the message lists the columns), or an unknown split of an embedded dataset.
        FileNotFoundError: Fashion-MNIST files missing (the message gives the install command).
    """
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise ValueError(f"image_size must be an integer >= 1 or None, got {image_size!r}")
    if isinstance(name_or_path, datasets.Dataset):
        ds, name, key, preset = name_or_path, "<in-memory>", "", None
    else:
        name = os.fspath(name_or_path)
        key = name.lower().replace("-", "_")
        preset = DATASET_PRESETS.get(key)
    if isinstance(name_or_path, datasets.Dataset):
        defaults: DatasetPreset | None = None
    elif preset is not None:
        ds = _load_preset(
            key, preset, split, None if data_dir is None else os.fspath(data_dir), hub_id,
            load_kwargs,
        )  # fmt: skip
        name = key
        if image_column is None and preset.image_column in ds.features:
            image_column = preset.image_column
        if label_column is None and preset.label_column in ds.features:
            label_column = preset.label_column
        defaults = preset
    elif Path(name).is_dir():
        ds = _load_folder(name, split, load_kwargs)
        defaults = None
    elif "/" in name and not name.startswith((".", "/")):
        ds = _load_hub(name, split, load_kwargs)
        defaults = None
    else:
        raise DataError(
            f"unknown dataset {name!r}: not a preset ({sorted(DATASET_PRESETS)}), not an existing "
            "directory, and not a Hub id of the form 'owner/name'"
        )
    image_column, label_column = detect_columns(
        ds.features, image_column=image_column, label_column=label_column
    )
    num_classes: int | None = None
    if label_column is not None:
        ds, num_classes = _count_classes(ds, label_column, source=f"{name!r} split {split!r}",
                                         image_column=image_column)
    return ImageDataset(
        dataset=ds,
        name=name,
        split=split,
        image_column=image_column,
        label_column=label_column,
        num_classes=num_classes,
        mean=tuple(mean) if mean is not None else (defaults.mean if defaults else IMAGENET_MEAN),
        std=tuple(std) if std is not None else (defaults.std if defaults else IMAGENET_STD),
        image_size=image_size if image_size is not None else (defaults.image_size if defaults else 224),
    )  # type: ignore[arg-type]
