"""Gate classes by ``gate_type``: the one place a new gate type plugs in.

``attach_gates`` builds every gate as ``GATE_CLASSES[config.gate_type].from_spec(spec, ...)``,
refusing blocks of a family the class does not list in ``families``; ``GateConfig`` accepts
exactly the registered types; ``compact`` finds a gate's compact block by ``(gate_type, family)``
(``compact.COMPACT_BUILDERS``).
"""

from __future__ import annotations

from ..registry import Registry
from .block_gate import BlockGate
from .width import WidthGate

__all__ = ["GATE_CLASSES", "gate_type_of"]

GATE_CLASSES: Registry[type[BlockGate]] = Registry("gate type")
GATE_CLASSES.add("channel", BlockGate)  # the paper's per-channel gates
GATE_CLASSES.add("width", WidthGate)  # per-input prefix widths (DS-Net style, docs/width_gates.md)


def gate_type_of(gate: BlockGate) -> str:
    """The ``gate_type`` a gate was built as (its configuration's)."""
    return gate.config.gate_type
