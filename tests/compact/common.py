"""Gated models with non-trivial norms and gates that really switch channels on and off."""

from __future__ import annotations

import timm
import torch
from timm.layers import SwiGLU
from torch import nn

import timm_gated_ssl  # noqa: F401  (registers the gated models)
from tests.helpers import randomize_norms
from timm_gated_ssl import attach_gates, gate_mode, iter_gates

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


# ------------------------------------------------------------------------------------ ViTs
#: Small timm ViTs (2 blocks, 4 heads of 24 dims, 32 px, 8 px patches: 16 patches + prefix tokens):
#: plain, qk_norm + layer scale + register tokens, no class token with avg pooling, SwiGLU,
#: SwiGLU packed into a GluMlp (the DINOv2 architecture), and shared norms.
VIT_SMALL = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 96, "num_heads": 4}
VIT_ARCHS: dict[str, tuple[str, dict]] = {
    "vit": ("vit_tiny_patch16_224", {}),
    "vit_qknorm_ls_reg": ("vit_tiny_patch16_224", {"qk_norm": True, "init_values": 0.5, "reg_tokens": 2}),
    "vit_avg_nocls": ("vit_tiny_patch16_224", {"class_token": False, "global_pool": "avg"}),
    "vit_swiglu": ("vit_tiny_patch16_224", {"mlp_layer": SwiGLU}),
    "vit_glu_packed": ("vit_giant_patch14_dinov2", {"mlp_ratio": 4.0, "init_values": 0.5}),
    "vit_shared_norms": ("vit_tiny_patch16_224", {"separate_bn": False}),
}


@torch.no_grad()
def randomize_layer_norms(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """Non-trivial affine parameters for every LayerNorm, the gated-mode copies included, so that
    using the wrong norm set shows (``randomize_norms`` only touches batch norms), and non-zero
    biases for every Linear (timm zero-initialises them, which would hide a lost ``proj`` bias)."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.LayerNorm) and module.elementwise_affine:
            module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
            if module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
        elif isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
    return model


@torch.no_grad()
def sharpen_width_gates(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """Large random weights in every width gate's output layer, so that the level varies per input."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, gate in iter_gates(model):
            gate.net.expand.weight.copy_(torch.randn(gate.net.expand.weight.shape, generator=gen) * 2.0)
    return model


def spread_gates(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Set each gate network's BatchNorm statistics to those of ``images``.

    The token mean of random images hardly varies between images, so with default statistics a
    ViT gate decides the same for every input; centred statistics make the decisions input-dependent.
    """
    norms = [gate.net.norm for _, gate in iter_gates(model)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: one batch sets the statistics
        norm.train()
    with gate_mode(model, "gated"):
        model(images)
    for norm in norms:
        norm.momentum = 0.1
        norm.eval()
    return model


def gated_vit(arch: str, *, never: float = 0.0, seed: int = 0) -> tuple[nn.Module, int]:
    """A gated ViT in eval mode with random norms and input-dependent gates, and its input size."""
    name, kwargs = VIT_ARCHS[arch]
    kwargs = dict(VIT_SMALL, **kwargs)
    gate_kwargs = {k: kwargs.pop(k) for k in ("separate_bn",) if k in kwargs}
    model = attach_gates(timm.create_model(name, num_classes=10, **kwargs), budget=0.5, **gate_kwargs)
    randomize_norms(model, seed=seed)
    randomize_layer_norms(model, seed=seed)
    randomize_gates(model, seed=seed, never=never)
    model.eval()
    size = VIT_SMALL["img_size"]
    spread_gates(model, torch.randn(32, 3, size, size, generator=torch.Generator().manual_seed(seed + 1)))
    return model, size


def force_masks(model: nn.Module, rates: dict, min_rate: float = 0.0) -> None:
    """Make every gate emit the static export's keep-set for every sample (tests only)."""
    for name, gate in iter_gates(model):
        keep = [((r > 0) & (r >= min_rate)).float() for r in rates[name]]
        gate.compute_masks = lambda x, keep=keep: tuple(k.to(x.device).expand(x.shape[0], -1) for k in keep)


def width_vit(arch: str, *, levels: int = 4, seed: int = 0) -> tuple[nn.Module, int]:
    """A width-gated ViT (``VIT_ARCHS``, ``levels`` levels) in eval mode with random norms and gates
    whose level varies per input, and its input size."""
    name, kwargs = VIT_ARCHS[arch]
    kwargs = dict(VIT_SMALL, **kwargs)
    gate_kwargs = {k: kwargs.pop(k) for k in ("separate_bn",) if k in kwargs}
    torch.manual_seed(seed)
    model = attach_gates(timm.create_model(name, num_classes=10, **kwargs), budget=0.5, gate_type="width",
                         levels=levels, **gate_kwargs)
    randomize_norms(model, seed=seed)
    randomize_layer_norms(model, seed=seed)
    sharpen_width_gates(model, seed=seed)
    model.eval()
    size = VIT_SMALL["img_size"]
    spread_gates(model, torch.randn(32, 3, size, size, generator=torch.Generator().manual_seed(seed + 1)))
    return model, size
