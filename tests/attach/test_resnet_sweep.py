"""Gates on many timm ResNet variants: both modes, detach, gradients, determinism, deepcopy."""

from __future__ import annotations

import copy

import pytest
import timm
import torch

from tests.helpers import randomize_norms
from timm_gated_ssl import (
    attach_gates,
    detach_gates,
    gate_masks,
    gate_mode,
    iter_gates,
    set_gate_mode,
)

# BasicBlock, Bottleneck, deep/tiered stems, SE/ECA attention, grouped convs, wide, blur/aa.
VARIANTS = [
    "resnet10t", "resnet18", "resnet18d", "resnet26t", "resnet50", "resnet50s", "seresnet18",
    "resnext50_32x4d", "resnetblur18", "resnetaa34d", "resnetrs50", "ecaresnet26t",
    "seresnext26d_32x4d",
]


def _pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    plain = randomize_norms(timm.create_model(name, num_classes=0)).eval()
    gated = attach_gates(copy.deepcopy(plain), budget=0.5)
    return plain, gated


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", VARIANTS)
def test_variant(name: str, images: torch.Tensor) -> None:
    plain, gated = _pair(name)
    reference = plain(images)
    # Dense mode: bit-identical to the ungated model, and no gate runs.
    assert torch.equal(gated(images), reference)
    assert gate_masks(gated) == {}

    # Gated mode, eval: deterministic, masks recorded per block and per sample.
    with gate_mode(gated, "gated"):
        out1, masks1 = gated(images), gate_masks(gated)
        out2 = gated(images)
    assert torch.equal(out1, out2) and torch.isfinite(out1).all()
    assert not torch.equal(out1, reference)
    assert len(masks1) == len(list(iter_gates(gated)))
    for name_, gate in iter_gates(gated):
        assert [m.shape for m in masks1[name_]] == [(2, w) for w in gate.widths]

    # Gated mode, train: stochastic masks; backward reaches the gates, no NaN.
    gated.train()
    set_gate_mode(gated, "gated")
    torch.manual_seed(1)
    out = gated(images)
    first = torch.cat([m for ms in gate_masks(gated).values() for m in ms], 1).detach()
    out.square().mean().backward()
    assert torch.isfinite(out).all()
    grads = [g.net.expand.weight.grad for _, g in iter_gates(gated)]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    torch.manual_seed(2)
    gated(images)
    second = torch.cat([m for ms in gate_masks(gated).values() for m in ms], 1)
    assert not torch.equal(first, second)

    # Dense mode, train: gates get no gradient.
    gated.zero_grad(set_to_none=True)
    set_gate_mode(gated, "dense")
    gated(images).square().mean().backward()
    assert all(g.net.expand.weight.grad is None for _, g in iter_gates(gated))

    # Detach restores the original outputs and state-dict keys exactly.
    gated.eval()
    detach_gates(gated)
    assert list(gated.state_dict()) == list(plain.state_dict())
    assert not list(iter_gates(gated))
    plain.load_state_dict(gated.state_dict())  # dense training may have moved BN statistics
    assert torch.equal(gated(images), plain(images))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in gated.modules())
