"""Compact execution of width-gated ResNet blocks: inputs grouped by level, each group on a weight prefix.

A width gate (``gates/width.py``) keeps, per input, the first ``s_k`` channels of each gated width
of a block. A prefix of a conv's output channels is the first rows of its weight, a prefix of its
input channels the first rows of the input-major copy ``(C_in, kh, kw, C_out)``: both are views, so
a level runs on sliced views of the stored (BN-folded) weights with no gather and no copy made by
this code. For a batch, the inputs are sorted by their level once, each level's contiguous chunk
runs on its prefix, and the results are scattered back into one output (DS-Net, Li et al.,
CVPR 2021, runs its dynamic widths the same way, one sub-network per width). At most ``levels``
groups per block, whatever the batch size, instead of one pattern per image for channel gates.

What runs per level (``s`` = the level's size of each gated width):

* ``BasicBlock``: ``conv1`` rows ``[:s]`` (BN1 folded), ``act1``, anti-aliasing, ``conv2`` input
  columns ``[:s]`` (BN2 folded).
* ``Bottleneck``: ``conv1`` rows ``[:s1]``, ``conv2`` rows ``[:s2]`` and columns ``[:s1]`` (grouped:
  the first ``s2 / (C / G)`` whole groups, as a conv with that many groups), ``conv3`` columns
  ``[:s2]``.

The output equals the masked gated model in eval mode (deterministic gates, gated norms) to float
rounding. Small outputs (at most :data:`~timm_gated_ssl.compact.sliced_conv.SMALL_MAP_PIXELS`
pixels over the chunk) multiply ``unfold(h)^T @ W[:s]`` directly, as the channel path does.
``compact``'s ``batch_strategy`` does not apply: grouping by level is exact and needs no zeroing.
Width-gated ViT blocks: ``compact/vit_width.py`` (the same :func:`run_by_level` and
:class:`CompactWidthGate`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from ..gates import BlockGate, WidthGate
from ..gates.width import _MAX_PRICE
from .fold import fold_bn, gated_norm
from .gate import CompactGate, _autocast_enabled
from .resnet import _check_aa
from .sliced_conv import SMALL_MAP_PIXELS, _Geometry

__all__ = [
    "CompactWidthBasicBlock", "CompactWidthBottleneck", "CompactWidthGate", "compact_width_block", "run_by_level",
]


def run_by_level(
    run: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, level: torch.Tensor, *, levels: int
) -> torch.Tensor:
    """``run(x_k, k)`` for the inputs ``x_k`` of every level ``k`` present, scattered back in order.

    The batch is sorted by level once (stable), each level's contiguous chunk runs in one call,
    and the results are copied into one output; batch 1 and a batch of one level run directly.

    Args:
        run: The computation of one level on a sub-batch (ResNet: the residual branch; ViT: the
            whole block).
        x: The batch, ``(B, ...)``.
        level: Each input's level, ``(B,)`` int64 in ``0..levels-1``.
        levels: The number of levels.

    Returns:
        ``(B, ...)``: row ``i`` is ``run(x[i:i+1], level[i])``.
    """
    if x.shape[0] == 1:
        return run(x, int(level[0]))
    counts = torch.bincount(level, minlength=levels).tolist()
    present = [k for k, n in enumerate(counts) if n]
    if len(present) == 1:
        return run(x, present[0])
    order = torch.argsort(level, stable=True)
    chunks = x.index_select(0, order).split([counts[k] for k in present])
    out: torch.Tensor | None = None
    start = 0
    for chunk, k in zip(chunks, present):
        y = run(chunk, k)
        if out is None:
            out = y.new_empty((x.shape[0],) + y.shape[1:])
        out.index_copy_(0, order[start : start + chunk.shape[0]], y)
        start += chunk.shape[0]
    assert out is not None
    return out


class CompactWidthGate(CompactGate):
    """The deterministic level choice of a width gate: ``argmax_k(a_k - lambda * k / L)``, ``(B,)``.

    The gate network runs as in :class:`~timm_gated_ssl.compact.gate.CompactGate` (two ``addmm``,
    BN folded); the calibration price ``-lambda * k / L`` is its last bias.
    """

    def __init__(self, gate: WidthGate) -> None:
        super().__init__(gate)
        price = gate.logit_offset.detach().float().clamp(-_MAX_PRICE, _MAX_PRICE)
        self.b2 = (-price * gate.fractions.detach().float()).clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if _autocast_enabled(x.device.type):
            with torch.autocast(device_type=x.device.type, enabled=False):
                return self._logits(x).argmax(dim=1)
        return self._logits(x).argmax(dim=1)


class PrefixRowConv(_Geometry):
    """``BN(conv(x))[:, :s]``: the first ``s`` output channels, from the first ``s`` weight rows."""

    def __init__(self, conv: nn.Conv2d, norm: nn.Module) -> None:
        super().__init__(conv)
        w, b = fold_bn(conv, norm)
        self.register_buffer("weight", w)
        self.register_buffer("bias", b)

    def forward(self, x: torch.Tensor, size: int) -> torch.Tensor:
        return self.conv(x, self.weight[:size], self.bias[:size])


class PrefixColumnConv(_Geometry):
    """``BN(conv(h_full))`` for an input whose channels past the first ``s`` are zero, from the
    ``s`` channels alone: the weight is stored input-major ``(C_in, kh, kw, C_out)`` so the first
    ``s`` inputs' weights are a contiguous view. Optionally only the first ``rows`` outputs."""

    def __init__(self, conv: nn.Conv2d, norm: nn.Module) -> None:
        super().__init__(conv)
        if conv.groups != 1:
            raise TypeError("PrefixColumnConv needs an ungrouped conv")
        w, b = fold_bn(conv, norm)
        self.out_channels = w.shape[0]
        self.register_buffer("weight_t", w.permute(1, 2, 3, 0).contiguous())  # (C_in, kh, kw, C_out)
        self.register_buffer("bias", b)
        self.pointwise = self.kernel_size == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)

    def forward(self, h: torch.Tensor, size: int, rows: int | None = None) -> torch.Tensor:
        rows = self.out_channels if rows is None else rows
        w = self.weight_t[:size]
        bias = self.bias[:rows]
        out_h, out_w = self.out_size(h)
        batch = h.shape[0]
        if batch * out_h * out_w <= SMALL_MAP_PIXELS:
            if self.pointwise:
                patches = h.flatten(2)
            else:
                patches = F.unfold(h, self.kernel_size, self.dilation, self.padding, self.stride)
            mat = w.view(-1, self.out_channels)[:, :rows]  # a view with leading dimension C_out
            if batch == 1:
                out = torch.addmm(bias, patches[0].t(), mat).t()[None]
            else:
                out = torch.baddbmm(bias, patches.transpose(1, 2), mat.expand(batch, -1, -1)).transpose(1, 2)
            return out.reshape(batch, rows, out_h, out_w)
        if self.pointwise:  # (rows, s) @ (B, s, L): NCHW directly
            mat = w.view(-1, self.out_channels)[:, :rows]
            out = torch.matmul(mat.t(), h.flatten(2)).add_(bias[:, None])
            return out.view(batch, rows, out_h, out_w)
        return self.conv(h, w[..., :rows].permute(3, 0, 1, 2), bias)


