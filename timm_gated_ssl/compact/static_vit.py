"""``export_static`` for gated ViTs: a plain timm ``VisionTransformer`` with fewer heads and MLP units.

As for ResNets (``static.py``), the export measures on calibration data how often each head and
each MLP hidden unit of every block is on (eval mode, deterministic gates), keeps those that fired
(or fired in at least ``min_firing_rate`` of the images) and builds a plain timm ``VisionTransformer``
(no gates, no hooks) whose blocks are physically narrower: a timm ``Attention(dim, num_heads=k,
attn_head_dim=head_dim)`` with the kept heads' q/k/v rows and ``proj`` columns, and the block's
``Mlp`` / ``GluMlp`` / ``SwiGLU`` with the kept units' ``fc1`` rows (both halves / both layers for the
gated MLPs) and ``fc2`` columns. Inside the blocks it keeps the **gated-mode** norm set (``norm1``,
``norm2``, the q/k norms); the patch embedding, position embedding, class/register tokens, layer
scales, final norm and head are the source's. The result equals the source run in gated mode with
the removed heads/units switched off and the kept ones on.

A block in which no head (no unit) fired keeps one, with its ``proj`` (``fc2``) input columns zeroed,
so the model stays a plain timm model and the branch still gives exactly ``proj``'s (``fc2``'s) bias.

Saving and loading: the registered entry point ``static_vit(base=..., base_kwargs=...,
widths=[[heads, hidden] per block])`` rebuilds it, so ``timm.models.save_for_hf`` and
``timm.create_model("local-dir:DIR", pretrained=True)`` (or ``load_static``) round-trip it. Every
``base_kwargs`` value must be JSON-serialisable for ``save_for_hf`` (timm's rule), so a source built
with a layer class as kwarg (e.g. ``mlp_layer=SwiGLU``) exports but does not save; use an
architecture that names its layers (e.g. the SwiGLU-packed ``vit_*_dinov2`` ones).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import timm
import torch
from timm.layers import Attention, GluMlp, SwiGLU
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models import vision_transformer as vt
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..attach import require_gates
from ..attach.vit import vit_block_spec
from ..errors import UnsupportedModelError
from ..gates import BlockGate
from .fold import gated_norm
from .static_common import (
    Selection,
    StaticExport,
    check_min_firing_rate,
    create_static,
    finish_export,
    resolve_base,
    select_channels,
    usage_or_given,
)

__all__ = ["export_static_vit", "is_vit", "narrow_vit", "static_vit", "vit_macs"]

_NORMS = ("norm1", "norm2", "attn.q_norm", "attn.k_norm")


def is_vit(model: nn.Module) -> bool:
    """Whether ``model`` is a timm ``VisionTransformer`` (the family :func:`export_static_vit` takes)."""
    return isinstance(model, vt.VisionTransformer)


def _vit_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's ViT blocks in forward order, each checked to be a variant that can be narrowed."""
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, vt.Block)]
    for name, block in blocks:
        vit_block_spec(block)  # raises UnsupportedModelError for the variants attach/vit.py refuses
        if type(block).forward is not vt.Block.forward:
            raise UnsupportedModelError(
                f"static export supports timm's vision_transformer.Block itself; {name!r} is "
                f"{type(block).__module__}.{type(block).__name__}"
            )
    return blocks


