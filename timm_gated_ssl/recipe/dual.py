"""The co-training step as one module: gated pass on view 1, dense pass on view 2, SSL loss on the
two embeddings, plus the compute and bound losses (Krishna et al., BMVC 2023, Sec. 3).

``L = SSL(z_gated, z_dense) + lambda * (F_g / F_d - t_d)^2 + gamma * L_bound``

Both passes run inside one ``forward`` so that DDP sees every parameter used once per step. With
``gating=False`` both views take the dense pass and the budget terms vanish: the vanilla baseline
with the identical recipe.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..attach import gate_masks, gate_mode, has_gates, set_gate_mode
from ..budget import BudgetLoss
from ..ssl import MomentumEncoder, SSLObjective


@dataclass
class StepOutput:
    """What one training step produced.

    Attributes:
        loss: The total loss to back-propagate.
        terms: Detached scalars for logging (ssl, compute, bound, ...).
        mac_ratio: Batch mean of ``F_g / F_d`` of the gated pass (None without gating).
    """

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    mac_ratio: Tensor | None = None


class DualSSLModel(nn.Module):
    """Backbone + SSL objective (+ budget losses, + BYOL target) for co-training.

    Args:
        backbone: A timm model with ``num_classes=0`` (pooled features); gated when ``gating``.
        objective: Projector (+ predictor) and SSL loss.
        gating: Co-train the gated mode (False: vanilla dense SSL).
        budget_loss: ``lambda * (F_g/F_d - t_d)^2 + gamma * L_bound`` (required with gating).
        momentum_target: Keep a BYOL momentum copy of backbone and projector as the target.
    """

    def __init__(
        self,
        backbone: nn.Module,
        objective: SSLObjective,
        *,
        gating: bool,
        budget_loss: BudgetLoss | None = None,
        momentum_target: bool = False,
    ) -> None:
        super().__init__()
        if gating and not has_gates(backbone):
            raise ValueError(
                "gating=True needs a gated backbone: use a gated_* architecture "
                "(e.g. gated_resnet18_cifar) or set gating: false for the vanilla baseline"
            )
        if not gating and has_gates(backbone):
            raise ValueError(
                "gating=False trains the vanilla baseline and needs a plain backbone "
                "(e.g. resnet18_cifar instead of gated_resnet18_cifar)"
            )
        if gating and budget_loss is None:
            raise ValueError("gating=True needs a budget_loss")
        self.backbone = backbone
        self.objective = objective
        self.gating = gating
        self.budget_loss = budget_loss
        self.target: MomentumEncoder | None = None
        if momentum_target:
            target = nn.ModuleDict({
                "backbone": copy.deepcopy(backbone), "projector": copy.deepcopy(objective.projector)
            })
            if gating:
                set_gate_mode(target["backbone"], "dense")
            self.target = MomentumEncoder(target)

    def _target(self, images: Tensor) -> Tensor:
        assert self.target is not None
        nets = self.target.module
        with torch.no_grad():
            return nets["projector"](nets["backbone"](images))

    def forward(self, view_gated: Tensor, view_dense: Tensor, *, epoch: float = 0.0) -> StepOutput:
        """One co-training step's loss.

        Args:
            view_gated: First augmented view; takes the gated pass (dense without gating).
            view_dense: Second augmented view; takes the dense pass.
            epoch: Fractional epoch, for the bound loss's relaxation schedule.
        """
        if self.gating:
            with gate_mode(self.backbone, "gated"):
                h_gated = self.backbone(view_gated)
            with gate_mode(self.backbone, "dense"):
                h_dense = self.backbone(view_dense)
        else:
            h_gated, h_dense = self.backbone(view_gated), self.backbone(view_dense)

        targets = {}
        if self.target is not None:
            targets = {"target_a": self._target(view_gated), "target_b": self._target(view_dense)}
        ssl = self.objective(h_gated, h_dense, **targets)
        terms = {"ssl": ssl.loss.detach(), **ssl.terms}
        loss = ssl.loss
        if not self.gating:
            return StepOutput(loss, terms)

        assert self.budget_loss is not None
        budget = self.budget_loss(self.backbone, view_gated, epoch=epoch, masks=gate_masks(self.backbone))
        terms.update(compute=budget.compute.detach(), bound=budget.bound.detach())
        return StepOutput(loss + budget.loss, terms, budget.mac_ratio)

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """EMA update of the BYOL target from the online backbone and projector."""
        if self.target is not None:
            online = nn.ModuleDict({"backbone": self.backbone, "projector": self.objective.projector})
            self.target.update(online, tau)
