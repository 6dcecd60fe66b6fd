"""``export_static``: cut the channels the gates never use and return a plain, narrower timm ResNet.

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
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import timm
import torch
from timm.layers import BlurPool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from ..attach import gate_mode, require_gates
from ..calibration import batch_images
from ..gates import BlockGate
from .fold import gated_norm

#: Entry-point kwargs of the gated models that the plain base architecture does not take.
GATE_KWARGS = ("budget", "separate_bn", "tau", "gate_reduction", "calibrated_budgets", "gated")


# ------------------------------------------------------------------------------------ usage
@torch.no_grad()
def channel_usage(
    model: nn.Module, loader: Iterable[Any], *, max_batches: int | None = None
) -> tuple[dict[str, tuple[torch.Tensor, ...]], int]:
    """Firing rate of every gated channel on ``loader`` (eval mode, deterministic gates).

    Args:
        model: A gated model.
        loader: Yields image batches or ``(images, labels, ...)`` tuples.
        max_batches: Stop after this many batches.

    Returns:
        ``({block_name: (rate_per_width, ...)}, number_of_images)``, each rate a float64 ``(C,)``.

    Raises:
        ValueError: the loader yields no image.
    """
    gates = require_gates(model)
    device = next(model.parameters()).device
    was_training = model.training
    counts: dict[str, list[torch.Tensor]] = {}
    seen = 0
    model.eval()
    try:
        with gate_mode(model, "gated"):
            for i, batch in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                images = batch_images(batch).to(device)
                model(images)
                for name, gate in gates:
                    assert gate.masks is not None
                    sums = [m.detach().double().sum(0).cpu() for m in gate.masks]
                    if name in counts:
                        counts[name] = [a + b for a, b in zip(counts[name], sums)]
                    else:
                        counts[name] = sums
                seen += images.shape[0]
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("the calibration loader yielded no images")
    return {name: tuple(c / seen for c in cs) for name, cs in counts.items()}, seen


# ------------------------------------------------------------------------- channel selection
@dataclass(frozen=True)
class _Selection:
    """Channels kept in one gated width: ``index`` (sorted) and which of them are real (``live``)."""

    index: torch.Tensor
    live: torch.Tensor


def _select(rate: torch.Tensor, min_rate: float, groups: int) -> _Selection:
    """Keep channels that fired (and reach ``min_rate``); pad each group to the same count."""
    keep = (rate > 0) & (rate >= min_rate)
    size = rate.numel() // groups
    per_group = keep.reshape(groups, size)
    count = max(int(per_group.sum(1).max()), 1)  # at least one channel so the conv stays valid
    index, live = [], []
    for g in range(groups):
        on = per_group[g].nonzero().flatten()
        off = (~per_group[g]).nonzero().flatten()
        chosen = torch.cat([on, off[: count - on.numel()]]).sort().values
        index.append(chosen + g * size)
        live.append(per_group[g][chosen])
    return _Selection(torch.cat(index), torch.cat(live))


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


def load_static(path: str, **kwargs: Any) -> ResNet:
    """Load a static export saved with ``timm.models.save_for_hf(model, path)``."""
    return timm.create_model(f"local-dir:{path}", pretrained=True, **kwargs)


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
def _cut_block(dst: nn.Module, src: nn.Module, gate: BlockGate, sel: Sequence[_Selection]) -> None:
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


def _base_of(model: nn.Module) -> tuple[str, dict[str, Any]]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch = cfg.get("architecture")
    if not arch:
        raise ValueError("cannot tell which timm architecture this model was built from; pass base=")
    arch = arch.removeprefix("gated_")
    kwargs = {k: v for k, v in getattr(model, "_model_args", {}).items() if k not in GATE_KWARGS}
    return arch, kwargs


# --------------------------------------------------------------------------------- result
@dataclass
class StaticExport:
    """What :func:`export_static` returns.

    Attributes:
        model: The plain timm ResNet (eval mode), gated-mode norms inside the blocks.
        widths: ``{block_name: (kept width, ...)}``, padding for grouped convs included.
        full_widths: ``{block_name: (original width, ...)}``.
        firing_rates: ``{block_name: (rate per channel, ...)}`` on the calibration data.
        num_calibration_images: How many images the rates come from.
        macs: Conv MACs per image of the static model.
        dense_macs: Conv MACs per image of the source network in dense mode.
        gated_macs: Mean conv MACs per image of the source in gated mode (gates included) on the
            first calibration batch, when the accounting module is available.
        accuracy_gated: Top-1 of the source in gated mode on ``eval_loader`` (if given).
        accuracy_static: Top-1 of the static model on ``eval_loader`` (if given).
    """

    model: ResNet
    widths: dict[str, tuple[int, ...]]
    full_widths: dict[str, tuple[int, ...]]
    firing_rates: dict[str, tuple[torch.Tensor, ...]] = field(repr=False)
    num_calibration_images: int
    macs: int
    dense_macs: int
    gated_macs: float | None = None
    accuracy_gated: float | None = None
    accuracy_static: float | None = None

    @property
    def mac_fraction(self) -> float:
        """Static MACs / dense MACs."""
        return self.macs / self.dense_macs

    @property
    def accuracy_change(self) -> float | None:
        """``accuracy_static - accuracy_gated`` (percentage points), when measured."""
        if self.accuracy_gated is None or self.accuracy_static is None:
            return None
        return self.accuracy_static - self.accuracy_gated

    def summary(self) -> dict[str, Any]:
        """JSON-safe summary."""
        return {
            "macs": self.macs, "dense_macs": self.dense_macs, "mac_fraction": self.mac_fraction,
            "gated_macs": self.gated_macs, "accuracy_gated": self.accuracy_gated,
            "accuracy_static": self.accuracy_static, "accuracy_change": self.accuracy_change,
            "num_calibration_images": self.num_calibration_images,
            "widths": {k: list(v) for k, v in self.widths.items()},
        }


def _conv_macs(model: nn.Module, images: torch.Tensor) -> tuple[int, float | None]:
    """(dense conv MACs per image, mean gated MACs or None) via ``count_macs`` or FlopCounterMode."""
    try:
        from ..compute import count_macs
    except ImportError:  # accounting module absent: count convs with torch's FlopCounterMode / 2
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(images[:1])
        convs = sum(v for op, v in counter.get_flop_counts()["Global"].items() if "convolution" in str(op))
        return int(convs // 2), None
    result = count_macs(model, images)
    gated = result.mean_gated if result.blocks else None
    return int(result.dense), gated


@torch.no_grad()
def _accuracy(model: nn.Module, loader: Iterable[Any], device: torch.device) -> float:
    correct = total = 0
    for images, labels, *_ in loader:
        pred = model(images.to(device)).argmax(-1)
        correct += int((pred.cpu() == labels.cpu()).sum())
        total += labels.numel()
    if total == 0:
        raise ValueError("eval_loader yielded no labelled images")
    return 100.0 * correct / total


def export_static(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    min_firing_rate: float = 0.0,
    max_batches: int | None = None,
    eval_loader: Iterable[Any] | None = None,
    base: str | None = None,
    base_kwargs: Mapping[str, Any] | None = None,
) -> StaticExport:
    """Export a gated ResNet as a plain timm ResNet without the channels its gates never use.

    Args:
        model: A gated timm ResNet (``attach_gates`` on a timm model, or a ``gated_*`` model).
        loader: Calibration data: image batches or ``(images, labels)`` tuples.
        min_firing_rate: Keep a channel only if it is on for at least this fraction of the
            calibration images (0 keeps every channel that fired at least once).
        max_batches: Use at most this many calibration batches.
        eval_loader: Optional labelled ``(images, labels)`` data to report the top-1 of the gated
            source and of the static model.
        base: The ungated timm architecture to rebuild (default: the source's ``architecture``
            without its ``gated_`` prefix).
        base_kwargs: ``timm.create_model`` kwargs of the base (default: the source's recorded
            ``create_model`` kwargs minus the gate options).

    Returns:
        A :class:`StaticExport`; its ``model`` saves with ``timm.models.save_for_hf`` and loads with
        ``timm.create_model("local-dir:DIR", pretrained=True)``.

    Raises:
        NoGatesError: ``model`` has no gates.
        ValueError: ``min_firing_rate`` outside [0, 1], empty loader, or a base that does not match.
    """
    if not isinstance(min_firing_rate, (int, float)) or not 0.0 <= min_firing_rate <= 1.0:
        raise ValueError(f"min_firing_rate must be in [0, 1], got {min_firing_rate!r}")
    gates = dict(require_gates(model))
    rates, seen = channel_usage(model, loader, max_batches=max_batches)
    inferred_base, inferred_kwargs = _base_of(model) if base is None else (base, {})
    base = base or inferred_base
    kwargs = dict(inferred_kwargs if base_kwargs is None else base_kwargs)

    names = [n for n, _ in _resnet_blocks(model)]
    if set(names) != set(gates):
        raise TypeError("export_static supports models whose every residual block is a gated "
                        "timm BasicBlock or Bottleneck")
    selections, widths, full = {}, {}, {}
    for name in names:
        block, gate = model.get_submodule(name), gates[name]
        groups = block.conv2.groups if isinstance(block, Bottleneck) else 1
        sel = [_select(r, min_firing_rate, groups) for r in rates[name]]
        selections[name] = sel
        widths[name] = tuple(s.index.numel() for s in sel)
        full[name] = tuple(gate.widths)

    # the head and input settings travel as top-level kwargs (timm records and restores those)
    head = {k: kwargs.pop(k) for k in ("num_classes", "in_chans", "global_pool") if k in kwargs}
    head.setdefault("num_classes", getattr(model, "num_classes", 1000))
    head.setdefault("in_chans", getattr(model, "in_chans", 3))
    static = timm.create_model("static_resnet", base=base, base_kwargs=kwargs,
                               widths=[list(widths[n]) for n in names], **head)
    device = next(model.parameters()).device
    static.to(device)
    src_state = {k: v for k, v in model.state_dict().items() if ".dyn_gate." not in k}
    dst_state = static.state_dict()
    inner = {f"{n}.{p}." for n in names for p in ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")}
    outer = {k for k in dst_state if not any(k.startswith(p) for p in inner)}
    src_outer = {k for k in src_state if not any(k.startswith(p) for p in inner)}
    mismatched = sorted(k for k in outer & src_outer if dst_state[k].shape != src_state[k].shape)
    if outer != src_outer or mismatched:
        raise ValueError(
            f"the base {base!r} with kwargs {kwargs} does not match the gated model "
            f"(missing {sorted(src_outer - outer)[:5]}, unexpected {sorted(outer - src_outer)[:5]}, "
            f"shape mismatches {mismatched[:5]}); pass base= and base_kwargs="
        )
    static.load_state_dict({k: src_state[k] for k in outer}, strict=False)
    for name in names:
        _cut_block(static.get_submodule(name), model.get_submodule(name), gates[name], selections[name])
    static.pretrained_cfg = dict(copy.deepcopy(getattr(model, "pretrained_cfg", {}) or {}),
                                 architecture="static_resnet")
    static.eval()

    sample = batch_images(next(iter(loader))).to(device)
    dense_macs, gated_macs = _conv_macs(model, sample)
    static_macs, _ = _conv_macs(static, sample[:1])
    acc_gated = acc_static = None
    if eval_loader is not None:
        was_training = model.training
        model.eval()
        try:
            with gate_mode(model, "gated"):
                acc_gated = _accuracy(model, eval_loader, device)
        finally:
            model.train(was_training)
        acc_static = _accuracy(static, eval_loader, device)
    return StaticExport(
        model=static, widths=widths, full_widths=full, firing_rates=rates,
        num_calibration_images=seen, macs=static_macs, dense_macs=dense_macs, gated_macs=gated_macs,
        accuracy_gated=acc_gated, accuracy_static=acc_static,
    )
