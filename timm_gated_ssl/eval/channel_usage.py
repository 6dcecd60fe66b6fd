"""How gated channels behave over a dataset: always off, always on, or data-dependent.

The paper's supplementary material (Krishna et al., BMVC 2023) shows, per gated block, how many
channels the deterministic gates never fire (removable by a static export), fire for every sample
(could be made dense), and fire for some samples only (the truly dynamic part).

Example:
    >>> import torch
    >>> masks = {"layer1.0": torch.tensor([[0, 1, 1], [0, 1, 0]])}
    >>> channel_usage_from_masks(masks)
    [ChannelUsage(block='layer1.0', always_off=1, always_on=1, dynamic=1)]
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ..results.records import ChannelUsage

__all__ = ["ChannelUsage", "channel_usage_from_masks"]


def channel_usage_from_masks(masks: Mapping[str, Tensor]) -> list[ChannelUsage]:
    """Count always-off, always-on and data-dependent channels from stacked gate masks.

    Args:
        masks: Block name -> ``[N, C]`` 0/1 (or bool) masks of the ``N`` samples of a dataset, e.g.
            the deterministic inference gates of every test image.

    Returns:
        One :class:`ChannelUsage` per block, in the mapping's order.

    Raises:
        ValueError: If a mask is not 2-D, has no samples, or holds values other than 0 and 1.
    """
    usage: list[ChannelUsage] = []
    for block, mask in masks.items():
        mask = torch.as_tensor(mask)
        if mask.ndim != 2:
            raise ValueError(
                f"mask of block {block!r} must be 2-D [N samples, C channels], "
                f"got shape {tuple(mask.shape)}"
            )
        if mask.shape[0] == 0:
            raise ValueError(f"mask of block {block!r} has no samples (shape {tuple(mask.shape)})")
        if mask.dtype != torch.bool:
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise ValueError(f"mask of block {block!r} must hold only 0 and 1 values")
            mask = mask != 0
        fired = mask.sum(dim=0)
        always_off = int((fired == 0).sum())
        always_on = int((fired == mask.shape[0]).sum())
        usage.append(
            ChannelUsage(
                block=str(block),
                always_off=always_off,
                always_on=always_on,
                dynamic=int(mask.shape[1]) - always_off - always_on,
            )
        )
    return usage
