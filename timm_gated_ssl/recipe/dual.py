"""The co-training step as one module: gated pass on view 1, dense pass on view 2, SSL loss on the
two embeddings, plus the compute and bound losses (Krishna et al., BMVC 2023, Sec. 3).

``L = SSL(z_gated, z_dense) + lambda * (F_g / F_d - t_d)^2 + gamma * L_bound``

Both passes run inside one ``forward`` so that DDP sees every parameter used once per step. With
``gating=False`` both views take the dense pass and the budget terms vanish: the vanilla baseline
with the identical recipe.

Options beyond the paper (measured in docs/results.md). This module defaults to the paper's
setting; the recipe's defaults (:class:`~timm_gated_ssl.recipe.PretrainConfig`) switch on the
noise annealing, the option that measurably closed the gated-dense gap most:

* ``pairing="symmetric"``: both pairings, gated(v1)-dense(v2) and dense(v1)-gated(v2), averaged
  (four passes a step instead of two), so that each mode sees both views;
* ``pairing="anchored"``: the paper's gated(v1)-dense(v2) pair and the vanilla dense(v1)-dense(v2)
  pair, averaged (three passes a step), so that the dense mode keeps the vanilla objective instead
  of learning only against gated embeddings: the "sandwich rule" of universally slimmable
  networks, whose full-width network is always trained on the true objective (Yu & Huang,
  ICCV 2019);
* ``distill``: in-place distillation of the gated pass towards the detached dense features of the
  same view (:class:`~timm_gated_ssl.ssl.FeatureDistillLoss`; Yu & Huang, ICCV 2019);
* ``noise_schedule="cosine"``: the gates' logistic training noise annealed from 1 to 0 over
  training, so that the last steps train the deterministic masks inference uses (``"constant"``
  is the paper's);
* ``freeze_dense=True``: post-hoc gating of a trained encoder with its dense mode frozen as the
  teacher (:mod:`~timm_gated_ssl.recipe.freeze`): only the gates, the gated-mode norm copies and
  the SSL heads train; the dense pass runs without autograd and its norms stay in eval mode;
* ``ssl_weight``: the weight of the SSL term; 0 drops it (and the projector) and trains the gated
  mode by the distillation and budget terms alone: the post-hoc recipe of a frozen teacher
  (docs/posthoc.md), where a fresh projector over trained features diverged at useful rates;
* ``gating_active=False`` in ``forward``: a dense-only step (both views dense, no budget terms),
  for a dense warm-up before the gates are trained (the paper's ablation).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..attach import gate_masks, gate_mode, has_gates, set_gate_mode, set_gate_noise
from ..budget import BudgetLoss, BudgetLossOutput
from ..ssl import DISTILL_TARGETS, FeatureDistillLoss, MomentumEncoder, SSLObjective
from .freeze import dense_norms, freeze_dense_path, norms_in_eval, shared_norms

PAIRINGS = ("asymmetric", "symmetric", "anchored")
"""Which passes see which view: the paper's one pair, both gated-dense pairs, or the paper's pair
plus the vanilla dense-dense pair (each averaged)."""
NOISE_SCHEDULES = ("constant", "cosine")
"""Gate noise over training: the paper's constant scale 1, or cosine from 1 to 0."""


