"""Gate modules: the estimator, the gate network, and the per-block gate that owns the hooks."""

from .block_gate import BlockGate, GateSpec, MaskPoint
from .config import GATE_MODES, GateConfig
from .estimator import DEFAULT_TAU, straight_through_gate
from .network import GateNetwork
from .types import GATE_CLASSES, gate_type_of
from .width import WidthGate, level_sizes

GATE_TYPES = tuple(str(key) for key in GATE_CLASSES)
"""The built-in gate types (``GATE_CLASSES`` is the registry new types are added to)."""

__all__ = [
    "DEFAULT_TAU", "GATE_CLASSES", "GATE_MODES", "GATE_TYPES", "BlockGate", "GateConfig", "GateNetwork", "GateSpec",
    "MaskPoint", "WidthGate", "gate_type_of", "level_sizes", "straight_through_gate",
]
