"""``export_static`` for ResNets: cut the channels the gates never use, return a plain narrower ResNet.

The export measures on calibration data (eval mode, deterministic gates) how often each gated channel
is on, keeps every channel that fired (or fired in at least ``min_firing_rate`` of the images) and
builds a plain timm ``ResNet`` (no gates, no hooks) whose block convs and norms are physically
narrower. Inside the gated blocks it keeps the **gated-mode** norm set (the norms the gated network
was computing with); stem and downsample norms are shared by both modes anyway. The result equals the
source network run in gated mode with every removed channel switched off and every kept channel on.

Grouped convs (ResNeXt) need the same number of channels in every group: a group with fewer kept
channels is padded with removed ones whose outgoing weights (the next conv's columns) are zeroed, so
the padding changes nothing but costs its MACs.

Saving and loading: the static model is built by the registered entry point ``static_resnet``
(``base`` architecture + ``base_kwargs`` + per-block ``widths``), so ``timm.models.save_for_hf`` writes
those in ``config.json``'s ``model_args`` and ``timm.create_model("local-dir:DIR", pretrained=True)``
(or :func:`load_static`) rebuilds it, once ``timm_gated_ssl`` is imported.

``export.py`` holds the public ``export_static`` that picks the family (ViTs: ``static_vit.py``, heads
and MLP units instead of channels); the pieces both share (usage, selection, the result, reports)
are in ``static_common.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import timm
import torch
from timm.layers import BlurPool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from ..attach import require_gates
from ..gates import BlockGate
from .fold import gated_norm
from .static_common import (
    GATE_KWARGS,
    Selection,
    StaticExport,
    channel_usage,
    check_min_firing_rate,
    create_static,
    finish_export,
    load_static,
    resolve_base,
    select_channels,
    source_macs,
    usage_or_given,
)

__all__ = [
    "GATE_KWARGS", "StaticExport", "channel_usage", "export_static_resnet", "load_static",
    "narrow_resnet", "static_resnet",
]


# ------------------------------------------------------------------------- narrow modules
def _conv_like(conv: nn.Conv2d, in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(
        in_ch, out_ch, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)


def _norm_like(norm: nn.Module, channels: int) -> nn.Module:
    if not isinstance(norm, nn.BatchNorm2d):
        raise TypeError(f"static export supports BatchNorm2d block norms, got {type(norm).__name__}")
    return nn.BatchNorm2d(channels, eps=norm.eps, momentum=norm.momentum, affine=norm.affine,
                          track_running_stats=norm.track_running_stats).to(
        device=norm.running_mean.device if norm.running_mean is not None else None)


def _resnet_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (BasicBlock, Bottleneck))]


def narrow_resnet(model: ResNet, widths: Sequence[Sequence[int]]) -> ResNet:
    """Replace, in place, each residual block's inner convs and norms by narrower ones.

    Args:
        model: A timm ResNet (its weights in the narrowed layers are re-initialised).
        widths: Per block in forward order, the inner widths: ``[w1]`` for a BasicBlock,
            ``[w1, w2]`` for a Bottleneck.

    Returns:
        ``model``.
    """
    blocks = _resnet_blocks(model)
    if len(blocks) != len(widths):
        raise ValueError(f"widths lists {len(widths)} blocks but the model has {len(blocks)}")
    for (name, block), w in zip(blocks, widths):
        w = [int(v) for v in w]
        if isinstance(block, BasicBlock):
            if len(w) != 1:
                raise ValueError(f"BasicBlock {name!r} takes one width, got {w}")
            block.conv1 = _conv_like(block.conv1, block.conv1.in_channels, w[0])
            block.bn1 = _norm_like(block.bn1, w[0])
            block.conv2 = _conv_like(block.conv2, w[0], block.conv2.out_channels)
        else:
            if len(w) != 2:
                raise ValueError(f"Bottleneck {name!r} takes two widths, got {w}")
            if w[0] % block.conv2.groups or w[1] % block.conv2.groups:
                raise ValueError(f"Bottleneck {name!r} widths {w} must be multiples of its "
                                 f"{block.conv2.groups} groups")
            block.conv1 = _conv_like(block.conv1, block.conv1.in_channels, w[0])
            block.bn1 = _norm_like(block.bn1, w[0])
            block.conv2 = _conv_like(block.conv2, w[0], w[1])
            block.bn2 = _norm_like(block.bn2, w[1])
            block.conv3 = _conv_like(block.conv3, w[1], block.conv3.out_channels)
        if getattr(block.aa, "channels", None) is not None:
            aa = block.aa
            if not isinstance(aa, BlurPool2d):
                raise TypeError(f"static export cannot narrow the anti-aliasing layer {type(aa).__name__}")
            block.aa = BlurPool2d(w[-1], filt_size=aa.filt_size, stride=aa.stride, pad_mode=aa.pad_mode)
    return model


def _build_static(*, base: str, widths: Sequence[Sequence[int]],
                  base_kwargs: Mapping[str, Any] | None = None, **kwargs: Any) -> ResNet:
    model = timm.create_model(base, pretrained=False, **dict(base_kwargs or {}, **kwargs))
    if not isinstance(model, ResNet):
        raise TypeError(f"static_resnet needs a timm ResNet base, {base!r} is {type(model).__name__}")
    if any(isinstance(m, BlockGate) for m in model.modules()):
        raise TypeError(f"static_resnet needs an ungated base architecture, {base!r} carries gates")
    return narrow_resnet(model, widths)


default_cfgs = generate_default_cfgs({"static_resnet": {
    "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
    "crop_pct": 0.875, "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225), "first_conv": "conv1", "classifier": "fc",
}})


@register_model
def static_resnet(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """A timm ResNet with per-block inner widths, as written by :func:`export_static`.

    Keyword Args:
        base: The ungated timm architecture it was cut from (e.g. ``"resnet18"``, ``"resnet18_cifar"``).
        widths: Per block, in forward order, the inner widths (``[w1]`` or ``[w1, w2]``).
        base_kwargs: Other ``timm.create_model`` kwargs of the base (e.g. ``cifar_stem_padding``).
    """
    return build_model_with_cfg(_build_static, "static_resnet", pretrained, **kwargs)


# ------------------------------------------------------------------------------- cutting
def _slice_norm(dst: nn.Module, src: nn.Module, index: torch.Tensor | None) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        s, d = getattr(src, name), getattr(dst, name)
        if s is not None and d is not None:
            d.data.copy_(s.data if index is None else s.data.index_select(0, index))
    if getattr(src, "num_batches_tracked", None) is not None and dst.num_batches_tracked is not None:
        dst.num_batches_tracked.copy_(src.num_batches_tracked)


def _grouped_columns(weight: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, groups: int,
                     in_total: int) -> torch.Tensor:
    """``weight[rows][:, cols]`` for a grouped conv, with ``cols`` mapped into each row's group."""
    w = weight.index_select(0, rows)
    if groups == 1:
        return w.index_select(1, cols)
    in_size, out_rows = in_total // groups, rows.numel() // groups
    parts = []
    for g in range(groups):
        local = cols[(cols >= g * in_size) & (cols < (g + 1) * in_size)] - g * in_size
        parts.append(w[g * out_rows:(g + 1) * out_rows].index_select(1, local))
    return torch.cat(parts)


