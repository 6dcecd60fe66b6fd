"""One co-training step gives every trainable parameter a gradient, so DDP needs no
``find_unused_parameters``; a single-mode step does not (docs/gating.md, "Fine-tuning one mode")."""

from __future__ import annotations

import pytest
import timm
import torch

import timm_gated_ssl
from timm_gated_ssl.budget import BudgetLoss
from timm_gated_ssl.recipe import DualSSLModel
from timm_gated_ssl.ssl import build_ssl_objective


def _backbone(separate_bn: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("gated_resnet18_cifar", channels=(8, 16, 32, 64), num_classes=0,
                             budget=0.5, separate_bn=separate_bn)


def _missing_grads(module: torch.nn.Module) -> list[str]:
    return [name for name, p in module.named_parameters() if p.requires_grad and p.grad is None]


@pytest.mark.parametrize("method", ["vicreg", "simsiam", "simclr", "byol"])
@pytest.mark.parametrize("separate_bn", [True, False])
def test_dual_step_gives_every_parameter_a_gradient(method: str, separate_bn: bool) -> None:
    backbone = _backbone(separate_bn)
    model = DualSSLModel(backbone, build_ssl_objective(method, in_dim=64, hidden_dim=32, out_dim=32),
                         gating=True, budget_loss=BudgetLoss(0.5), momentum_target=method == "byol").train()
    views = torch.randn(2, 8, 3, 16, 16)
    model(views[0], views[1], progress=0.0).loss.backward()
    assert _missing_grads(model) == []
    if model.target is not None:  # the BYOL target is an EMA copy, not trained by gradients
        assert not any(p.requires_grad for p in model.target.parameters())


def test_a_single_mode_step_leaves_the_other_mode_without_gradients() -> None:
    backbone = _backbone().train()
    with timm_gated_ssl.gate_mode(backbone, "dense"):
        backbone(torch.randn(8, 3, 16, 16)).sum().backward()
    missing = _missing_grads(backbone)
    assert missing and all(".dyn_gate." in name for name in missing)  # gates and gated-mode norms


def test_freezing_the_unused_set_leaves_no_parameter_without_gradient() -> None:
    # The recipe of docs/gating.md for fine-tuning one mode under DDP.
    backbone = _backbone().train()
    example = torch.randn(8, 3, 16, 16)
    with timm_gated_ssl.gate_mode(backbone, "gated"):
        backbone(example).sum().backward()
    unused = [name for name, p in backbone.named_parameters() if p.grad is None]
    assert unused and not any(".dyn_gate." in name for name in unused)  # dense branch norms
    for p in backbone.parameters():
        if p.grad is None:
            p.requires_grad_(False)
    backbone.zero_grad(set_to_none=True)
    with timm_gated_ssl.gate_mode(backbone, "gated"):
        backbone(torch.randn(8, 3, 16, 16)).sum().backward()
    assert _missing_grads(backbone) == []
