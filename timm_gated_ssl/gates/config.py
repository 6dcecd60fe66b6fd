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
    """

    budget: float = 0.5
    separate_bn: bool = True
    tau: float = DEFAULT_TAU
    reduction: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "budget", check_budget(self.budget))
        if not isinstance(self.separate_bn, bool):
            raise TypeError(f"separate_bn must be a bool, got {self.separate_bn!r}")
        if not (isinstance(self.tau, (int, float)) and self.tau > 0):
            raise ValueError(f"tau must be a positive number, got {self.tau!r}")
        if isinstance(self.reduction, bool) or not isinstance(self.reduction, int) or self.reduction < 1:
            raise ValueError(f"reduction must be an integer >= 1, got {self.reduction!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the fields."""
        return dataclasses.asdict(self)
