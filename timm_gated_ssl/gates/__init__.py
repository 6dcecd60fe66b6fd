"""Gate modules: the estimator, the gate network, and the per-block gate that owns the hooks."""

from .block_gate import BlockGate, MaskPoint
from .config import GATE_MODES, GateConfig
from .estimator import DEFAULT_TAU, straight_through_gate
from .network import GateNetwork

__all__ = ["DEFAULT_TAU", "GATE_MODES", "BlockGate", "GateConfig", "GateNetwork", "MaskPoint", "straight_through_gate"]
