"""Small helpers shared by the tests (not fixtures: plain functions)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def randomize_norms(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """Give every norm layer non-trivial affine parameters and running statistics.

    timm zero-initialises the last BN of each residual branch, which would make a gated branch
    contribute nothing and hide every difference between the modes.
    """
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.affine:
            module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
            module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
            if module.running_mean is not None:
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
    return model
