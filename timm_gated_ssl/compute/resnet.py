"""Gated compute of timm ResNet blocks (``BasicBlock``, ``Bottleneck``).

Matches where ``attach/resnet.py`` puts the masks:

* ``BasicBlock``, one mask ``m`` after ``act1``: ``conv1`` loses output channels, ``conv2`` input
  channels, and an anti-aliasing blur between them (``resnetblur*``) runs only on active channels.
  For a 3x3 block this is the paper's ``9 * H * W * |m|_1 * (C_in + C_out)``.
* ``Bottleneck``, masks ``m1`` after ``act1`` and ``m2`` after ``act2``: ``conv1`` loses outputs by
  ``m1``, ``conv2`` (possibly grouped, as in resnext) inputs by ``m1`` and outputs by ``m2``, the
  blur (if any) channels by ``m2``, ``conv3`` inputs by ``m2``.

Everything else in the block (downsample, SE/ECA on the block output) keeps its dense cost.
"""

from __future__ import annotations

from collections.abc import Sequence

from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from ..gates import BlockGate
from .core import CostTerm, LayerStats, register_block_cost


def _term(
    stats: LayerStats, block: nn.Module, path: str, in_width: int | None, out_width: int | None
) -> CostTerm | None:
    """The cost term of the block's layer at ``path``, or None if it did not run / is not a layer."""
    layer = block.get_submodule(path)
    macs = stats.macs.get(layer)
    if macs is None:
        return None
    if isinstance(layer, nn.Conv2d):
        cin, cout, groups = layer.in_channels, layer.out_channels, layer.groups
    else:  # BlurPool2d: a depthwise conv on one width, channels in == out
        cin = cout = groups = stats.out_shapes[layer][0]
    return CostTerm(path, macs, cin, cout, in_width=in_width, out_width=out_width, groups=groups)


@register_block_cost("resnet")
def resnet_block_cost(block: nn.Module, gate: BlockGate, stats: LayerStats) -> Sequence[CostTerm] | None:
    """Cost terms of a gated timm ResNet block; None for any other module."""
    if isinstance(block, BasicBlock):
        layout = [("conv1", None, 0), ("aa", 0, 0), ("conv2", 0, None)]
    elif isinstance(block, Bottleneck):
        layout = [("conv1", None, 0), ("conv2", 0, 1), ("aa", 1, 1), ("conv3", 1, None)]
    else:
        return None
    terms = [_term(stats, block, path, i, o) for path, i, o in layout]
    return [t for t in terms if t is not None]
