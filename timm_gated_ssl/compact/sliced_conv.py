"""Convolutions that run on a subset of their channels chosen per call, BN folded in.

A compact block knows only at run time which channels its gate keeps, so it gathers the weights of
those channels on every forward. The cost of that gather decides whether slicing pays off at
batch 1, where small feature maps make a conv read its weights once and do little work per weight
(``docs/speed.md`` has the measurements behind the choices here):

* :class:`RowSlicedConv` keeps some *output* channels: the weight is stored ``(C_out, C_in, kh,
  kw)`` so the kept rows are contiguous and the gather is a plain memory copy.
* :class:`ColumnSlicedConv` keeps some *input* channels. Gathering columns of ``(C_out, C_in, kh,
  kw)`` is a strided copy several times slower than the conv it feeds, so the weight is stored
  input-major, ``(C_in, kh, kw, C_out)``, and the kept inputs are again contiguous rows. Outputs
  of at most :data:`SMALL_MAP_PIXELS` pixels over the whole batch then run as one matrix product
  ``unfold(h)^T @ W[kept]`` that reads the gathered rows in place; larger 1x1 convs as
  ``W[kept]^T @ h`` (NCHW out), other large ones ``F.conv2d`` on a permuted view of the rows.
* :class:`SlicedConv` keeps some input *and* output channels (a Bottleneck's 3x3 conv).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fold import fold_bn

#: Outputs of at most this many pixels (batch x height x width) use the unfold + matrix product path.
SMALL_MAP_PIXELS = 64


class _Geometry(nn.Module):
    """Stride / padding / dilation / groups of a conv, to call ``F.conv2d`` with gathered weights."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise TypeError(
                f"compact execution supports convs with explicit zero padding only, got "
                f"padding={conv.padding!r}, padding_mode={conv.padding_mode!r}"
            )
        self.stride, self.padding = conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        self.kernel_size = conv.kernel_size

    def conv(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def out_size(self, x: torch.Tensor) -> tuple[int, int]:
        size = []
        for i in range(2):
            span = self.dilation[i] * (self.kernel_size[i] - 1) + 1
            size.append((x.shape[2 + i] + 2 * self.padding[i] - span) // self.stride[i] + 1)
        return size[0], size[1]


class RowSlicedConv(_Geometry):
    """``BN(conv(x))[:, rows]``, computing only the kept output channels ``rows``."""

    def __init__(self, conv: nn.Conv2d, norm: nn.Module) -> None:
        super().__init__(conv)
        w, b = fold_bn(conv, norm)
        self.register_buffer("weight", w)
        self.register_buffer("bias", b)

    def forward(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if rows.numel() == self.weight.shape[0]:  # every channel kept: no gather
            return self.conv(x, self.weight, self.bias)
        return self.conv(x, self.weight.index_select(0, rows), self.bias.index_select(0, rows))


class ColumnSlicedConv(_Geometry):
    """``BN(conv(h_full))`` where ``h_full`` is zero outside the kept input channels ``cols`` and
    ``h`` holds those channels, computed from ``h`` alone."""

    def __init__(self, conv: nn.Conv2d, norm: nn.Module) -> None:
        super().__init__(conv)
        if conv.groups != 1:
            raise TypeError("ColumnSlicedConv needs an ungrouped conv")
        w, b = fold_bn(conv, norm)
        self.out_channels = w.shape[0]
        self.register_buffer("weight_t", w.permute(1, 2, 3, 0).contiguous())  # (C_in, kh, kw, C_out)
        self.register_buffer("bias", b)
        self.pointwise = self.kernel_size == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)

    def forward(self, h: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        w = self.weight_t if cols.numel() == self.weight_t.shape[0] else self.weight_t.index_select(0, cols)
        out_h, out_w = self.out_size(h)
        batch, small = h.shape[0], h.shape[0] * out_h * out_w <= SMALL_MAP_PIXELS
        if small:
            if self.pointwise:
                patches = h.flatten(2)
            else:
                patches = F.unfold(h, self.kernel_size, self.dilation, self.padding, self.stride)
            # bias + (L, k*kh*kw) @ (k*kh*kw, C_out): the gathered rows are read in place, and the
            # transposed result is small enough to copy
            w = w.view(-1, self.out_channels)
            if batch == 1:
                out = torch.addmm(self.bias, patches[0].t(), w).t()[None]
            else:
                out = torch.baddbmm(self.bias, patches.transpose(1, 2), w.expand(batch, -1, -1))
                out = out.transpose(1, 2)
            return out.reshape(batch, self.out_channels, out_h, out_w)
        if self.pointwise:  # (C_out, k) @ (B, k, L): NCHW directly, no copy of a large output
            out = torch.matmul(w.view(-1, self.out_channels).t(), h.flatten(2)).add_(self.bias[:, None])
            return out.view(batch, self.out_channels, out_h, out_w)
        return self.conv(h, w.permute(3, 0, 1, 2), self.bias)


class SlicedConv(_Geometry):
    """A conv restricted to kept input channels ``cols`` and kept output channels ``rows``.

    Grouped convs keep the groups equal in size: each group runs on as many channels as the
    fullest group keeps (padded with off channels of that group, whose inputs are zero and whose
    outputs the caller zeroes), see :func:`padded_group_index`.
    """

    def __init__(self, conv: nn.Conv2d, norm: nn.Module) -> None:
        super().__init__(conv)
        w, b = fold_bn(conv, norm)
        self.register_buffer("weight", w)
        self.register_buffer("bias", b)

    def forward(self, h: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        if self.groups == 1:
            w = self.weight.index_select(0, rows).index_select(1, cols)
            return self.conv(h, w, self.bias.index_select(0, rows))
        # grouped: rows / cols are padded per group (equal counts); local column offsets per group
        groups = self.groups
        per_in = self.weight.shape[1]
        w = self.weight.index_select(0, rows)
        local = (cols % per_in).view(groups, -1)
        index = local.repeat_interleave(rows.numel() // groups, dim=0)
        index = index[:, :, None, None].expand(-1, -1, *w.shape[2:])
        w = torch.gather(w, 1, index)
        return F.conv2d(h, w, self.bias.index_select(0, rows), self.stride, self.padding,
                        self.dilation, groups)


def padded_group_index(keep: torch.Tensor, groups: int) -> torch.Tensor:
    """Indices of ``keep``'s on channels, padded so that every group has the same count.

    Args:
        keep: ``(W,)`` bool, the channels to keep; ``W`` is divisible by ``groups``.
        groups: Number of equal contiguous channel groups.

    Returns:
        ``groups * max_g(count_g)`` ascending indices (at least one per group): each group's kept
        channels and, as padding, its lowest-numbered off channels. All channels give ``arange(W)``.
    """
    per = keep.numel() // groups
    grouped = keep.view(groups, per)
    count = max(int(grouped.sum(1).max()), 1)
    # rank each group's channels kept first (stable), take `count`, restore ascending order
    order = torch.argsort((~grouped).to(torch.int8), dim=1, stable=True)[:, :count].sort(dim=1).values
    index = (order + torch.arange(groups, device=keep.device)[:, None] * per).flatten()
    return index
