"""The gate network: a tiny bottleneck MLP from a pooled block input to per-channel logits."""

from __future__ import annotations

import torch
from torch import nn


class GateNetwork(nn.Module):
    """Pooled features -> 1x1 conv (C_in -> C_in/r, no bias) -> BN -> ReLU -> 1x1 conv -> logits.

    This is the channel gate of DGNet (Li et al., ICCV 2021) as used by Krishna et al. (BMVC 2023),
    with ``r = 4``. It runs on a ``(B, C_in)`` pooled vector, so its cost per image is
    ``C_in * C_hidden + C_hidden * C_out`` multiply-accumulates whatever the image size.

    Args:
        in_channels: Channels of the pooled block input.
        out_channels: Number of logits (the gated channels of the block).
        reduction: Hidden width is ``max(in_channels // reduction, 1)``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(in_channels // reduction, 1)
        self.reduce = nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(hidden)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one gate evaluation (one image)."""
        return int(self.reduce.weight.numel() + self.expand.weight.numel())

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C_in)`` pooled features to ``(B, C_out)`` logits."""
        x = pooled[:, :, None, None]
        x = self.expand(self.act(self.norm(self.reduce(x))))
        return x.flatten(1)
