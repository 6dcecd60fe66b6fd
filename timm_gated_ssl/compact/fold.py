"""Batch-norm folding and the choice of norm set a compact or static network keeps.

A gated block in eval mode computes ``BN(conv(x))`` with the gated-mode copy of each norm (when the
model has separate norms per mode). Folding that BN into the conv gives one weight and one bias,
``W' = W * g / sqrt(v + eps)`` and ``b' = beta - m * g / sqrt(v + eps)``, so a kept channel costs one
conv row and nothing else. Folding is done in float64 and cast back, to stay within ~1e-7 of the
unfolded computation.
"""

from __future__ import annotations

import torch
from torch import nn

from ..gates import BlockGate


def gated_norm(block: nn.Module, gate: BlockGate, path: str) -> nn.Module:
    """The norm the gated mode uses at ``path`` of ``block``: the gated copy if any, else the block's."""
    key = path.replace(".", "__")
    if key in gate.norms:
        return gate.norms[key]
    return block.get_submodule(path)


def fold_bn(conv: nn.Conv2d, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode ``BatchNorm2d`` into the preceding conv.

    Args:
        conv: The conv (its bias, if any, is folded in too).
        bn: A ``BatchNorm2d`` with running statistics (eval semantics).

    Returns:
        ``(weight, bias)`` such that ``conv2d(x, weight, bias) == bn(conv(x))`` in eval mode.

    Raises:
        TypeError: ``bn`` is not a batch norm with running statistics.
    """
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.running_var is None:
        raise TypeError(
            f"only BatchNorm layers with running statistics can be folded, got {type(bn).__name__}"
        )
    dtype = conv.weight.dtype
    weight = conv.weight.detach().double()
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(var)
    folded_w = weight * scale.reshape(-1, 1, 1, 1)
    folded_b = beta + (bias - mean) * scale
    return folded_w.to(dtype).contiguous(), folded_b.to(dtype).contiguous()
