"""Gates for timm's ResNet family (``timm.models.resnet.BasicBlock`` and ``Bottleneck``).

Covers every timm model built from these blocks: resnet18..152 and their d/t/s/rs stems, seresnet*,
resnext* (grouped convs), wide_resnet*, resnetblur*, resnetaa*, ecaresnet*, ...

Where the masks go:

* ``BasicBlock``: one mask on conv1's output channels, applied after ``bn1`` and ``act1`` (before the
  optional anti-aliasing and ``conv2``). An off channel saves conv1's output channel and conv2's
  input channel, exactly as in Krishna et al. (BMVC 2023).
* ``Bottleneck`` (not covered by the paper): two masks, one per inner width: after ``act1`` (saves a
  conv1 output and a conv2 input channel) and after ``act2`` (saves a conv2 output and a conv3 input
  channel). Gating both widths lets the 3x3 conv, which holds most of a Bottleneck's compute, shrink
  on both sides; the block output (the residual stream) is never gated, as in the paper. One gate
  network emits the logits of both widths.

Shortcuts/downsamples and the stem are not gated; with separate norms, every norm inside the block's
residual branch (``bn1``, ``bn2`` and, for Bottleneck, ``bn3``) has a gated copy.
"""

from __future__ import annotations

from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from ..gates import MaskPoint
from .spec import BlockSpec


def resnet_block_spec(block: nn.Module) -> BlockSpec | None:
    """The gating layout of a timm ResNet block, or None for any other module."""
    if isinstance(block, BasicBlock):
        return BlockSpec(
            in_channels=block.conv1.in_channels,
            widths=(block.conv1.out_channels,),
            mask_points=(MaskPoint("act1"),),
            norm_paths=("bn1", "bn2"),
        )
    if isinstance(block, Bottleneck):
        return BlockSpec(
            in_channels=block.conv1.in_channels,
            widths=(block.conv1.out_channels, block.conv2.out_channels),
            mask_points=(MaskPoint("act1"), MaskPoint("act2")),
            norm_paths=("bn1", "bn2", "bn3"),
            groups=block.conv2.groups,
        )
    return None