# ------------------------------------------------------------------------- narrow modules
def _linear_like(layer: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    return nn.Linear(in_features, out_features, bias=layer.bias is not None).to(layer.weight)


def _narrow_attention(attn: Attention, heads: int) -> Attention:
    dim = attn.qkv.in_features
    optional: dict[str, Any] = {}  # only where needed: older timm versions lack these arguments
    if attn.proj.out_features != dim:
        optional["dim_out"] = attn.proj.out_features
    if getattr(attn, "gate", None) is not None:
        optional["gated"] = True
    new = Attention(
        dim, num_heads=heads, attn_head_dim=attn.head_dim, qkv_bias=attn.qkv.bias is not None,
        proj_bias=attn.proj.bias is not None, attn_drop=attn.attn_drop.p,
        proj_drop=attn.proj_drop.p, **optional,
    ).to(attn.qkv.weight)
    new.q_norm, new.k_norm = attn.q_norm, attn.k_norm  # over head_dim: unchanged by narrowing
    new.fused_attn = attn.fused_attn
    return new


def _narrow_mlp(mlp: nn.Module, units: int) -> None:
    if isinstance(mlp, SwiGLU):
        mlp.fc1_g = _linear_like(mlp.fc1_g, mlp.fc1_g.in_features, units)
        mlp.fc1_x = _linear_like(mlp.fc1_x, mlp.fc1_x.in_features, units)
    else:  # GluMlp: fc1 holds the two halves
        mlp.fc1 = _linear_like(mlp.fc1, mlp.fc1.in_features, units * (2 if isinstance(mlp, GluMlp) else 1))
    mlp.fc2 = _linear_like(mlp.fc2, units, mlp.fc2.out_features)


def narrow_vit(model: vt.VisionTransformer, widths: Sequence[Sequence[int]]) -> vt.VisionTransformer:
    """Replace, in place, each block's attention and MLP hidden layers by narrower ones.

    Args:
        model: A timm VisionTransformer (its weights in the narrowed layers are re-initialised).
        widths: Per block in forward order, ``[heads, hidden units]``.

    Returns:
        ``model``.

    Raises:
        ValueError: a wrong number of blocks or widths, or a width outside ``1..full``.
    """
    blocks = _vit_blocks(model)
    if len(blocks) != len(widths):
        raise ValueError(f"widths lists {len(widths)} blocks but the model has {len(blocks)}")
    for (name, block), w in zip(blocks, widths):
        w = [int(v) for v in w]
        full = (block.attn.num_heads, block.mlp.fc2.in_features)
        if len(w) != 2 or not all(1 <= v <= f for v, f in zip(w, full)):
            raise ValueError(f"block {name!r} takes [heads, hidden units] with 1 <= each <= {list(full)}, got {w}")
        block.attn = _narrow_attention(block.attn, w[0])
        _narrow_mlp(block.mlp, w[1])
    return model


def _build_static_vit(*, base: str, widths: Sequence[Sequence[int]],
                      base_kwargs: Mapping[str, Any] | None = None, **kwargs: Any) -> vt.VisionTransformer:
    model = timm.create_model(base, pretrained=False, **dict(base_kwargs or {}, **kwargs))
    if not is_vit(model):
        raise TypeError(f"static_vit needs a timm VisionTransformer base, {base!r} is {type(model).__name__}")
    if any(isinstance(m, BlockGate) for m in model.modules()):
        raise TypeError(f"static_vit needs an ungated base architecture, {base!r} carries gates")
    return narrow_vit(model, widths)


# No ``fixed_input_size`` here: timm would then impose this 224 px ``img_size`` on every base; an
# export records its own input size (and the source's config) instead.
default_cfgs = generate_default_cfgs({"static_vit": {
    "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": None,
    "crop_pct": 0.9, "interpolation": "bicubic", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
    "first_conv": "patch_embed.proj", "classifier": "head",
}})


@register_model
def static_vit(pretrained: bool = False, **kwargs: Any) -> vt.VisionTransformer:
    """A timm VisionTransformer with per-block head and MLP-unit counts, as written by ``export_static``.

    Keyword Args:
        base: The ungated timm architecture it was cut from (e.g. ``"vit_tiny_patch16_224"``).
        widths: Per block, in forward order, ``[heads, hidden units]``.
        base_kwargs: Other ``timm.create_model`` kwargs of the base (e.g. ``img_size``, ``depth``).
    """
    return build_model_with_cfg(_build_static_vit, "static_vit", pretrained, **kwargs)


# ------------------------------------------------------------------------------- cutting
def _gather(weight: torch.Tensor, parts: int, groups: int, idx: torch.Tensor) -> torch.Tensor:
    """Rows of groups ``idx`` from each of ``parts`` consecutive blocks of ``groups`` equal row groups.

    ``qkv``'s rows are ``(q|k|v, head, head_dim)``: ``parts=3, groups=heads``; ``GluMlp``'s ``fc1``
    rows are ``(half, unit)``: ``parts=2, groups=units``. Works for weights and biases alike.
    """
    shape = weight.shape
    return weight.reshape((parts, groups, -1) + shape[1:]).index_select(1, idx).reshape((-1,) + shape[1:])


def _copy(dst: nn.Linear, src: nn.Linear, parts: int, groups: int, idx: torch.Tensor) -> None:
    dst.weight.copy_(_gather(src.weight, parts, groups, idx))
    if src.bias is not None:
        dst.bias.copy_(_gather(src.bias, parts, groups, idx))


@torch.no_grad()
def _cut_block(dst: nn.Module, src: nn.Module, gate: BlockGate, heads: Selection, units: Selection) -> None:
    """Fill the narrowed block ``dst`` from the gated block ``src`` (gated-mode norms)."""
    for path in _NORMS:
        dst.get_submodule(path).load_state_dict(gated_norm(src, gate, path).state_dict())
    sa, da = src.attn, dst.attn
    h = sa.num_heads
    _copy(da.qkv, sa.qkv, 3, h, heads.index)
    if getattr(sa, "gate", None) is not None:
        _copy(da.gate, sa.gate, 1, h, heads.index)
    live = heads.live.to(sa.proj.weight).repeat_interleave(sa.head_dim)  # never-fired: zeroed
    da.proj.weight.copy_(_gather(sa.proj.weight.t(), 1, h, heads.index).t() * live)
    if sa.proj.bias is not None:
        da.proj.bias.copy_(sa.proj.bias)
    sm, dm = src.mlp, dst.mlp
    full = sm.fc2.in_features
    if isinstance(sm, SwiGLU):
        _copy(dm.fc1_g, sm.fc1_g, 1, full, units.index)
        _copy(dm.fc1_x, sm.fc1_x, 1, full, units.index)
    else:
        _copy(dm.fc1, sm.fc1, 2 if isinstance(sm, GluMlp) else 1, full, units.index)
    w2 = sm.fc2.weight
    dm.fc2.weight.copy_(w2.index_select(1, units.index) * units.live.to(w2))
    if sm.fc2.bias is not None:
        dm.fc2.bias.copy_(sm.fc2.bias)


# --------------------------------------------------------------------------------- MACs
def vit_macs(model: nn.Module, images: torch.Tensor) -> int:
    """MACs per image of an ungated ViT as ``count_macs`` counts a gated one (FlopCounterMode / 2).

    Counts ``forward_features`` (patch embedding and every matrix product of the blocks, attention
    products included, run unfused for the count); the head is left out, as ``count_macs`` does.
    """
    attns = [m for m in model.modules() if isinstance(m, Attention)]
    fused = [a.fused_attn for a in attns]
    counter = FlopCounterMode(display=False)
    try:
        for a in attns:
            a.fused_attn = False  # FlopCounterMode does not count CPU SDPA; it counts the bmm
        with torch.no_grad(), counter:
            model.forward_features(images[:1])
    finally:
        for a, f in zip(attns, fused):
            a.fused_attn = f
    return int(counter.get_total_flops() // 2)


# ------------------------------------------------------------------------------- export
def export_static_vit(
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
    """Export a gated ViT as a plain timm ``VisionTransformer`` without the heads/units never used.

    Called by :func:`~timm_gated_ssl.compact.export_static` for ViTs; same arguments and result
    (``widths`` per block are ``(heads, hidden units)``); ``rates`` as for ResNets.

    Raises:
        NoGatesError: ``model`` has no gates.
        TypeError: a block that is not gated, or a ViT block variant that cannot be narrowed.
        ValueError: ``min_firing_rate`` outside [0, 1], empty loader, or a base that does not match.
    """
    check_min_firing_rate(min_firing_rate)
    gates = dict(require_gates(model))
    blocks = _vit_blocks(model)
    names = [n for n, _ in blocks]
    if set(names) != set(gates):
        raise TypeError("export_static supports ViTs whose every block is a gated timm "
                        f"vision_transformer.Block; ungated: {sorted(set(names) - set(gates))[:5]}")
    rates, seen = usage_or_given(model, loader, rates, max_batches=max_batches)
    base, kwargs = resolve_base(model, base, base_kwargs)
    device = next(model.parameters()).device
    selections = {n: [select_channels(r, min_firing_rate).to(device) for r in rates[n]] for n in names}
    widths = {n: tuple(s.index.numel() for s in selections[n]) for n in names}
    inner = [f"{n}.{p}." for n in names for p in ("norm1", "norm2", "attn", "mlp")]
    # the input size too: the entry point's default config would otherwise impose 224 px
    img_size = getattr(model.patch_embed, "img_size", None)
    static = create_static(model, "static_vit", base=base, base_kwargs=kwargs,
                           widths=[list(widths[n]) for n in names], inner=inner,
                           top_level={} if img_size is None else {"img_size": list(img_size)})
    for name, block in blocks:
        _cut_block(static.get_submodule(name), block, gates[name], *selections[name])
    static.eval()
    return finish_export(model, static, loader, eval_loader, widths=widths,
                         full_widths={n: tuple(gates[n].widths) for n in names},
                         rates=rates, seen=seen, static_macs=vit_macs)
