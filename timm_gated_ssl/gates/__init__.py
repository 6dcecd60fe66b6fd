"""Gate modules: the estimator, the gate network, and the per-block gate that owns the hooks."""

from .block_gate import BlockGate, MaskPoint
from .config import GATE_MODES, GATE_TYPES, GateConfig
from .estimator import DEFAULT_TAU, straight_through_gate
from .network import GateNetwork
from .width import WidthGate, level_sizes

__all__ = [
    "DEFAULT_TAU", "GATE_MODES", "GATE_TYPES", "BlockGate", "GateConfig", "GateNetwork", "MaskPoint", "WidthGate",
    "level_sizes", "straight_through_gate",
]