def gate_noise_scale(schedule: str, progress: float) -> float:
    """Scale of the gates' logistic noise at ``progress`` (steps done / total steps) in [0, 1]."""
    if schedule not in NOISE_SCHEDULES:
        raise ValueError(f"unknown gate noise schedule {schedule!r}; valid: {', '.join(NOISE_SCHEDULES)}")
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


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
        pairing: ``"asymmetric"`` (paper), ``"symmetric"`` or ``"anchored"`` (see the module
            docstring).
        distill: In-place distillation loss of the gated pass (None: off, the paper's setting).
        distill_on: ``"features"`` (backbone features) or ``"embeddings"`` (projector outputs).
        noise_schedule: ``"constant"`` (paper) or ``"cosine"`` gate noise over training.
        freeze_dense: Keep the backbone's dense mode as it is (the trained encoder as the
            teacher); needs ``gating``. Dense-only terms (``pairing="anchored"``'s extra pair, a
            dense warm-up step) then train the SSL heads alone.
        ssl_weight: Weight of the SSL term (>= 0; 1 is the paper). 0 needs ``gating``,
            ``distill`` on ``"features"`` and the ``asymmetric`` pairing: each step is then the
            gated pass and the (detached) dense pass of the same view, ``distill + budget``; the
            SSL heads are frozen and no dense-only step is allowed (it would have nothing to
            train).
    """

    def __init__(
        self,
        backbone: nn.Module,
        objective: SSLObjective,
        *,
        gating: bool,
        budget_loss: BudgetLoss | None = None,
        momentum_target: bool = False,
        pairing: str = "asymmetric",
        distill: FeatureDistillLoss | None = None,
        distill_on: str = "features",
        noise_schedule: str = "constant",
        freeze_dense: bool = False,
        ssl_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not ssl_weight >= 0:
            raise ValueError(f"ssl_weight must be >= 0, got {ssl_weight!r}")
        if ssl_weight == 0 and not (gating and distill is not None and pairing == "asymmetric"
                                    and distill_on == "features"):
            raise ValueError(
                "ssl_weight=0 trains the gated mode by distilling backbone features alone: it needs gating=True, "
                "a distill loss, pairing='asymmetric' and distill_on='features'; got "
                f"gating={gating}, distill={distill}, pairing={pairing!r}, distill_on={distill_on!r}"
            )
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
        if pairing not in PAIRINGS:
            raise ValueError(f"unknown pairing {pairing!r}; valid: {', '.join(PAIRINGS)}")
        if distill_on not in DISTILL_TARGETS:
            raise ValueError(f"unknown distill_on {distill_on!r}; valid: {', '.join(DISTILL_TARGETS)}")
        gate_noise_scale(noise_schedule, 0.0)  # validates the name
        if freeze_dense and not gating:
            raise ValueError("freeze_dense=True needs gating=True: it trains the gated mode of a gated backbone")
        self.backbone = backbone
        self.objective = objective
        self.gating = gating
        self.budget_loss = budget_loss
        self.pairing = pairing
        self.distill = distill
        self.distill_on = distill_on
        self.noise_schedule = noise_schedule
        self.freeze_dense = freeze_dense
        self.ssl_weight = float(ssl_weight)
        if freeze_dense:
            freeze_dense_path(backbone)
        if self.ssl_weight == 0:  # the heads take no part: frozen, so that DDP and the optimizer skip them
            objective.requires_grad_(False)
        self.target: MomentumEncoder | None = None
        if momentum_target and self.ssl_weight != 0:  # the target serves the SSL term alone
            target = nn.ModuleDict({
                "backbone": copy.deepcopy(backbone), "projector": copy.deepcopy(objective.projector)
            })
            if gating:
                set_gate_mode(target["backbone"], "dense")
            self.target = MomentumEncoder(target)
        if freeze_dense:
            self.train(self.training)  # the shared norms into eval mode from the start

    def train(self, mode: bool = True) -> DualSSLModel:
        """``nn.Module.train``; with ``freeze_dense`` the norms both modes share stay in eval mode."""
        super().train(mode)
        if self.freeze_dense:
            for norm in shared_norms(self.backbone):
                norm.eval()
        return self

    def _target(self, images: Tensor) -> Tensor:
        assert self.target is not None
        nets = self.target.module
        with torch.no_grad():
            return nets["projector"](nets["backbone"](images))

    def _pass(self, images: Tensor, mode: str) -> Tensor:
        if not self.gating:
            return self.backbone(images)
        if self.freeze_dense and mode == "dense":  # the teacher: no autograd, running statistics kept
            with gate_mode(self.backbone, mode), torch.no_grad(), norms_in_eval(dense_norms(self.backbone)):
                return self.backbone(images)
        with gate_mode(self.backbone, mode):
            return self.backbone(images)

    def _budget(
        self, images: Tensor, masks: Mapping[str, Sequence[Tensor]], progress: float | None, epoch: float | None
    ) -> BudgetLossOutput:
        assert self.budget_loss is not None
        return self.budget_loss(self.backbone, images, progress=progress, epoch=epoch, masks=masks)

    def _distill(self, h_gated: Tensor, h_dense: Tensor) -> Tensor:
        assert self.distill is not None
        if self.distill_on == "embeddings":
            h_gated, h_dense = self.objective.projector(h_gated), self.objective.projector(h_dense.detach())
        return self.distill(h_gated, h_dense)

    def forward(
        self,
        view_gated: Tensor,
        view_dense: Tensor,
        *,
        progress: float | None = None,
        epoch: float | None = None,
        gating_active: bool = True,
    ) -> StepOutput:
        """One co-training step's loss.

        Args:
            view_gated: First augmented view; takes the gated pass (dense without gating).
            view_dense: Second augmented view; takes the dense pass.
            progress: Optimizer steps done / total steps in [0, 1] (bound relaxation, gate noise).
            epoch: Fractional epoch (the bound loss's ``"epoch"`` schedule).
            gating_active: False runs a dense-only step (dense warm-up): both views dense, no
                budget terms.
        """
        if self.ssl_weight == 0:
            if not gating_active:
                raise ValueError("a dense-only step (gating_active=False) has nothing to train with ssl_weight=0")
            return self._distill_step(view_gated, progress, epoch)
        targets = {}
        if self.target is not None:
            targets = {"target_a": self._target(view_gated), "target_b": self._target(view_dense)}
        if not (self.gating and gating_active):
            ssl = self.objective(self._pass(view_gated, "dense"), self._pass(view_dense, "dense"), **targets)
            loss = self.ssl_weight * ssl.loss
            return StepOutput(loss, {"ssl": loss.detach(), **ssl.terms})

        h_gated, budget = self._gated_step(view_gated, progress, epoch)
        budgets = [budget]
        h_dense = self._pass(view_dense, "dense")
        ssl = self.objective(h_gated, h_dense, **targets)
        losses = [ssl.loss]
        teacher = None  # dense features of the gated pass's view
        if self.pairing == "symmetric":
            teacher = self._pass(view_gated, "dense")
            h_gated_b = self._pass(view_dense, "gated")
            budgets.append(self._budget(view_dense, gate_masks(self.backbone), progress, epoch))
            losses.append(self.objective(teacher, h_gated_b, **targets).loss)
        elif self.pairing == "anchored":
            teacher = self._pass(view_gated, "dense")
            losses.append(self.objective(teacher, h_dense, **targets).loss)
        ssl_loss = self.ssl_weight * torch.stack(losses).mean()
        terms = {"ssl": ssl_loss.detach(), **ssl.terms}
        loss = ssl_loss + torch.stack([b.loss for b in budgets]).mean()
        terms.update(compute=torch.stack([b.compute for b in budgets]).mean().detach(),
                     bound=torch.stack([b.bound for b in budgets]).mean().detach())
        if self.distill is not None:
            if teacher is None:
                with torch.no_grad():
                    teacher = self._pass(view_gated, "dense")
            distill = self._distill(h_gated, teacher)
            if self.pairing == "symmetric":
                distill = 0.5 * (distill + self._distill(h_gated_b, h_dense))
            terms["distill"] = distill.detach()
            loss = loss + distill
        mac_ratio = torch.stack([b.mac_ratio for b in budgets]).mean()
        return StepOutput(loss, terms, mac_ratio)

    def _gated_step(
        self, view: Tensor, progress: float | None, epoch: float | None
    ) -> tuple[Tensor, BudgetLossOutput]:
        """The gated pass of ``view`` (gate noise set for ``progress`` in training) and its budget terms."""
        if self.training:
            set_gate_noise(self.backbone, gate_noise_scale(self.noise_schedule, progress or 0.0))
        h_gated = self._pass(view, "gated")
        return h_gated, self._budget(view, gate_masks(self.backbone), progress, epoch)

    def _distill_step(self, view: Tensor, progress: float | None, epoch: float | None) -> StepOutput:
        """``ssl_weight=0``: the gated pass and the dense teacher pass of one view, distillation
        plus budget (the second view is not used)."""
        h_gated, budget = self._gated_step(view, progress, epoch)
        with torch.no_grad():
            teacher = self._pass(view, "dense")
        distill = self._distill(h_gated, teacher)
        terms = {"distill": distill.detach(), "compute": budget.compute.detach(), "bound": budget.bound.detach()}
        return StepOutput(distill + budget.loss, terms, budget.mac_ratio)

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """EMA update of the BYOL target from the online backbone and projector."""
        if self.target is not None:
            online = nn.ModuleDict({"backbone": self.backbone, "projector": self.objective.projector})
            self.target.update(online, tau)
