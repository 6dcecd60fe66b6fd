"""The gate configuration shared by every gate of a model."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import check_budget
from .estimator import DEFAULT_TAU

GATE_MODES = ("dense", "gated")


@dataclasses.dataclass(frozen=True)
class GateConfig:
    """How gates are attached; recorded on every gate and in a checkpoint's ``model_args``.

    Attributes:
        budget: Training target ``t_d`` of the budget loss: the fraction of the dense
            multiply-accumulates the gated network should use, in (0, 1].
        separate_bn: Keep one set of the block's norm layers per mode (the paper's setting); the
            gated copies start as copies of the dense ones.
        tau: Temperature of the straight-through gate estimator.
        reduction: Hidden width of the gate network is ``C_in // reduction``.
        gate_type: A key of ``gates.GATE_CLASSES``: ``"channel"`` (the paper's per-channel gates)
            or ``"width"`` (one prefix width per block and input, chosen among ``levels`` levels).
        levels: Number of width levels of a ``"width"`` gate (level ``k`` keeps ``k / levels`` of
            each gated width); at least 2. Ignored by channel gates.
    """

    budget: float = 0.5
    separate_bn: bool = True
    tau: float = DEFAULT_TAU
    reduction: int = 4
    gate_type: str = "channel"
    levels: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "budget", check_budget(self.budget))
        if not isinstance(self.separate_bn, bool):
            raise TypeError(f"separate_bn must be a bool, got {self.separate_bn!r}")
        if not (isinstance(self.tau, (int, float)) and self.tau > 0):
            raise ValueError(f"tau must be a positive number, got {self.tau!r}")
        if isinstance(self.reduction, bool) or not isinstance(self.reduction, int) or self.reduction < 1:
            raise ValueError(f"reduction must be an integer >= 1, got {self.reduction!r}")
        from .types import GATE_CLASSES  # the registry imports the gate classes, which import this

        if self.gate_type not in GATE_CLASSES:
            raise ValueError(f"unknown gate_type {self.gate_type!r}; valid gate types: "
                             f"{', '.join(map(str, GATE_CLASSES))}")
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 2:
            raise ValueError(f"levels (gate_levels) must be an integer >= 2, got {self.levels!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the fields."""
        return dataclasses.asdict(self)
