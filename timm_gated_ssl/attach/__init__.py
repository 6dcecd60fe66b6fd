"""Attach gates to timm models by hooks, and switch between dense and gated modes."""

from .api import (
    FAMILIES,
    GATE_ATTR,
    attach_gates,
    block_family,
    detach_gates,
    gate_config,
    gate_family,
    has_gates,
    iter_gates,
    register_family,
    require_gates,
)
from .modes import (
    clear_gate_masks,
    gate_masks,
    gate_mode,
    get_gate_mode,
    set_gate_mode,
    set_gate_noise,
)
from .spec import BlockFamily, BlockSpec
from .sync_bn import convert_sync_batchnorm

__all__ = [
    "FAMILIES", "GATE_ATTR", "BlockFamily", "BlockSpec", "attach_gates", "block_family", "clear_gate_masks", "convert_sync_batchnorm",
    "detach_gates", "gate_config", "gate_family", "gate_masks", "gate_mode", "get_gate_mode", "has_gates",
    "iter_gates", "register_family", "require_gates", "set_gate_mode", "set_gate_noise",
]