class _CompactWidthBlock(nn.Module):
    """Level grouping, SE, shortcut, residual add and output activation of a width-gated block."""

    def __init__(self, block: nn.Module, gate: WidthGate) -> None:
        super().__init__()
        self.gate = CompactWidthGate(gate)
        self.sizes = gate.sizes
        self.levels = gate.levels
        self.se = block.se
        self.downsample = block.downsample

    def branch(self, x: torch.Tensor, level: int) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _act(module: nn.Module, h: torch.Tensor) -> torch.Tensor:
        return torch.relu_(h) if type(module) is nn.ReLU else module(h)

    def run_levels(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """The residual branch for every input, each level's inputs run together on its prefix."""
        return run_by_level(self.branch, x, level, levels=self.levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.run_levels(x, self.gate(x))
        if self.se is not None:
            y = self.se(y)
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self._act(self.act_out, y.add_(shortcut))


class CompactWidthBasicBlock(_CompactWidthBlock):
    """A width-gated timm ``BasicBlock``: conv1 rows and conv2 columns ``[:s]`` per level."""

    def __init__(self, block: BasicBlock, gate: WidthGate) -> None:
        super().__init__(block, gate)
        self.conv1 = PrefixRowConv(block.conv1, gated_norm(block, gate, "bn1"))
        self.conv2 = PrefixColumnConv(block.conv2, gated_norm(block, gate, "bn2"))
        self.act1, self.act_out = block.act1, block.act2
        self.aa = None if isinstance(block.aa, nn.Identity) else _check_aa(block.aa)

    def branch(self, x: torch.Tensor, level: int) -> torch.Tensor:
        size = self.sizes[0][level]
        h = self._act(self.act1, self.conv1(x, size))
        if self.aa is not None:
            h = self.aa(h)
        return self.conv2(h, size)


class CompactWidthBottleneck(_CompactWidthBlock):
    """A width-gated timm ``Bottleneck``: conv1 rows ``[:s1]``, conv2 ``[:s2, :s1]`` (grouped: its
    first whole groups), conv3 columns ``[:s2]`` per level."""

    def __init__(self, block: Bottleneck, gate: WidthGate) -> None:
        super().__init__(block, gate)
        self.conv1 = PrefixRowConv(block.conv1, gated_norm(block, gate, "bn1"))
        self.groups = block.conv2.groups
        if self.groups == 1:
            self.conv2: nn.Module = PrefixColumnConv(block.conv2, gated_norm(block, gate, "bn2"))
        else:
            self.conv2 = PrefixRowConv(block.conv2, gated_norm(block, gate, "bn2"))
            self.group_width = block.conv2.out_channels // self.groups
        self.conv3 = PrefixColumnConv(block.conv3, gated_norm(block, gate, "bn3"))
        self.act1, self.act2, self.act_out = block.act1, block.act2, block.act3
        self.aa = None if isinstance(block.aa, nn.Identity) else _check_aa(block.aa)

    def branch(self, x: torch.Tensor, level: int) -> torch.Tensor:
        s1, s2 = self.sizes[0][level], self.sizes[1][level]
        h = self._act(self.act1, self.conv1(x, s1))
        if self.groups == 1:
            h = self.conv2(h, s1, s2)
        else:  # the first s2 / group_width groups read exactly the first s1 inputs
            conv = self.conv2
            h = F.conv2d(h, conv.weight[:s2], conv.bias[:s2], conv.stride, conv.padding, conv.dilation,
                         s2 // self.group_width)
        h = self._act(self.act2, h)
        if self.aa is not None:
            h = self.aa(h)
        return self.conv3(h, s2)


def compact_width_block(block: nn.Module, gate: BlockGate, strategy: str) -> nn.Module | None:
    """The compact version of a width-gated timm ResNet block; None for a channel gate or another
    family (``strategy`` does not apply to width gates)."""
    if not isinstance(gate, WidthGate):
        return None
    if isinstance(block, BasicBlock):
        return CompactWidthBasicBlock(block, gate)
    if isinstance(block, Bottleneck):
        return CompactWidthBottleneck(block, gate)
    return None
