"""Budget losses of the gated mode and the optimizer parameter groups that go with them.

From Krishna et al., "Unifying Synergies between Self-supervised Learning and Dynamic Computation"
(BMVC 2023, arXiv:2301.09164), which reuses the budget losses of DGNet (Li et al., ICCV 2021):

* compute loss ``lambda * (F_g / F_d - t_d)^2``, with ``F_g`` the batch mean of the gated network's
  MACs (gates and stem included) and ``F_d`` the dense network's; differentiable through the
  straight-through masks (``lambda = 5``);
* bound loss ``gamma * [mean_l relu(p c - rho_l)^2 + mean_l relu(rho_l - (1 - p + p c))^2]``
  with ``rho_l`` the batch-mean density of gated width ``l``, centre ``c = sqrt(t_d)`` and
  relaxation ``p`` (``gamma = 1``): at the start every width is pinned near ``c``, and the bounds
  relax to [0, 1] over training.

The paper relaxes per epoch, ``p = exp(-alpha * epoch)`` with ``alpha = 0.02`` over 500 epochs. A
short run would end with the bounds still pinned (``p = 0.94`` after 3 epochs), so this library
relaxes on training progress by default, ``p = exp(-decay * step / total_steps)`` with
``decay = 10 = 0.02 x 500``: the same schedule for the paper's 500-epoch runs, and the same end
point for any run length (``schedule="epoch"`` keeps the literal per-epoch form).

Example:
    >>> budget_loss = BudgetLoss(budget=0.3)
    >>> with gate_mode(model, "gated"):
    ...     z_g = model(view1)
    >>> out = budget_loss(model, view1, progress=step / total_steps)  # uses the recorded masks
    >>> (ssl_loss + out.loss).backward()
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from .attach import gate_config, iter_gates, require_gates
from .compute.core import _unwrap, cost_table
from .errors import check_budget

__all__ = [
    "BOUND_CENTRES",
    "BOUND_SCHEDULES",
    "BoundLoss",
    "BudgetLoss",
    "BudgetLossOutput",
    "ComputeLoss",
    "gated_param_groups",
]

BOUND_SCHEDULES = ("progress", "epoch")
"""How the bound relaxation ``p`` decays: on training progress (default) or per epoch (paper)."""
BOUND_CENTRES = ("sqrt", "linear")
"""Where the bounds start: ``sqrt(t_d)`` (paper, from DGNet's spatial x channel densities) or ``t_d``."""

Masks = Mapping[str, Sequence[torch.Tensor]]


def _resolve_budget(budget: float | None, model: nn.Module) -> float:
    return gate_config(model).budget if budget is None else budget


def _recorded_masks(model: nn.Module) -> dict[str, tuple[torch.Tensor, ...]]:
    gates = require_gates(_unwrap(model))
    masks = {name: g.masks for name, g in gates if g.masks is not None}
    if not masks:
        raise RuntimeError("no gate masks recorded: run a forward in gated mode before the budget loss")
    return masks


class ComputeLoss(nn.Module):
    """``weight * (F_g / F_d - t_d)^2`` (Krishna et al., BMVC 2023, Eq. for the FLOPs loss).

    ``F_g / F_d`` comes from the model's cached cost table (:func:`~timm_gated_ssl.compute.cost_table`)
    and the masks of the last gated forward, so it costs no extra forward.

    Args:
        budget: Target ``t_d`` in (0, 1]; None takes the model's gate budget at each call.
        weight: ``lambda`` (5 in the paper).
        include_linear: Count linear layers in ``F_g`` and ``F_d`` (the paper counts convs only).
    """

    def __init__(self, budget: float | None = None, *, weight: float = 5.0, include_linear: bool = False) -> None:
        super().__init__()
        self.budget = None if budget is None else check_budget(budget)
        self.weight = float(weight)
        self.include_linear = include_linear

    def mac_ratio(self, model: nn.Module, images: torch.Tensor | Sequence[int], masks: Masks | None = None) -> torch.Tensor:
        """``F_g / F_d`` of the last gated forward (a differentiable scalar)."""
        table = cost_table(model, images, include_linear=self.include_linear)
        gated = table.gated(_recorded_masks(model) if masks is None else masks)
        return gated.mean() / table.dense

    def forward(self, model: nn.Module, images: torch.Tensor | Sequence[int], masks: Masks | None = None) -> torch.Tensor:
        """The loss (float32 scalar).

        Args:
            model: The gated model that just ran the gated forward.
            images: That forward's input batch, or its per-image shape (only the size is used).
            masks: ``{block: masks}``; default: the masks recorded by that forward.
        """
        ratio = self.mac_ratio(model, images, masks)
        target = _resolve_budget(self.budget, model)
        return (self.weight * (ratio - target) ** 2).float()

    def extra_repr(self) -> str:
        return f"budget={self.budget}, weight={self.weight}, include_linear={self.include_linear}"


class BoundLoss(nn.Module):
    """Per-width density bounds, relaxed over training (Krishna et al., BMVC 2023; DGNet).

    ``L = weight * [mean_l relu(p c - rho_l)^2 + mean_l relu(rho_l - (1 - p + p c))^2]`` with
    ``rho_l = E_batch |m_l|_1 / C_l``. Each gated width is one ``l``: one per BasicBlock (as in the
    paper), two per Bottleneck (its two gated widths).

    Args:
        budget: Target ``t_d``; None takes the model's gate budget at each call.
        weight: ``gamma`` (1 in the paper).
        schedule: ``"progress"``: ``p = exp(-decay * progress)`` with ``progress = step /
            total_steps`` in [0, 1] (default; equal to the paper's schedule for a 500-epoch run
            when ``decay = 10``). ``"epoch"``: the paper's literal ``p = exp(-alpha * epoch)``.
        decay: Total decay of ``p`` over a run under ``"progress"`` (``p`` ends at ``e^-decay``).
        alpha: Decay rate per epoch under ``"epoch"`` (0.02 in the paper).
        centre: ``"sqrt"``: bounds start at ``c = sqrt(t_d)``, the paper's choice inherited from
            DGNet, whose masks are spatial x channel so that a density ``sqrt(t_d)`` on each
            factor costs ``t_d``; ``"linear"``: ``c = t_d``, the density at which a channel-only
            gate costs ``t_d`` (a gated 3x3 block's MACs are linear in its density).

    Raises:
        ValueError: Unknown ``schedule`` or ``centre``, or a negative ``decay`` / ``alpha``.
    """

    def __init__(
        self,
        budget: float | None = None,
        *,
        weight: float = 1.0,
        schedule: str = "progress",
        decay: float = 10.0,
        alpha: float = 0.02,
        centre: str = "sqrt",
    ) -> None:
        super().__init__()
        if schedule not in BOUND_SCHEDULES:
            raise ValueError(f"unknown bound schedule {schedule!r}; valid: {', '.join(BOUND_SCHEDULES)}")
        if centre not in BOUND_CENTRES:
            raise ValueError(f"unknown bound centre {centre!r}; valid: {', '.join(BOUND_CENTRES)}")
        if decay < 0 or alpha < 0:
            raise ValueError(f"decay and alpha must be >= 0, got decay={decay!r}, alpha={alpha!r}")
        self.budget = None if budget is None else check_budget(budget)
        self.weight = float(weight)
        self.schedule = schedule
        self.decay = float(decay)
        self.alpha = float(alpha)
        self.centre = centre

    def relaxation(self, *, progress: float | None = None, epoch: float | None = None) -> float:
        """``p`` at ``progress`` (``"progress"`` schedule) or ``epoch`` (``"epoch"`` schedule).

        Raises:
            ValueError: The schedule's argument is missing, or ``progress`` is outside [0, 1].
        """
        if self.schedule == "epoch":
            if epoch is None:
                raise ValueError("the 'epoch' bound schedule needs epoch= (fractional epochs done)")
            return math.exp(-self.alpha * float(epoch))
        if progress is None:
            raise ValueError(
                "the 'progress' bound schedule needs progress= (optimizer steps done / total steps, "
                "in [0, 1]); pass it, or build the loss with schedule='epoch' for the paper's "
                "per-epoch form"
            )
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress must be in [0, 1] (steps done / total steps), got {progress!r}")
        return math.exp(-self.decay * float(progress))

    def bounds(self, budget: float, *, progress: float | None = None, epoch: float | None = None) -> tuple[float, float]:
        """``(lower, upper)`` density bounds for ``budget`` at ``progress`` / ``epoch``."""
        p = self.relaxation(progress=progress, epoch=epoch)
        centre = math.sqrt(budget) if self.centre == "sqrt" else budget
        return p * centre, 1.0 - p + p * centre

    def forward(
        self, model: nn.Module, *, progress: float | None = None, epoch: float | None = None,
        masks: Masks | None = None,
    ) -> torch.Tensor:
        """The loss (float32 scalar) for the masks of the last gated forward (or ``masks``)."""
        masks = _recorded_masks(model) if masks is None else masks
        lower, upper = self.bounds(_resolve_budget(self.budget, model), progress=progress, epoch=epoch)
        rho = torch.stack([m.float().mean() for block in masks.values() for m in block])
        below = torch.relu(lower - rho).pow(2).mean()
        above = torch.relu(rho - upper).pow(2).mean()
        return self.weight * (below + above)

    def extra_repr(self) -> str:
        return (f"budget={self.budget}, weight={self.weight}, schedule={self.schedule!r}, "
                f"decay={self.decay}, alpha={self.alpha}, centre={self.centre!r}")


class BudgetLossOutput(NamedTuple):
    """What :class:`BudgetLoss` returns: the total and its parts (for logging)."""

    loss: torch.Tensor
    compute: torch.Tensor
    bound: torch.Tensor
    mac_ratio: torch.Tensor  # detached F_g / F_d


class BudgetLoss(nn.Module):
    """The paper's whole budget term: ``lambda * (F_g/F_d - t_d)^2 + gamma * L_bound``.

    Args:
        budget: Target ``t_d``; None takes the model's gate budget.
        compute_weight: ``lambda`` (5).
        bound_weight: ``gamma`` (1).
        bound_schedule / bound_decay / alpha / bound_centre: The bound relaxation, see
            :class:`BoundLoss` (defaults: on progress, decay 10, centre ``sqrt(t_d)``).
        include_linear: Count linear layers in the MAC ratio.
    """

    def __init__(
        self,
        budget: float | None = None,
        *,
        compute_weight: float = 5.0,
        bound_weight: float = 1.0,
        bound_schedule: str = "progress",
        bound_decay: float = 10.0,
        alpha: float = 0.02,
        bound_centre: str = "sqrt",
        include_linear: bool = False,
    ) -> None:
        super().__init__()
        self.compute = ComputeLoss(budget, weight=compute_weight, include_linear=include_linear)
        self.bound = BoundLoss(budget, weight=bound_weight, schedule=bound_schedule, decay=bound_decay,
                               alpha=alpha, centre=bound_centre)

    def forward(
        self, model: nn.Module, images: torch.Tensor | Sequence[int], *, progress: float | None = None,
        epoch: float | None = None, masks: Masks | None = None,
    ) -> BudgetLossOutput:
        """Both losses for the last gated forward of ``model`` on ``images``.

        Args:
            model: The gated model that just ran the gated forward.
            images: That forward's input batch, or its per-image shape.
            progress: Optimizer steps done / total steps, in [0, 1] (the ``"progress"`` schedule).
            epoch: Fractional epochs done (the ``"epoch"`` schedule).
            masks: ``{block: masks}``; default: the masks recorded by that forward.
        """
        masks = _recorded_masks(model) if masks is None else masks
        ratio = self.compute.mac_ratio(model, images, masks)
        target = _resolve_budget(self.compute.budget, model)
        compute = (self.compute.weight * (ratio - target) ** 2).float()
        bound = self.bound(model, progress=progress, epoch=epoch, masks=masks)
        return BudgetLossOutput(compute + bound, compute, bound, ratio.detach().float())


def gated_param_groups(
    model: nn.Module,
    *,
    weight_decay: float = 1e-4,
    no_weight_decay: Iterable[str] = (),
    gate_lr_scale: float = 1.0,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: weight decay on conv/linear weights only.

    Groups (empty ones are left out), each with a ``"name"`` key:

    * ``"decay"``: every other weight, ``weight_decay``;
    * ``"gates"``: the gate networks' conv weights, no weight decay (the paper's setting);
    * ``"no_decay"``: biases, norm parameters (every parameter with ``ndim <= 1``, the gates' and
      the gated-mode norm copies included) and names in ``no_weight_decay`` (or in the model's
      ``no_weight_decay()``), no weight decay and ``"lars_exclude": True`` for LARS wrappers.

    With ``gate_lr_scale`` other than 1, the gate networks train at that multiple of the learning
    rate: the ``"gates"`` group and a ``"gate_norms"`` group (the gate networks' norm parameters,
    otherwise in ``"no_decay"``, with its settings) carry ``"lr_scale"``; the gated mode's norm
    copies (``separate_bn``) are part of the encoder and keep the rate. timm's schedulers multiply
    ``"lr_scale"`` into each group's rate (a plain torch optimizer without a timm scheduler ignores
    the key: set those groups' ``"lr"`` yourself). At 1 the groups are the three above, so
    optimizer states saved before the option existed still load.

    Frozen parameters (``requires_grad=False``) are skipped.

    Args:
        model: The model (gated or not).
        weight_decay: Decay of the ``"decay"`` group (1e-4 in the paper).
        no_weight_decay: Extra parameter names (exact, or prefixes ending in ``.``) without decay.
        gate_lr_scale: Learning-rate multiple of the gates' parameters (> 0). Gates are tiny
            networks whose logits must move from "all on" to the budget within the run; under
            AdamW's small ViT rates they move slowly (docs/vit.md).

    Example:
        >>> optimizer = torch.optim.SGD(gated_param_groups(model), lr=0.6, momentum=0.9)
    """
    if not gate_lr_scale > 0:
        raise ValueError(f"gate_lr_scale must be > 0 (1 trains the gates at the model's rate), got {gate_lr_scale}")
    skip = set(no_weight_decay)
    if hasattr(model, "no_weight_decay"):
        skip |= set(model.no_weight_decay())
    gate_params = {id(p) for _, g in iter_gates(model) for p in g.parameters()}
    gate_nets = {id(p) for _, g in iter_gates(model) for p in g.net.parameters()}  # not the norm copies
    scaled = gate_lr_scale != 1
    groups: dict[str, list[nn.Parameter]] = {"decay": [], "gates": [], "gate_norms": [], "no_decay": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if scaled and param.ndim <= 1 and id(param) in gate_nets:
            groups["gate_norms"].append(param)
        elif param.ndim <= 1 or name in skip or any(name.startswith(s) for s in skip if s.endswith(".")):
            groups["no_decay"].append(param)
        elif id(param) in gate_params:
            groups["gates"].append(param)
        else:
            groups["decay"].append(param)
    settings = {
        "decay": {"weight_decay": weight_decay},
        "gates": {"weight_decay": 0.0},
        "gate_norms": {"weight_decay": 0.0, "lars_exclude": True},
        "no_decay": {"weight_decay": 0.0, "lars_exclude": True},
    }
    if scaled:
        for name in ("gates", "gate_norms"):
            settings[name]["lr_scale"] = gate_lr_scale
    return [
        {"name": name, "params": params, **settings[name]} for name, params in groups.items() if params
    ]
