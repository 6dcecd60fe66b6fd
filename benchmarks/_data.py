"""Labelled evaluation images for the benchmarks, through the library's evaluation transform."""

from __future__ import annotations

import torch

from timm_gated_ssl.data import EvalDataset, load_image_dataset
from timm_gated_ssl.data.views import build_eval_transform


def eval_images(dataset: str, *, split: str, count: int, size: int | None = None,
                seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of ``count`` images of a dataset preset's ``split``.

    The first ``count`` images, or with ``seed`` a random draw of ``count`` (same draw per seed).
    """
    info = load_image_dataset(dataset, split=split)
    if seed is None:
        pick = list(range(min(count, len(info))))
    else:
        pick = torch.randperm(len(info), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    tf = build_eval_transform(image_size=size or info.image_size, mean=info.mean, std=info.std)
    ev = EvalDataset(info.dataset.select(pick), image_column=info.image_column,
                     label_column=info.label_column, transform=tf)
    items = [ev[i] for i in range(len(ev))]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])
