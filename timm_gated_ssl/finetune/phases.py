"""The two fine-tuning modes, phase by phase: what each trains, one step's forward, and the heads
the test split is evaluated with. ``recipes/finetune.py`` runs the loop around them.

* ``linear``: the budgets are calibrated first on the frozen backbone, one head per spec
  (:func:`linear_phase`), each step reads every spec's pooled features without gradients.
* ``full``: backbone and a dense and a gated head train together with the budget losses
  (:func:`full_phase`); afterwards the budgets are re-calibrated on held-out training images and
  the trained heads are evaluated at them (:func:`full_heads`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..attach import convert_sync_batchnorm
from ..budget import BudgetLoss
from ..calibration import budget_key, gate_offset
from ..recipe.dual import StepOutput
from .budgets import calibrate_keeping_operating_point, recalibrate
from .config import FinetuneConfig
from .heads import (
    DualClassifier,
    HeadResult,
    HeadSpec,
    LinearHeads,
    head_specs,
    pooled_features,
    running,
)

if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

__all__ = ["full_heads", "full_phase", "linear_phase", "result_rows", "rows_to_results", "step"]


def linear_phase(backbone: nn.Module, config: FinetuneConfig, *, num_classes: int, gated: bool,
                 trained_budget: float | None, calibration: DataLoader | None) -> tuple[LinearHeads, list[HeadSpec]]:
    """Calibrate ``config.budgets`` (keeping the checkpoint's operating point), freeze the backbone
    in eval mode, and return the zero-initialised heads with their specs."""
    calibrated = {}
    if config.budgets:
        calibrated = calibrate_keeping_operating_point(backbone, calibration, config.budgets,
                                                       tol=config.calibration_tol)
    specs = head_specs(backbone, budget=trained_budget, offset=gate_offset(backbone) if gated else None,
                       calibrated=calibrated)
    backbone.eval().requires_grad_(False)
    heads = LinearHeads(specs, backbone.num_features, num_classes, label_smoothing=config.label_smoothing)
    return heads, specs


def full_phase(backbone: nn.Module, config: FinetuneConfig, *, num_classes: int, target: float,
               accelerator: Accelerator) -> nn.Module:
    """Backbone, a dense and a gated head and the budget losses towards ``target``, as one module
    (SyncBatchNorm across GPUs)."""
    budget_loss = BudgetLoss(target, compute_weight=config.budget_weight, bound_weight=config.bound_weight,
                             bound_schedule="epoch", alpha=config.bound_alpha)
    model: nn.Module = DualClassifier(backbone, num_classes, budget_loss=budget_loss,
                                      label_smoothing=config.label_smoothing,
                                      noise_schedule=config.gate_noise_schedule)
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        model = convert_sync_batchnorm(model)
    return model


def step(model: nn.Module, backbone: nn.Module, specs: Sequence[HeadSpec], images: Tensor, labels: Tensor, *,
         mode: str, epoch: float, progress: float, accelerator: Accelerator) -> StepOutput:
    """One training step's forward in ``mode`` (the caller backpropagates ``loss``)."""
    if mode == "linear":
        with torch.no_grad(), accelerator.autocast():
            features = {}
            for spec in specs:
                with running(backbone, spec):
                    features[spec.key] = pooled_features(backbone, images)
        return model(features, labels)
    return model(images, labels, epoch=epoch, progress=progress)


def full_heads(backbone: nn.Module, trained: dict[str, nn.Linear], config: FinetuneConfig, *, target: float,
               calibration: DataLoader | None) -> tuple[list[HeadSpec], dict[str, nn.Linear], float]:
    """After a full fine-tune: re-calibrate ``target`` and ``config.budgets`` on held-out training
    images, and return the specs, the trained head of each spec and the calibrated MAC fraction
    of ``target``."""
    backbone.eval()
    results = recalibrate(backbone, calibration, target, config.budgets, tol=config.calibration_tol)
    specs = [HeadSpec("dense", "dense"), HeadSpec("gated", "gated", target, results[target].offset, True)]
    specs += [HeadSpec(f"gated_t{budget_key(b)}", "gated", b, r.offset, True)
              for b, r in results.items() if b != target]
    heads = {s.key: trained["dense" if s.mode == "dense" else "gated"] for s in specs}
    return specs, heads, results[target].mac_fraction


def result_rows(results: Sequence[HeadResult]) -> list[dict[str, Any]]:
    """Test results as the JSON-safe rows kept in the training state (``FinetuneState.finished``)."""
    return [{**asdict(r.spec), "top1": r.top1, "macs": r.macs, "mac_fraction": r.mac_fraction} for r in results]


def rows_to_results(runs: Sequence[Sequence[dict[str, Any]]]) -> list[list[HeadResult]]:
    """:func:`result_rows` of every seed back to :class:`HeadResult` lists."""
    fields = HeadSpec.__dataclass_fields__
    return [[HeadResult(HeadSpec(**{k: v for k, v in row.items() if k in fields}), row["top1"], row["macs"],
                        row["mac_fraction"]) for row in run] for run in runs]
