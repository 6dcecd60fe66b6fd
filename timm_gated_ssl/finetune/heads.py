"""Classifier heads per mode and budget, the two training steps, and their evaluation.

* ``linear``: the paper's linear evaluation (Krishna et al., BMVC 2023, Table 1): the backbone is
  frozen in eval mode (BatchNorm running statistics, deterministic gates) and one fresh linear head
  per mode reads its pooled features: ``dense``, ``gated`` at the checkpoint's own threshold, and
  ``gated`` at every calibrated budget. The heads start at zero: the problem is convex, so the
  seeds only vary the crops and the batch order.
* ``full``: :class:`DualClassifier` fine-tunes backbone and heads. Each step runs the gated pass
  (stochastic gates) and the dense pass on the same batch, each with its own head and
  cross-entropy, plus the budget losses on the gated pass, in one ``forward`` so that DDP sees every
  parameter used once per step (as :class:`~timm_gated_ssl.recipe.DualSSLModel` in pretraining).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attach import gate_masks, gate_mode, has_gates, set_gate_noise
from ..budget import BudgetLoss
from ..calibration import budget_key, gate_offset, set_gate_offset
from ..compute import cost_table
from ..eval.features import extract_features
from ..recipe.dual import StepOutput, gate_noise_scale

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = ["DualClassifier", "HeadResult", "HeadSpec", "LinearHeads", "NormedLinear", "evaluate_heads",
           "head_specs", "pooled_features"]


@dataclass(frozen=True)
class HeadSpec:
    """One head: the mode it reads and, for gated heads, the gate offset it runs at.

    Attributes:
        name: ``dense``, ``gated`` (the checkpoint's threshold) or ``gated_t0.3`` (calibrated).
        mode: ``dense``, ``gated``, or ``vanilla`` (a checkpoint without gates).
        budget: The budget of a gated head (training ``t_d`` or calibration target).
        offset: The global gate-logit offset of a gated head.
        calibrated: The offset was calibrated to ``budget``.
    """

    name: str
    mode: str
    budget: float | None = None
    offset: float | None = None
    calibrated: bool = False

    @property
    def key(self) -> str:
        """The name as a ``nn.ModuleDict`` key (no dots)."""
        return self.name.replace(".", "p")


def head_specs(backbone: nn.Module, *, budget: float | None, offset: float | None,
               calibrated: dict[float, float]) -> list[HeadSpec]:
    """The heads of a run: dense, gated at ``offset``, gated at each calibrated ``{budget: offset}``."""
    if not has_gates(backbone):
        return [HeadSpec("vanilla", "vanilla")]
    specs = [HeadSpec("dense", "dense"), HeadSpec("gated", "gated", budget, offset)]
    specs += [HeadSpec(f"gated_t{budget_key(b)}", "gated", b, o, True) for b, o in calibrated.items()]
    return specs


@contextlib.contextmanager
def running(backbone: nn.Module, spec: HeadSpec) -> Iterator[None]:
    """Run the body in ``spec``'s mode (and gate offset); both are restored afterwards."""
    if spec.mode == "vanilla":
        yield
        return
    saved = gate_offset(backbone)
    if spec.offset is not None:
        set_gate_offset(backbone, spec.offset)
    try:
        with gate_mode(backbone, spec.mode):
            yield
    finally:
        set_gate_offset(backbone, saved)


def pooled_features(backbone: nn.Module, images: Tensor) -> Tensor:
    """Pooled pre-logits features ``[B, D]`` (the backbone keeps ``num_classes=0``)."""
    return backbone.forward_head(backbone.forward_features(images), pre_logits=True)


class NormedLinear(nn.Module):
    """A linear head on standardised features: ``BatchNorm1d`` without affine parameters, then
    ``nn.Linear``.

    Pooled SSL features are far from unit scale, and a linear head trained on them raw diverges at
    the learning rates a linear evaluation uses (the cross-entropy grew past 6 per head on the
    quickstart checkpoint). The frozen probe of ``eval/`` standardises its features for the same
    reason; MAE's linear probing (He et al., CVPR 2022) puts this same normaliser before its head.
    In eval mode it is an affine map, so :meth:`folded` gives the equivalent plain ``nn.Linear``.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.norm(x))

    @torch.no_grad()
    def reset(self) -> None:
        """Zero weights and bias, fresh running statistics."""
        self.linear.weight.zero_()
        self.linear.bias.zero_()
        self.norm.reset_running_stats()

    @torch.no_grad()
    def folded(self) -> nn.Linear:
        """The eval-mode head as one ``nn.Linear``: ``W / sigma`` and ``b - (W / sigma) mu``."""
        norm, linear = self.norm, self.linear
        assert norm.running_mean is not None and norm.running_var is not None
        scale = (norm.running_var + norm.eps).rsqrt()
        out = nn.Linear(linear.in_features, linear.out_features).to(linear.weight.device)
        out.weight.copy_(linear.weight * scale)
        out.bias.copy_(linear.bias - out.weight @ norm.running_mean)
        return out


class LinearHeads(nn.Module):
    """One :class:`NormedLinear` head per spec, zero-initialised; ``forward`` maps
    ``{key: features}`` to the summed cross-entropy and the per-head logits."""

    def __init__(self, specs: Sequence[HeadSpec], dim: int, num_classes: int, *,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.specs = list(specs)
        self.heads = nn.ModuleDict({s.key: NormedLinear(dim, num_classes) for s in specs})
        self.label_smoothing = label_smoothing
        self.reset()

    def reset(self) -> None:
        for head in self.heads.values():
            head.reset()

    def folded(self) -> dict[str, nn.Linear]:
        """Every head as its eval-mode ``nn.Linear`` (what is evaluated and exported)."""
        return {key: head.folded() for key, head in self.heads.items()}

    def forward(self, features: dict[str, Tensor], labels: Tensor) -> StepOutput:
        terms = {}
        loss = torch.zeros((), device=labels.device)
        for key, head in self.heads.items():
            term = F.cross_entropy(head(features[key].float()), labels, label_smoothing=self.label_smoothing)
            terms[f"ce_{key}"] = term.detach()
            loss = loss + term
        return StepOutput(loss, terms)


class DualClassifier(nn.Module):
    """Backbone + a dense and a gated head + the budget losses, for full fine-tuning.

    Args:
        backbone: A gated timm model with ``num_classes=0``.
        num_classes: Classes of the heads.
        budget_loss: ``lambda * (F_g/F_d - t_d)^2 + gamma * L_bound`` on the gated pass.
        label_smoothing: Of both cross-entropies.
        noise_schedule: The gates' training noise over the fine-tune
            (:func:`~timm_gated_ssl.recipe.dual.gate_noise_scale` of ``progress``): ``cosine``
            anneals it from 1 to 0 as pretraining does, so that the last steps train the
            deterministic masks the test split runs; ``constant`` keeps the paper's scale 1
            throughout (a gated head then trains on masks it never sees at inference).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, budget_loss: BudgetLoss,
                 label_smoothing: float = 0.0, noise_schedule: str = "cosine") -> None:
        super().__init__()
        gate_noise_scale(noise_schedule, 0.0)  # validates the name
        self.noise_schedule = noise_schedule
        self.backbone = backbone
        specs = [HeadSpec("dense", "dense"), HeadSpec("gated", "gated")]
        self.heads = LinearHeads(specs, backbone.num_features, num_classes, label_smoothing=label_smoothing)
        self.budget_loss = budget_loss

    def forward(self, images: Tensor, labels: Tensor, *, epoch: float = 0.0, progress: float = 0.0) -> StepOutput:
        if self.training:
            set_gate_noise(self.backbone, gate_noise_scale(self.noise_schedule, progress))
        with gate_mode(self.backbone, "gated"):
            gated = pooled_features(self.backbone, images)
        with gate_mode(self.backbone, "dense"):
            dense = pooled_features(self.backbone, images)
        out = self.heads({"dense": dense, "gated": gated}, labels)
        budget = self.budget_loss(self.backbone, images, masks=gate_masks(self.backbone), epoch=epoch,
                                  progress=progress)
        terms = {**out.terms, "compute": budget.compute.detach(), "bound": budget.bound.detach()}
        return StepOutput(out.loss + budget.loss, terms, budget.mac_ratio)


