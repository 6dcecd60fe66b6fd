"""Calibration around fine-tuning: extra budgets for linear heads, re-calibration after ``full``.

Calibration (:func:`~timm_gated_ssl.calibration.calibrate_budget`) finds the global gate-logit
offset at which the deterministic gated network uses a target fraction of the dense MACs on
held-out images, and records it in the model's table (``config.json``'s ``calibrated_budgets``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn

from ..calibration import (
    TABLE_ATTR,
    CalibrationResult,
    calibrate_budget,
    gate_offset,
    set_gate_offset,
)

__all__ = ["calibrate_keeping_operating_point", "recalibrate"]


def calibrate_keeping_operating_point(
    model: nn.Module, loader: Iterable[Any], budgets: Sequence[float], *, tol: float
) -> dict[float, float]:
    """Calibrate ``budgets`` into the table (``{budget: offset}`` returned) and put the model back
    at the threshold and ``budget`` argument it had, so its export still runs where it was trained
    (linear mode: the backbone is frozen, so the table stays valid)."""
    offset = gate_offset(model)
    args = dict(getattr(model, "_model_args", None) or {})
    offsets = {b: calibrate_budget(model, loader, b, tol=tol).offset for b in budgets}
    set_gate_offset(model, offset)
    if "budget" in args:
        model._model_args = {**model._model_args, "budget": args["budget"]}
    return offsets


def recalibrate(
    model: nn.Module, loader: Iterable[Any], target: float, extra: Sequence[float], *, tol: float
) -> dict[float, CalibrationResult]:
    """After full fine-tuning: forget the old table (its offsets belong to the old weights),
    calibrate ``extra`` and then ``target``, which stays the operating point (the ``budget`` model
    argument and the gates' offset)."""
    model.calibrated_budgets = {}
    if TABLE_ATTR in inspect.signature(type(model).__init__).parameters:
        model._model_args = {**getattr(model, "_model_args", {}), TABLE_ATTR: {}}
    results = {b: calibrate_budget(model, loader, b, tol=tol) for b in extra if b != target}
    results[target] = calibrate_budget(model, loader, target, tol=tol)
    return results
