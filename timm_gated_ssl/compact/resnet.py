"""Compact ResNet blocks: run a gated timm ``BasicBlock`` / ``Bottleneck`` on the kept channels only.

Each gated conv is stored once, with its gated-mode BatchNorm folded in (``fold.py``). Per forward the
block evaluates its gate on the block input and gathers, for the kept channels ``k`` of a width,
the conv rows that produce them and the next conv's weights that read them (``sliced_conv.py``
stores each weight so that both gathers are contiguous copies). Nothing per-sample is cached: with
trained gates nearly every image has its own mask pattern (``docs/speed.md``).

Batch > 1 (see ``docs/speed.md`` for the measurements behind the default):

* ``"union"`` (default): run the union of the channels any sample keeps, then zero each sample's
  off channels (``h * m[:, k]``) so the result is exactly the masked network's.
* ``"per_sample"``: a batch-1 pass per sample.
* ``"group"``: one pass per set of samples with identical masks.

Grouped 3x3 convs (ResNeXt): a grouped conv needs equal group sizes, so every group runs on as many
channels as its fullest group keeps; the padding channels (off for every sample) are zeroed, which
keeps the result exact. The static export pads its groups the same way.
"""

from __future__ import annotations

import copy

import torch
from timm.layers import BlurPool2d
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from ..gates import BlockGate
from .batching import BatchStrategy, check_strategy, kept, run_batched
from .fold import gated_norm
from .gate import CompactGate
from .sliced_conv import ColumnSlicedConv, RowSlicedConv, SlicedConv, padded_group_index


def _check_aa(aa: nn.Module) -> nn.Module:
    """The anti-aliasing layer, made independent of the channel count (it sees a varying width)."""
    if getattr(aa, "channels", None) is None:
        return aa
    if isinstance(aa, BlurPool2d) and bool((aa.filt == aa.filt[:1]).all()):
        agnostic = copy.deepcopy(aa)
        agnostic.channels = None  # the same binomial filter for every channel: keep one row
        agnostic.filt = aa.filt[:1].clone()
        return agnostic
    raise TypeError(f"compact execution cannot slice the anti-aliasing layer {type(aa).__name__}")


def _zero_off(h: torch.Tensor, mask: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Zero the gathered channels ``idx`` that each sample's mask turns off (padding included)."""
    sub = mask.index_select(1, idx)
    if bool(sub.all()):
        return h
    return h * sub.to(h.dtype)[:, :, None, None]


def _apply(h: torch.Tensor, mask: torch.Tensor, idx: torch.Tensor, empty: bool) -> torch.Tensor:
    """:func:`_zero_off` for the exact kept set ``idx``: nothing to do for one sample (``idx`` is
    its kept set), all zero when ``idx`` is the stand-in channel of an empty set."""
    if empty:
        return h.zero_()
    if mask.shape[0] == 1:
        return h
    return _zero_off(h, mask, idx)


def _nonempty(idx: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if idx.numel() == 0:  # every channel off: run one channel and zero it (exact, rare)
        return idx.new_zeros(1), True
    return idx, False


class _CompactBlock(nn.Module):
    """Shared tail (SE, shortcut, residual add, activation); batches run by ``batching.run_batched``."""

    def __init__(self, block: nn.Module, gate: BlockGate, strategy: BatchStrategy) -> None:
        super().__init__()
        self.strategy = check_strategy(strategy)
        self.gate = CompactGate(gate)
        self.se = block.se
        self.downsample = block.downsample

    def branch(self, x: torch.Tensor, masks: tuple[torch.Tensor, ...]) -> torch.Tensor:
        raise NotImplementedError

    def _act(self, module: nn.Module, h: torch.Tensor) -> torch.Tensor:
        """``module(h)``, as an in-place ``relu_`` for a ReLU (fewer dispatches at batch 1)."""
        return torch.relu_(h) if type(module) is nn.ReLU else module(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        masks = self.gate(x)
        y = run_batched(self.branch, x, masks, self.strategy)
        if self.se is not None:
            y = self.se(y)
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self._act(self.act_out, y.add_(shortcut))


class CompactBasicBlock(_CompactBlock):
    """A timm ``BasicBlock`` that computes only conv1's kept outputs and conv2's kept inputs."""

    def __init__(self, block: BasicBlock, gate: BlockGate, strategy: BatchStrategy = "union") -> None:
        super().__init__(block, gate, strategy)
        self.conv1 = RowSlicedConv(block.conv1, gated_norm(block, gate, "bn1"))
        self.conv2 = ColumnSlicedConv(block.conv2, gated_norm(block, gate, "bn2"))
        self.act1, self.act_out = block.act1, block.act2
        self.aa = None if isinstance(block.aa, nn.Identity) else _check_aa(block.aa)

    def branch(self, x: torch.Tensor, masks: tuple[torch.Tensor, ...]) -> torch.Tensor:
        (m1,) = masks
        idx, empty = _nonempty(kept(m1))
        h = _apply(self._act(self.act1, self.conv1(x, idx)), m1, idx, empty)
        if self.aa is not None:
            h = self.aa(h)
        return self.conv2(h, idx)


class CompactBottleneck(_CompactBlock):
    """A timm ``Bottleneck`` that shrinks both gated inner widths (conv1 rows, conv2 rows and
    columns, conv3 columns). A grouped conv2 (ResNeXt) keeps equal group sizes by running every
    group on as many channels as its fullest group keeps, the padding channels zeroed."""

    def __init__(self, block: Bottleneck, gate: BlockGate, strategy: BatchStrategy = "union") -> None:
        super().__init__(block, gate, strategy)
        self.conv1 = RowSlicedConv(block.conv1, gated_norm(block, gate, "bn1"))
        self.conv2 = SlicedConv(block.conv2, gated_norm(block, gate, "bn2"))
        self.conv3 = ColumnSlicedConv(block.conv3, gated_norm(block, gate, "bn3"))
        self.groups = block.conv2.groups
        self.act1, self.act2, self.act_out = block.act1, block.act2, block.act3
        self.aa = None if isinstance(block.aa, nn.Identity) else _check_aa(block.aa)

    def branch(self, x: torch.Tensor, masks: tuple[torch.Tensor, ...]) -> torch.Tensor:
        m1, m2 = masks
        if self.groups == 1:
            idx1, empty1 = _nonempty(kept(m1))
            idx2, empty2 = _nonempty(kept(m2))
            h = _apply(self._act(self.act1, self.conv1(x, idx1)), m1, idx1, empty1)
            h = _apply(self._act(self.act2, self.conv2(h, idx2, idx1)), m2, idx2, empty2)
        else:
            idx1 = padded_group_index(m1.any(dim=0), self.groups)
            idx2 = padded_group_index(m2.any(dim=0), self.groups)
            h = _zero_off(self._act(self.act1, self.conv1(x, idx1)), m1, idx1)
            h = _zero_off(self._act(self.act2, self.conv2(h, idx2, idx1)), m2, idx2)
        if self.aa is not None:
            h = self.aa(h)
        return self.conv3(h, idx2)


def compact_resnet_block(block: nn.Module, gate: BlockGate, strategy: BatchStrategy) -> nn.Module | None:
    """The compact version of a gated timm ResNet block, or None for any other module."""
    if isinstance(block, BasicBlock):
        return CompactBasicBlock(block, gate, strategy)
    if isinstance(block, Bottleneck):
        return CompactBottleneck(block, gate, strategy)
    return None


__all__ = ["CompactBasicBlock", "CompactBottleneck", "compact_resnet_block"]
