"""Gated models with non-trivial norms and gates that really switch channels on and off."""

from __future__ import annotations

import timm
import torch
from torch import nn

import timm_gated_ssl  # noqa: F401  (registers the gated models)
from tests.helpers import randomize_norms
from timm_gated_ssl import attach_gates, iter_gates

# (timm name, kwargs, input size): BasicBlock, Bottleneck, grouped ResNeXt, SE, blur-pool AA,
# CIFAR stem, and a shared-norm model.
ARCHS = {
    "resnet18": ("resnet18", {}, 32),
    "resnet50": ("resnet50", {"layers": (1, 2, 1, 1)}, 32),
    "resnext50_32x4d": ("resnext50_32x4d", {"layers": (1, 1, 1, 1)}, 32),
    "seresnet18": ("seresnet18", {"layers": (1, 1, 1, 1)}, 32),
    "resnetblur18": ("resnetblur18", {"layers": (1, 1, 1, 1)}, 32),
    "resnet18_cifar": ("gated_resnet18_cifar", {}, 16),
    "resnet18_shared_bn": ("resnet18", {"separate_bn": False}, 32),
}


@torch.no_grad()
def randomize_gates(model: nn.Module, *, seed: int = 0, never: float = 0.0) -> nn.Module:
    """Random gate weights and offsets so that about half the channels are on, varying per input.

    Args:
        never: Fraction of channels per block whose logit row is zeroed: with a positive offset
            they never fire (for the static export).
    """
    gen = torch.Generator().manual_seed(seed)
    for _, gate in iter_gates(model):
        w = gate.net.expand.weight
        w.copy_(torch.randn(w.shape, generator=gen) * 2.0)
        if never:
            w.mul_((torch.rand(w.shape[0], 1, 1, 1, generator=gen) >= never).to(w.dtype))
        gate.logit_offset.fill_(0.25)
    return model


def gated_model(arch: str, *, never: float = 0.0, seed: int = 0) -> tuple[nn.Module, int]:
    """A gated model in eval mode with random norms and gates, and its test input size."""
    name, kwargs, size = ARCHS[arch]
    if name.startswith("gated_"):
        model = timm.create_model(name, num_classes=10, budget=0.5, **kwargs)
    else:
        gate_kwargs = {k: kwargs.pop(k) for k in ("separate_bn",) if k in kwargs}
        model = attach_gates(timm.create_model(name, num_classes=10, **kwargs), budget=0.5, **gate_kwargs)
    randomize_norms(model, seed=seed)
    randomize_gates(model, seed=seed, never=never)
    return model.eval(), size


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
