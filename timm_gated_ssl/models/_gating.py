"""What every registered gated model does after building its timm backbone."""

from __future__ import annotations

from torch import nn

from ..attach import attach_gates
from ..calibration import budget_key, select_budget_on_load


def setup_gates(
    model: nn.Module,
    *,
    gated: bool,
    budget: float,
    separate_bn: bool,
    tau: float,
    gate_reduction: int,
    calibrated_budgets: dict[str, float] | None,
    gate_type: str = "channel",
    gate_levels: int = 8,
) -> None:
    """Attach gates (when ``gated``), keep the calibration table, and apply ``budget`` if calibrated.

    The calibrated budget is re-applied after timm loads pretrained weights, so
    ``timm.create_model(..., pretrained=True, budget=b)`` runs at budget ``b``.
    """
    if gated:
        attach_gates(model, budget=budget, separate_bn=separate_bn, tau=tau, reduction=gate_reduction,
                     gate_type=gate_type, levels=gate_levels)
    model.calibrated_budgets = {
        budget_key(float(k)): float(v) for k, v in (calibrated_budgets or {}).items()
    }
    if gated and budget_key(budget) in model.calibrated_budgets:
        select_budget_on_load(model, budget)
