"""Exact MAC accounting of dense and gated networks (see ``docs/compute.md``).

``core`` holds the family-independent machinery (layer hooks, cost tables, :func:`count_macs`);
each block family has one module that registers how its masks change its layers' costs
(``resnet``, ``vit``; a new family adds ``<family>.py`` with a ``@register_block_cost`` function and one
import line below).
"""

from . import resnet, vit  # noqa: F401  (register the ResNet and ViT families)
from .core import (
    BLOCK_COSTS,
    BlockCost,
    BlockCostFn,
    BlockMacs,
    CostTable,
    CostTerm,
    LayerStats,
    MacCount,
    cost_table,
    count_macs,
    gated_macs,
    register_block_cost,
)

__all__ = [
    "BLOCK_COSTS", "BlockCost", "BlockCostFn", "BlockMacs", "CostTable", "CostTerm", "LayerStats",
    "MacCount", "cost_table", "count_macs", "gated_macs", "register_block_cost",
]
