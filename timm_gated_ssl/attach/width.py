"""Where width gates attach: timm ResNet blocks only (``BasicBlock``, ``Bottleneck``).

A width gate (``gates/width.py``) uses the ResNet family's layout (``resnet.py``: the mask after
``act1``, and for a Bottleneck also after ``act2``) with one level per block shared by its gated
widths. A grouped ``conv2`` (ResNeXt) keeps whole groups, so both inner widths of such a block are
cut in units of groups. ViT heads and MLP units are not offered: a prefix over 3-12 heads leaves
fewer levels than a useful level set, and the compact ViT path slices by channel sets; use the
default channel gates there.
"""

from __future__ import annotations

from timm.models.resnet import Bottleneck
from torch import nn

from ..errors import UnsupportedModelError
from ..gates import GateConfig, WidthGate
from .resnet import resnet_block_spec
from .spec import BlockSpec

SUPPORTED = "timm ResNet blocks (BasicBlock, Bottleneck: resnet*, seresnet*, resnext*, wide_resnet*, ...)"


def width_gate(name: str, block: nn.Module, spec: BlockSpec, config: GateConfig) -> WidthGate:
    """The width gate of ``block`` (found by a registered family with layout ``spec``).

    Raises:
        UnsupportedModelError: ``block`` is not a timm ResNet block.
        ValueError: ``config.levels`` is more than the block's widths allow.
    """
    if resnet_block_spec(block) is None:
        raise UnsupportedModelError(
            f"gate_type='width' cannot gate block {name!r} ({type(block).__module__}."
            f"{type(block).__name__}); width gates support {SUPPORTED}. Use gate_type='channel' "
            "(the default) for this model"
        )
    groups = block.conv2.groups if isinstance(block, Bottleneck) else 1
    try:
        return WidthGate(
            spec.in_channels,
            spec.widths,
            config=config,
            norms={path: block.get_submodule(path) for path in spec.norm_paths},
            pooling=spec.pooling,
            groups=groups,
        )
    except ValueError as error:
        raise ValueError(f"block {name!r}: {error}") from None
