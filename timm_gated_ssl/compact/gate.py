"""The eval-mode gate of a compact block: which channels of each gated width are on for each input."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..gates import BlockGate
from .fold import fold_bn


def _autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (True where torch < 2.4 cannot say per device)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:
        return True


class CompactGate(nn.Module):
    """The deterministic (eval) gate of one block: ``m = [logits - offset >= 0]``, per width.

    The block input is pooled as the gate pools it (spatial mean of ``(B, C, H, W)``, token mean of
    ``(B, N, C)``). The gate network's 1x1 convs on the pooled ``(B, C, 1, 1)`` map run as two
    ``addmm`` (a 1x1 conv at 1x1 spatial size takes PyTorch's slow im2col path on CPU), with its
    BatchNorm folded into the first and the mean's ``1 / n`` as its ``alpha``; the offset is folded
    into the last bias. Few ops on purpose: at batch 1 the gate runs once per block and each op
    costs microseconds of dispatch.
    """

    def __init__(self, gate: BlockGate) -> None:
        super().__init__()
        net = gate.net
        w1, b1 = fold_bn(net.reduce, net.norm)
        w2 = net.expand.weight.detach()
        # stored transposed for addmm (one op each: bias + pooled @ W^T, the mean's 1/n as alpha)
        self.register_buffer("w1t", w1.flatten(1).float().t().contiguous())
        self.register_buffer("b1", b1.float())
        self.register_buffer("w2t", w2.flatten(1).float().t().contiguous())
        self.register_buffer("b2", (-gate.logit_offset.detach().float()).expand(w2.shape[0]).clone())
        self.act = copy.deepcopy(net.act)
        self.relu = type(self.act) is nn.ReLU
        self.widths = gate.widths
        self.pooling = gate.pooling

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooling == "spatial":
            summed, count = x.flatten(2).sum(-1), x.shape[2] * x.shape[3]
        else:
            summed, count = x.sum(1), x.shape[1]
        h = torch.addmm(self.b1, summed.float(), self.w1t, alpha=1.0 / count)
        h = torch.relu_(h) if self.relu else self.act(h)
        return torch.addmm(self.b2, h, self.w2t)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if _autocast_enabled(x.device.type):
            with torch.autocast(device_type=x.device.type, enabled=False):
                keep = self._logits(x) >= 0
        else:
            keep = self._logits(x) >= 0
        if len(self.widths) == 1:
            return (keep,)
        return tuple(torch.split(keep, self.widths, dim=1))
