"""Sliced convs equal a full conv whose off channels are zero, on every execution path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.helpers import randomize_norms
from timm_gated_ssl.compact.sliced_conv import (
    SMALL_MAP_PIXELS,
    ColumnSlicedConv,
    RowSlicedConv,
    SlicedConv,
    padded_group_index,
)


def _conv_bn(c_in: int, c_out: int, kernel: int, *, stride: int = 1, groups: int = 1,
             dilation: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    torch.manual_seed(c_in * 7 + c_out + kernel)
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=dilation * (kernel // 2),
                     dilation=dilation, groups=groups, bias=False)
    bn = nn.BatchNorm2d(c_out)
    randomize_norms(bn, seed=c_out)
    return conv.eval(), bn.eval()


def _reference(conv: nn.Conv2d, bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return bn(conv(x))


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert float((a - b).abs().max()) <= 1e-5 * float(b.abs().max().clamp_min(1.0))


# map sizes below, at and above the small-map threshold, a strided conv, a dilated one, 1x1 convs
CASES = [(3, 1, 1, 4), (3, 1, 1, 16), (3, 1, 1, 20), (3, 2, 1, 24), (3, 1, 2, 12), (1, 1, 1, 20), (1, 1, 1, 4)]


@pytest.mark.parametrize("kernel,stride,dilation,size", CASES)
@pytest.mark.parametrize("batch", [1, 3])
def test_column_sliced_conv_equals_zeroed_inputs(kernel: int, stride: int, dilation: int, size: int,
                                                 batch: int) -> None:
    conv, bn = _conv_bn(24, 40, kernel, stride=stride, dilation=dilation)
    cols = torch.tensor([0, 3, 4, 11, 23])
    x = torch.randn(batch, 24, size, size)
    zeroed = torch.zeros_like(x)
    zeroed[:, cols] = x[:, cols]
    sliced = ColumnSlicedConv(conv, bn)
    out = sliced(x[:, cols].contiguous(), cols)
    _close(out, _reference(conv, bn, zeroed))
    assert out.is_contiguous() or out.is_contiguous(memory_format=torch.channels_last)


def test_column_sliced_conv_takes_both_paths() -> None:
    """The two paths (matrix product on small maps, conv on large ones) agree with each other."""
    conv, bn = _conv_bn(16, 8, 3)
    sliced = ColumnSlicedConv(conv, bn)
    cols = torch.tensor([1, 2, 9])
    side = int(SMALL_MAP_PIXELS**0.5)
    for size in (side, side + 1):  # at the threshold: matmul; one pixel wider: conv
        x = torch.randn(2, 16, size, size)
        zeroed = torch.zeros_like(x)
        zeroed[:, cols] = x[:, cols]
        _close(sliced(x[:, cols].contiguous(), cols), _reference(conv, bn, zeroed))


@pytest.mark.parametrize("stride", [1, 2])
def test_row_sliced_conv_equals_selected_outputs(stride: int) -> None:
    conv, bn = _conv_bn(12, 32, 3, stride=stride)
    rows = torch.tensor([2, 5, 6, 31])
    x = torch.randn(2, 12, 9, 9)
    _close(RowSlicedConv(conv, bn)(x, rows), _reference(conv, bn, x)[:, rows])


@pytest.mark.parametrize("groups", [1, 4])
def test_sliced_conv_rows_and_columns(groups: int) -> None:
    conv, bn = _conv_bn(16, 16, 3, groups=groups)
    keep_in = torch.zeros(16, dtype=torch.bool)
    keep_in[[0, 1, 5, 9, 10, 11, 15]] = True
    keep_out = torch.zeros(16, dtype=torch.bool)
    keep_out[[3, 4, 8, 12, 13]] = True
    if groups == 1:
        cols, rows = keep_in.nonzero().flatten(), keep_out.nonzero().flatten()
    else:
        cols, rows = padded_group_index(keep_in, groups), padded_group_index(keep_out, groups)
    x = torch.randn(2, 16, 6, 6) * keep_in[None, :, None, None]  # off inputs are zero
    out = SlicedConv(conv, bn)(x[:, cols].contiguous(), rows, cols)
    _close(out, _reference(conv, bn, x)[:, rows])


def test_padded_group_index_by_hand() -> None:
    keep = torch.tensor([1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0], dtype=torch.bool)  # 3 groups of 4
    # counts per group 1, 2, 0 -> 2 each: the kept ones, then the lowest off ones, ascending
    assert padded_group_index(keep, 3).tolist() == [0, 1, 5, 6, 8, 9]
    keep = torch.tensor([0, 0, 1, 1, 0, 1, 0, 0], dtype=torch.bool)  # padding below a kept channel
    assert padded_group_index(keep, 2).tolist() == [2, 3, 4, 5]
    assert padded_group_index(torch.zeros(8, dtype=torch.bool), 2).tolist() == [0, 4]
    assert padded_group_index(torch.ones(4, dtype=torch.bool), 2).tolist() == [0, 1, 2, 3]


def test_bad_padding_is_rejected() -> None:
    conv = nn.Conv2d(4, 4, 3, padding="same")
    with pytest.raises(TypeError, match="explicit zero padding"):
        RowSlicedConv(conv, nn.BatchNorm2d(4).eval())
    with pytest.raises(TypeError, match="ungrouped"):
        ColumnSlicedConv(nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.BatchNorm2d(4).eval())
