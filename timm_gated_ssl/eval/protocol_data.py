"""The labelled splits of the evaluation protocol: k-NN bank / probe training set, test set, calibration images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..data import ImageDataset, load_image_dataset
from ..errors import UnknownSplitError

__all__ = ["ProtocolData", "prepare_data"]


def _labelled(info: ImageDataset, role: str, argument: str) -> ImageDataset:
    if info.label_column is None or not info.num_classes:
        raise ValueError(
            f"the {role} split {info.split!r} of {info.name!r} has no labels (columns: "
            f"{list(info.dataset.column_names)}); k-NN and the linear probe need labelled data: pass "
            f"{argument}= a labelled split (for STL-10: 'train' / 'test', not 'unlabeled')"
        )
    return info


def _load(dataset: str, split: str, argument: str, kwargs: dict[str, Any]) -> ImageDataset:
    """Load ``split``; a missing split is reported with the argument (and flag) to change."""
    try:
        return load_image_dataset(dataset, split=split, **kwargs)
    except UnknownSplitError as err:
        choices = f" one of its splits ({', '.join(err.available)})" if err.available else " another split"
        raise UnknownSplitError(f"{argument}={split!r}: {err}; pass --{argument} ({argument}=){choices}",
                                split=split, available=err.available) from None


def _subset(info: ImageDataset, indices: Sequence[int]) -> ImageDataset:
    from dataclasses import replace

    return replace(info, dataset=info.dataset.select(sorted(indices)))


@dataclass(frozen=True)
class ProtocolData:
    """The splits of one evaluation: bank / probe training set, test set, calibration images."""

    train: ImageDataset
    test: ImageDataset
    calibration: ImageDataset | None
    calibration_source: str | None
    num_classes: int
    image_size: int


def prepare_data(
    *,
    dataset: str,
    train_split: str,
    test_split: str,
    calibration_split: str | None,
    calibration_size: int | None,
    need_calibration: bool,
    image_size: int | None,
    data_dir: str | os.PathLike[str] | None,
    hub_id: str | None,
    max_train: int | None,
    seed: int,
) -> ProtocolData:
    """Load the labelled train and test splits and choose the bank and calibration images.

    The bank (k-NN memory and linear-probe training set) is ``train_split``, capped at ``max_train``
    images; the calibration images are ``calibration_split`` when given, else a held-out slice of
    ``train_split`` that the bank does not use, so budgets are never calibrated on test images.

    Raises:
        ValueError: a bad ``max_train`` / ``calibration_size``, a calibration split that is the
            test split, or a split without labels.
    """
    if max_train is not None and (isinstance(max_train, bool) or max_train < 1):
        raise ValueError(f"max_train must be None or an integer >= 1, got {max_train!r}")
    if calibration_size is not None and calibration_size < 1:
        raise ValueError(f"calibration_size must be None or >= 1, got {calibration_size!r}")
    if calibration_split is not None and calibration_split == test_split:
        raise ValueError(
            f"calibration_split={calibration_split!r} is the test split: calibrating the budgets on "
            "the images they are evaluated on would leak; leave it None (a held-out slice of "
            "train_split) or name another split"
        )
    kwargs: dict[str, Any] = {"image_size": image_size, "data_dir": data_dir, "hub_id": hub_id}
    train = _labelled(_load(dataset, train_split, "train_split", kwargs), "train", "train_split")
    test = _labelled(_load(dataset, test_split, "test_split", kwargs), "test", "test_split")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=generator).tolist()
    calibration = source = None
    held_out = 0
    if need_calibration and calibration_split is None:
        held_out = calibration_size or min(2048, max(1, len(train) // 10))
        if held_out >= len(train):
            raise ValueError(
                f"calibration_size={held_out} leaves no training images of the {len(train)} in "
                f"{train_split!r}"
            )
        calibration = _subset(train, order[len(order) - held_out :])
        source = f"{train_split} (held out: {held_out} images, not in the probe/k-NN bank)"
    elif need_calibration:
        info = _load(dataset, calibration_split, "calibration_split", kwargs)
        if calibration_size is not None and calibration_size < len(info):
            pick = torch.randperm(len(info), generator=torch.Generator().manual_seed(seed))
            info = _subset(info, pick[:calibration_size].tolist())
        calibration, source = info, calibration_split
    pool = order[: len(order) - held_out]
    bank = pool if max_train is None else pool[:max_train]
    return ProtocolData(
        train=_subset(train, bank) if len(bank) < len(train) else train,
        test=test,
        calibration=calibration,
        calibration_source=source,
        num_classes=max(int(train.num_classes or 0), int(test.num_classes or 0)),
        image_size=train.image_size,
    )
