"""What a block family tells the attach machinery: where a gate reads, masks and keeps norms."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..gates import MaskPoint
from ..gates.block_gate import Pooling


@dataclass(frozen=True)
class BlockSpec:
    """The gating layout of one block.

    Attributes:
        in_channels: Width of the block input the gate reads.
        widths: Size of each gated width, in forward order.
        mask_points: Where each width's mask is applied.
        norm_paths: The block's norms that exist once per mode with ``separate_bn``.
        pooling: How the gate pools the block input (``"spatial"`` or ``"tokens"``).
        groups: Conv groups a width gate keeps whole (a ResNeXt Bottleneck's grouped ``conv2``).
        units: What one channel of each width is, for error messages (empty: ``"channels"``; ViT:
            ``("attention heads", "MLP hidden units")``).
    """

    in_channels: int
    widths: tuple[int, ...]
    mask_points: tuple[MaskPoint, ...]
    norm_paths: tuple[str, ...]
    pooling: Pooling = "spatial"
    groups: int = 1
    units: tuple[str, ...] = ()


@dataclass(frozen=True)
class BlockFamily:
    """A family of blocks gates can attach to.

    Attributes:
        name: Short name, the family's key in ``attach.FAMILIES`` and in the registries keyed by
            family (``compute.BLOCK_COSTS``, ``compact.COMPACT_BUILDERS``, ``compact.STATIC_EXPORTERS``).
        description: Which timm models the family covers, shown in errors.
        spec: Returns the layout for a block of this family, or None for any other module.
    """

    name: str
    description: str
    spec: Callable[[nn.Module], BlockSpec | None]
