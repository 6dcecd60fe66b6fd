"""Data loaders of the pretraining recipe: two-view training batches and k-NN monitor splits.

Every image is decoded before training starts (and kept decoded when the split is small enough),
so an image that cannot be decoded stops the run before its first step, with the file named,
instead of crashing it mid-epoch. Skipping bad images instead was not chosen: it would silently
train on other data than the folder says, and the count of skipped images would change the epoch
length and so the schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch.utils.data import DataLoader, Dataset

from ..data import (
    EvalDataset,
    ImageDataset,
    SSLBatchDataset,
    build_eval_transform,
    build_ssl_views,
    load_image_dataset,
)
from ..data.batched_views import build_batched_ssl_views
from ..data.wrappers import DecodedImages
from ..errors import ConfigError, UnknownSplitError
from .config import PretrainConfig

_MAX_CACHED = 100_000  # decoded images kept in memory up to this split size


@dataclass
class MonitorData:
    """Labelled loaders for the k-NN monitor: the feature bank and the query split."""

    bank: DataLoader
    query: DataLoader
    num_classes: int


def _load(config: PretrainConfig, split: str, field: str) -> ImageDataset:
    """Load ``split``; a missing split is reported with the config field to change."""
    try:
        return load_image_dataset(config.dataset, split=split, image_size=config.image_size,
                                  data_dir=config.data_dir, hub_id=config.hub_id)
    except UnknownSplitError as err:
        fix = f"set {field} to one of its splits ({', '.join(err.available)})" if err.available else f"change {field}"
        if field in ("eval_split", "eval_train_split"):
            fix += (", or set eval_split: null and eval_train_split: null (--eval_split null "
                    "--eval_train_split null) to train without the k-NN monitor")
        raise UnknownSplitError(f"{field}={split!r}: {err}; {fix}", split=split,
                                available=err.available) from None


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of image ``index``'s augmentation in ``epoch`` (both augmentation paths)."""
    return (seed * 1_000_003 + epoch) * 10_000_019 + index


def load_train_split(config: PretrainConfig) -> ImageDataset:
    """The pretraining split, cut to ``train_subset`` images when asked."""
    info = _load(config, config.train_split, "train_split")
    if config.train_subset is not None:
        info = replace(info, dataset=info.dataset.select(range(min(config.train_subset, len(info.dataset)))))
    return info


class SeededViews(Dataset):
    """Two-view samples whose augmentation depends only on ``(seed, epoch, index)``.

    Each sample is augmented under a forked RNG seeded from its epoch and index, so augmentations
    never consume the global RNG (which the gates' noise uses), do not depend on batch prefetching
    or worker scheduling, and a resumed run reproduces an uninterrupted one exactly.
    """

    def __init__(self, views: SSLBatchDataset, *, seed: int) -> None:
        self.views = views
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(augmentation_seed(self.seed, self.epoch, index))
            return self.views[index]


class SeededImages(Dataset):
    """Decoded ``uint8`` images with their augmentation key ``(seed, epoch, index)``, for the
    batched two-view collate (:class:`~timm_gated_ssl.data.batched_views.BatchedTwoViews`): the
    same seeding as :class:`SeededViews`, so resumes stay exact."""

    def __init__(self, images: DecodedImages, *, seed: int) -> None:
        self.images = images
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], augmentation_seed(self.seed, self.epoch, index)


def build_train_loader(config: PretrainConfig, info: ImageDataset, *, world_size: int) -> DataLoader:
    """Shuffled, drop-last loader of ``(view_gated, view_dense)`` pairs, ``batch_size`` per process.

    Raises:
        ValueError: When one global batch needs more images than the split holds.
    """
    global_batch = config.batch_size * world_size
    if global_batch > len(info.dataset):
        raise ValueError(
            f"batch_size={config.batch_size} x {world_size} process(es) = {global_batch} images per "
            f"step, but the {info.name!r} split {info.split!r} has only {len(info.dataset)}: lower "
            "batch_size or use more data"
        )
    view_args = {"crop_size": info.image_size, "mean": info.mean, "std": info.std,
                 "blur_prob_view1": config.blur_prob_gated, "blur_prob_view2": config.blur_prob_dense}
    cache = len(info.dataset) <= _MAX_CACHED
    collate = None
    if config.augmentation == "batched":
        images = DecodedImages(info.dataset, image_column=info.image_column, cache_decoded=cache)
        dataset: Dataset = SeededImages(images, seed=config.seed)
        collate = build_batched_ssl_views(**view_args).collate
    else:
        images = SSLBatchDataset(info.dataset, build_ssl_views(**view_args), image_column=info.image_column,
                                 cache_decoded=cache)
        dataset = SeededViews(images, seed=config.seed)
    images.decode_all()  # a bad image fails now, naming its file (workers inherit the cache)
    # Workers are not persistent: each epoch's workers get the dataset with the new epoch.
    # A loader-owned generator: creating an iterator never touches the global RNG, so a resumed
    # run draws the same augmentations and gate noise as an uninterrupted one.
    return DataLoader(
        dataset, batch_size=config.batch_size, shuffle=True, drop_last=True,
        num_workers=config.num_workers, generator=torch.Generator().manual_seed(config.seed),
        collate_fn=collate,
    )


def build_monitor_data(config: PretrainConfig, train: ImageDataset) -> MonitorData | None:
    """Loaders for the k-NN monitor, or None when the dataset has no labelled evaluation splits."""
    if config.eval_train_split is None or config.eval_split is None:
        return None
    bank = _load(config, config.eval_train_split, "eval_train_split")
    query = _load(config, config.eval_split, "eval_split")
    if bank.label_column is None or query.label_column is None or not bank.num_classes:
        raise ValueError(
            f"the k-NN monitor needs labels, but {config.dataset!r} splits {config.eval_train_split!r}/"
            f"{config.eval_split!r} have none: set eval_train_split and eval_split to labelled splits "
            "or to null"
        )
    if config.knn_max_bank is not None and len(bank.dataset) > config.knn_max_bank:
        bank = replace(bank, dataset=bank.dataset.shuffle(seed=0).select(range(config.knn_max_bank)))
    if len(bank.dataset) < config.knn_k:
        raise ConfigError(
            f"knn_k={config.knn_k} neighbours, but the k-NN bank ({config.eval_train_split!r}"
            + (f", knn_max_bank={config.knn_max_bank}" if config.knn_max_bank is not None else "")
            + f") holds {len(bank.dataset)} images: lower knn_k or use a larger bank"
        )
    transform = build_eval_transform(image_size=train.image_size, mean=train.mean, std=train.std)

    def loader(info: ImageDataset) -> DataLoader:
        dataset = EvalDataset(info.dataset, transform, image_column=info.image_column,
                              label_column=info.label_column, cache_decoded=True)
        dataset.decode_all()  # bad images fail before training, not at the first k-NN monitor
        return DataLoader(dataset, batch_size=max(config.batch_size, 256), shuffle=False,
                          num_workers=config.num_workers)

    return MonitorData(loader(bank), loader(query), int(bank.num_classes))