@torch.no_grad()
def _cut_block(dst: nn.Module, src: nn.Module, gate: BlockGate, sel: Sequence[Selection]) -> None:
    s1 = sel[0]
    dst.conv1.weight.copy_(src.conv1.weight.index_select(0, s1.index))
    _slice_norm(dst.bn1, gated_norm(src, gate, "bn1"), s1.index)
    if isinstance(src, BasicBlock):
        w2 = src.conv2.weight.index_select(1, s1.index) * s1.live.to(src.conv2.weight.dtype)[None, :, None, None]
        dst.conv2.weight.copy_(w2)
        _slice_norm(dst.bn2, gated_norm(src, gate, "bn2"), None)
        return
    s2 = sel[1]
    groups = src.conv2.groups
    w2 = _grouped_columns(src.conv2.weight, s2.index, s1.index, groups, src.conv2.in_channels)
    live1 = s1.live.to(w2.dtype).reshape(groups, -1)  # zero padded inputs, group by group
    w2 = w2 * live1.repeat_interleave(w2.shape[0] // groups, dim=0)[:, :, None, None]
    dst.conv2.weight.copy_(w2)
    _slice_norm(dst.bn2, gated_norm(src, gate, "bn2"), s2.index)
    w3 = src.conv3.weight.index_select(1, s2.index) * s2.live.to(src.conv3.weight.dtype)[None, :, None, None]
    dst.conv3.weight.copy_(w3)
    _slice_norm(dst.bn3, gated_norm(src, gate, "bn3"), None)


def export_static_resnet(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    min_firing_rate: float = 0.0,
    max_batches: int | None = None,
    eval_loader: Iterable[Any] | None = None,
    base: str | None = None,
    base_kwargs: Mapping[str, Any] | None = None,
    rates: Mapping[str, tuple[torch.Tensor, ...]] | None = None,
) -> StaticExport:
    """The ResNet family of :func:`~timm_gated_ssl.compact.export_static` (same arguments and result).

    ``rates`` (``{block: (rate per channel, ...)}``) replaces the usage pass over ``loader``; a
    channel is kept where its rate is > 0 and >= ``min_firing_rate`` (how ``export_at_budget``
    passes the channels it chose).

    Raises:
        NoGatesError: ``model`` has no gates.
        TypeError: a residual block that is not a gated timm ``BasicBlock`` / ``Bottleneck``.
        ValueError: ``min_firing_rate`` outside [0, 1], empty loader, or a base that does not match.
    """
    check_min_firing_rate(min_firing_rate)
    gates = dict(require_gates(model))
    rates, seen = usage_or_given(model, loader, rates, max_batches=max_batches)
    base, kwargs = resolve_base(model, base, base_kwargs)

    names = [n for n, _ in _resnet_blocks(model)]
    if set(names) != set(gates):
        raise TypeError("export_static supports models whose every residual block is a gated "
                        "timm BasicBlock or Bottleneck")
    selections, widths, full = {}, {}, {}
    for name in names:
        block, gate = model.get_submodule(name), gates[name]
        groups = block.conv2.groups if isinstance(block, Bottleneck) else 1
        sel = [select_channels(r, min_firing_rate, groups).to(block.conv1.weight.device) for r in rates[name]]
        selections[name] = sel
        widths[name] = tuple(s.index.numel() for s in sel)
        full[name] = tuple(gate.widths)

    inner = [f"{n}.{p}." for n in names for p in ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")]
    static = create_static(model, "static_resnet", base=base, base_kwargs=kwargs,
                           widths=[list(widths[n]) for n in names], inner=inner)
    for name in names:
        _cut_block(static.get_submodule(name), model.get_submodule(name), gates[name], selections[name])
    static.eval()
    return finish_export(model, static, loader, eval_loader, widths=widths, full_widths=full,
                         rates=rates, seen=seen, static_macs=lambda m, x: source_macs(m, x)[0])
