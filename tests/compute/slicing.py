"""A physically sliced copy of a gated ResNet for one sample's masks (the reference for gated MACs).

Off channels are removed from the weights: conv1's outputs and conv2's inputs (BasicBlock), or
conv1's outputs, conv2's inputs and outputs and conv3's inputs (Bottleneck). A grouped conv whose
groups keep different numbers of channels becomes one conv per group. The gate network stays, run on
the pooled block input by a pre-hook, so torch's FlopCounterMode sees its cost too.
"""

from __future__ import annotations

import copy

import torch
from timm.layers import BlurPool2d
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from timm_gated_ssl import detach_gates, iter_gates


class GroupSlicedConv(nn.Module):
    """A (grouped) conv restricted to ``keep_in`` inputs and ``keep_out`` outputs, per group.

    Its input holds only the kept input channels, in order; its output only the kept outputs.
    """

    def __init__(self, conv: nn.Conv2d, keep_in: torch.Tensor, keep_out: torch.Tensor) -> None:
        super().__init__()
        g = conv.groups
        cin_g, cout_g = conv.in_channels // g, conv.out_channels // g
        position = torch.cumsum(keep_in.long(), 0) - 1  # full input index -> kept input index
        self.conv, self.parts = conv, nn.ModuleList()
        self.plan: list[tuple[int, int]] = []  # (part index, or -1 for zeros; output channels)
        for group in range(g):
            ins = keep_in[group * cin_g:(group + 1) * cin_g].nonzero().flatten() + group * cin_g
            outs = keep_out[group * cout_g:(group + 1) * cout_g].nonzero().flatten() + group * cout_g
            if len(outs) == 0:
                continue
            if len(ins) == 0:  # outputs kept but no input: zeros (ResNet convs have no bias)
                self.plan.append((-1, len(outs)))
                continue
            part = torch.nn.utils.skip_init(
                nn.Conv2d, len(ins), len(outs), conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, bias=False,
            )
            part.weight.data.copy_(conv.weight.data[outs][:, ins - group * cin_g])
            self.register_buffer(f"pos_{len(self.parts)}", position[ins], persistent=False)
            self.plan.append((len(self.parts), len(outs)))
            self.parts.append(part)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for index, n_out in self.plan:
            if index == -1:
                outs.append(x.new_zeros(x.shape[0], n_out, *_out_hw(self.conv, x.shape[-2:])))
            else:
                outs.append(self.parts[index](x[:, getattr(self, f"pos_{index}")]))
        return torch.cat(outs, dim=1)


def _out_hw(conv: nn.Conv2d, hw: tuple[int, int]) -> tuple[int, int]:
    return tuple(
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, p, d, k, s in zip(hw, conv.padding, conv.dilation, conv.kernel_size, conv.stride)
    )  # type: ignore[return-value]


def _slice_bn(bn: nn.BatchNorm2d, keep: torch.Tensor) -> nn.BatchNorm2d:
    idx = keep.nonzero().flatten()
    new = nn.BatchNorm2d(len(idx), eps=bn.eps).eval()
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(new, name).data.copy_(getattr(bn, name).data[idx])
    return new


def _run_gate_net(block: nn.Module, args: tuple) -> None:
    block.gate_net(args[0].mean(dim=(2, 3)))  # cost only: the masks are baked into the weights


def sliced_copy(model: nn.Module, masks: dict[str, tuple[torch.Tensor, ...]]) -> nn.Module:
    """A plain network computing what ``model`` computes in gated eval mode under ``masks``.

    Args:
        model: A gated timm ResNet (eval mode).
        masks: ``{block_name: (mask_per_width, ...)}`` of ONE sample, 1-D 0/1 tensors.
    """
    m = copy.deepcopy(model).eval()
    nets = {}
    for name, gate in iter_gates(m):
        block = m.get_submodule(name)
        for key, norm in gate.norms.items():  # the gated-mode norms replace the dense ones
            block.get_submodule(key.replace("__", ".")).load_state_dict(norm.state_dict())
        nets[name] = (gate.net, gate.logit_offset)
    detach_gates(m)
    for name, keep in masks.items():
        block = m.get_submodule(name)
        keep = tuple(k.bool() for k in keep)
        if isinstance(block, BasicBlock):
            (k1,) = keep
            full_in = torch.ones(block.conv1.in_channels, dtype=torch.bool)
            full_out = torch.ones(block.conv2.out_channels, dtype=torch.bool)
            block.conv1 = GroupSlicedConv(block.conv1, full_in, k1)
            block.bn1 = _slice_bn(block.bn1, k1)
            if isinstance(block.aa, BlurPool2d):
                block.aa = BlurPool2d(int(k1.sum()), filt_size=block.aa.filt_size, stride=block.aa.stride)
            block.conv2 = GroupSlicedConv(block.conv2, k1, full_out)
        else:
            assert isinstance(block, Bottleneck)
            k1, k2 = keep
            full_in = torch.ones(block.conv1.in_channels, dtype=torch.bool)
            full_out = torch.ones(block.conv3.out_channels, dtype=torch.bool)
            block.conv1 = GroupSlicedConv(block.conv1, full_in, k1)
            block.bn1 = _slice_bn(block.bn1, k1)
            block.conv2 = GroupSlicedConv(block.conv2, k1, k2)
            block.bn2 = _slice_bn(block.bn2, k2)
            if isinstance(block.aa, BlurPool2d):
                block.aa = BlurPool2d(int(k2.sum()), filt_size=block.aa.filt_size, stride=block.aa.stride)
            block.conv3 = GroupSlicedConv(block.conv3, k2, full_out)
        net, _ = nets[name]
        block.gate_net = net
        block.register_forward_pre_hook(_run_gate_net)
    return m