@dataclass(frozen=True)
class HeadResult:
    """Test-split result of one head: top-1 (%) and MACs per image (mean) / dense MACs."""

    spec: HeadSpec
    top1: float
    macs: float
    mac_fraction: float


@torch.no_grad()
def evaluate_heads(
    backbone: nn.Module,
    heads: dict[str, nn.Linear],
    specs: Sequence[HeadSpec],
    loader: Any,
    *,
    image_size: int,
    accelerator: Accelerator | None = None,
) -> list[HeadResult]:
    """Top-1 and realised compute of every head on ``loader`` (backbone in eval mode).

    The MAC fraction of a gated head is the mean over the images of ``F_g / F_d`` with the
    deterministic masks of the same forward (:func:`~timm_gated_ssl.compute.cost_table`); with an
    ``accelerator`` the loader is sharded and the results gathered (``gather_for_metrics``).
    """
    table = cost_table(backbone, (3, image_size, image_size))
    autocast = accelerator.autocast if accelerator is not None else contextlib.nullcontext
    results = []
    for spec in specs:
        head = heads[spec.key]

        def logits_and_fraction(images: Tensor, head: nn.Linear = head, spec: HeadSpec = spec) -> Tensor:
            with autocast():
                features = pooled_features(backbone, images)
            logits = head(features.float())
            if spec.mode == "gated":
                fraction = table.gated(gate_masks(backbone)) / table.dense
            else:
                fraction = torch.ones(images.shape[0], device=images.device)
            return torch.cat([logits, fraction.float().reshape(-1, 1)], dim=1)

        with running(backbone, spec):
            bank = extract_features(backbone, loader, accelerator=accelerator, progress=False,
                                    desc=spec.name, feature_fn=logits_and_fraction)
        logits, fraction = bank.features[:, :-1], bank.features[:, -1].double()
        top1 = 100.0 * float((logits.argmax(1) == bank.labels).float().mean())
        mean = float(fraction.mean())
        results.append(HeadResult(spec, top1, mean * float(table.dense), mean))
    return results
