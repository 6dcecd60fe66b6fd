"""The eval-mode gate of a compact block: which channels of each gated width are on for each input."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..gates import BlockGate
from .fold import fold_bn


class CompactGate(nn.Module):
    """The deterministic (eval) gate of one block: ``m = [logits - offset >= 0]``, per width.

    The block input is pooled as the gate pools it (spatial mean of ``(B, C, H, W)``, token mean of
    ``(B, N, C)``). The gate network's 1x1 convs on the pooled ``(B, C, 1, 1)`` map run as two matrix
    products, with its BatchNorm folded into the first (a 1x1 conv at 1x1 spatial size takes
    PyTorch's slow im2col path on CPU); the offset is folded into the last bias.
    """

    def __init__(self, gate: BlockGate) -> None:
        super().__init__()
        net = gate.net
        w1, b1 = fold_bn(net.reduce, net.norm)
        w2 = net.expand.weight.detach()
        self.register_buffer("w1", w1.flatten(1).float())
        self.register_buffer("b1", b1.float())
        self.register_buffer("w2", w2.flatten(1).float().contiguous())
        self.register_buffer("b2", (-gate.logit_offset.detach().float()).expand(w2.shape[0]).clone())
        self.act = copy.deepcopy(net.act)
        self.widths = gate.widths
        self.pooling = gate.pooling

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pooled = x.mean(dim=(2, 3)) if self.pooling == "spatial" else x.mean(dim=1)
        with torch.autocast(device_type=pooled.device.type, enabled=False):
            logits = F.linear(self.act(F.linear(pooled.float(), self.w1, self.b1)), self.w2, self.b2)
        return tuple(torch.split(logits >= 0, self.widths, dim=1))
