"""Labelled data of the fine-tuning recipe: augmented training crops, test and calibration loaders.

Training images get the linear-evaluation augmentation of the SSL literature (RandomResizedCrop with
scale (0.08, 1), bicubic, and a horizontal flip; e.g. Bardes et al., "VICReg", arXiv:2105.04906,
Appendix C.2, as in solo-learn's linear protocol), test images the deterministic evaluation
transform of :func:`~timm_gated_ssl.data.build_eval_transform`. The splits are chosen by
:func:`~timm_gated_ssl.eval.phases.protocol_data_for` (as for evaluation), so budgets are
calibrated on training images held out of the training set, never on the test split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode

from ..data import EvalDataset, ImageDataset, build_eval_transform, to_rgb_uint8
from ..eval.phases import protocol_data_for
from ..eval.protocol_data import ProtocolData
from ..recipe.data import SeededViews
from .config import FinetuneConfig

__all__ = ["FinetuneData", "build_finetune_data", "build_train_transform"]

_MAX_CACHED_IMAGES = 100_000


def build_train_transform(
    *, image_size: int, mean: tuple[float, ...], std: tuple[float, ...], scale_min: float = 0.08,
    hflip: bool = True,
) -> Callable[[Any], Tensor]:
    """RandomResizedCrop(``image_size``, scale ``(scale_min, 1)``, bicubic) + flip (``hflip``) + normalise."""
    return v2.Compose([
        to_rgb_uint8,
        v2.RandomResizedCrop(image_size, scale=(scale_min, 1.0),
                             interpolation=InterpolationMode.BICUBIC, antialias=True),
        *([v2.RandomHorizontalFlip()] if hflip else []),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ])


@dataclass
class FinetuneData:
    """Loaders of one run.

    Attributes:
        train: Shuffled, drop-last ``(image, label)`` batches, ``batch_size`` per process; its
            dataset is a :class:`~timm_gated_ssl.recipe.data.SeededViews` (``set_epoch``, ``seed``).
        test: Test split, deterministic transform.
        calibration: Held-out training images (deterministic transform), or None.
        protocol: The chosen splits (sizes, sources, number of classes, image size).
    """

    train: DataLoader
    test: DataLoader
    calibration: DataLoader | None
    protocol: ProtocolData


def build_finetune_data(
    config: FinetuneConfig, *, pretrain_config: dict[str, Any], need_calibration: bool, world_size: int
) -> FinetuneData:
    """Load the labelled splits and build the loaders.

    Raises:
        ValueError: A split without labels, ``num_classes`` that disagrees with the dataset, or a
            global batch larger than the training set.
    """
    protocol = protocol_data_for(
        pretrain_config, dataset=str(config.dataset), train_split=config.train_split,
        test_split=config.test_split, calibration_split=None, calibration_size=config.calibration_size,
        need_calibration=need_calibration, image_size=config.image_size, data_dir=config.data_dir,
        hub_id=config.hub_id, max_train=config.train_subset, seed=config.seeds[0],
    )
    if config.num_classes is not None and config.num_classes != protocol.num_classes:
        raise ValueError(
            f"num_classes={config.num_classes} but {config.dataset!r} has {protocol.num_classes} "
            f"classes (labels of {config.train_split!r}/{config.test_split!r}); drop num_classes or "
            "fix it"
        )
    train_info, size = protocol.train, protocol.image_size
    global_batch = config.batch_size * world_size
    if global_batch > len(train_info):
        raise ValueError(
            f"batch_size={config.batch_size} x {world_size} process(es) = {global_batch} images per "
            f"step, but the training set has only {len(train_info)}: lower batch_size"
        )
    eval_transform = build_eval_transform(image_size=size, mean=train_info.mean, std=train_info.std)
    train_transform = (
        build_train_transform(image_size=size, mean=train_info.mean, std=train_info.std,
                              scale_min=config.crop_scale_min, hflip=config.hflip)
        if config.augment else eval_transform
    )

    def rows(info: ImageDataset, transform: Callable[[Any], Tensor]) -> EvalDataset:
        return EvalDataset(info.dataset, transform, image_column=info.image_column,
                           label_column=info.label_column,
                           cache_decoded=len(info) <= _MAX_CACHED_IMAGES)

    def eval_loader(info: ImageDataset) -> DataLoader:
        return DataLoader(rows(info, eval_transform), batch_size=max(config.batch_size, 256),
                          shuffle=False, num_workers=config.num_workers)

    # Seeded per-sample augmentation and a loader-owned generator: a resumed run draws the same
    # crops and order as an uninterrupted one (as the pretraining recipe).
    train = DataLoader(
        SeededViews(rows(train_info, train_transform), seed=config.seeds[0]),  # type: ignore[arg-type]
        batch_size=config.batch_size, shuffle=True, drop_last=True, num_workers=config.num_workers,
        generator=torch.Generator().manual_seed(config.seeds[0]),
    )
    calibration = eval_loader(protocol.calibration) if protocol.calibration is not None else None
    return FinetuneData(train, eval_loader(protocol.test), calibration, protocol)
