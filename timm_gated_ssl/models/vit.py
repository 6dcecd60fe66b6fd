"""Gated Vision Transformers registered in timm: ``gated_vit_tiny/small/base_patch16_224``, the 32 px
``gated_vit_tiny_patch4_32``, and its plain baseline ``vit_tiny_patch4_32``.

Each entry point is a few lines around :func:`_create`, as in timm. Gate options are entry-point
keyword arguments (``budget``, ``separate_bn``, ``tau``, ``gate_reduction``, ``calibrated_budgets``,
``gate_type``, ``gate_levels``),
so timm records them in ``config.json``'s ``model_args`` and
``timm.create_model("local-dir:DIR", pretrained=True)`` rebuilds the same gated model. What is gated
and why: ``timm_gated_ssl.attach.vit`` and ``docs/vit.md``.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from ..gates import GateConfig
from ._gating import as_timm_class, check_forward_input, setup_gates
from .dense_init import chain_filter, dense_cfg
from .resnet import CIFAR_MEAN, CIFAR_STD


class GatedVisionTransformer(VisionTransformer):
    """A timm ``VisionTransformer`` with gates on attention heads and MLP hidden units.

    It is a ``VisionTransformer`` (same forward, same state-dict keys plus the gates'), so
    ``forward_features``, ``forward_head``, ``forward_intermediates``, ``features_only``,
    ``reset_classifier`` and gradient checkpointing keep working.

    Args:
        gated: Attach gates (False builds the plain baseline).
        budget: Training target ``t_d`` of the budget loss, in (0, 1].
        separate_bn: One set of block norms (``norm1``, ``norm2``, q/k norms) per mode.
        tau: Gate estimator temperature.
        gate_reduction: Gate hidden width is ``embed_dim // gate_reduction``.
        calibrated_budgets: ``{budget: logit offset}`` table written by ``calibrate_budget``
            (string keys, e.g. ``{"0.3": 1.25}``); when ``budget`` is in it, its offset is applied
            to every gate, as for ``GatedResNet``.
        gate_type: ``"channel"`` (default: any subset of heads and hidden units per input) or
            ``"width"`` (per input and block, a prefix of the heads and of the hidden units at
            one of ``gate_levels`` levels, ``gates/width.py``).
        gate_levels: Number of width levels of ``gate_type="width"``: 2 to ``num_heads`` (e.g.
            2..3 for the ViT-Ti models; anything else raises ``ValueError``). Unused by channel
            gates.
        **kwargs: Passed to timm's ``VisionTransformer``.
    """

    def __init__(
        self,
        *,
        gated: bool = True,
        budget: float = GateConfig.budget,
        separate_bn: bool = GateConfig.separate_bn,
        tau: float = GateConfig.tau,
        gate_reduction: int = GateConfig.reduction,
        calibrated_budgets: dict[str, float] | None = None,
        gate_type: str = GateConfig.gate_type,
        gate_levels: int = GateConfig.levels,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        setup_gates(
            self, gated=gated, budget=budget, separate_bn=separate_bn, tau=tau,
            gate_reduction=gate_reduction, calibrated_budgets=calibrated_budgets,
            gate_type=gate_type, gate_levels=gate_levels,
        )

    def forward_features(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        """timm's ``forward_features`` (and so ``forward``), after checking the input's shape.

        Raises:
            InputShapeError: ``x`` is not ``(B, C, H, W)`` with the patch embedding's ``C``
                channels, or (unless built with ``dynamic_img_size=True``) not of ``img_size``
                (:func:`~timm_gated_ssl.models._gating.check_forward_input`).
        """
        check_forward_input(self, x)
        return super().forward_features(x, attn_mask=attn_mask, is_causal=is_causal)

    def forward_intermediates(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """timm's ``forward_intermediates`` (same arguments; ``features_only`` runs it), after
        checking the input's shape."""
        check_forward_input(self, x, method="forward_intermediates")
        return super().forward_intermediates(x, *args, **kwargs)

    def __prepare_scriptable__(self) -> VisionTransformer:
        """What ``torch.jit.script`` compiles: this model as a timm ``VisionTransformer`` (see
        :func:`~timm_gated_ssl.models._gating.as_timm_class`)."""
        return as_timm_class(self, VisionTransformer)


def _create(variant: str, pretrained: bool, **kwargs: Any) -> GatedVisionTransformer:
    out_indices = kwargs.pop("out_indices", 3)
    return build_model_with_cfg(
        GatedVisionTransformer,
        variant,
        pretrained,
        pretrained_filter_fn=chain_filter(checkpoint_filter_fn),  # timm's ViT filter, then our gates
        feature_cfg={"out_indices": out_indices, "feature_cls": "getter"},
        **kwargs,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": None,
        "crop_pct": 0.9, "interpolation": "bicubic", "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj", "classifier": "head",
        "license": "apache-2.0", "paper_ids": "arXiv:2301.09164", **kwargs,
    }


def _cifar_cfg(**kwargs: Any) -> dict[str, Any]:
    return _cfg(
        num_classes=10, input_size=(3, 32, 32), crop_pct=1.0, mean=CIFAR_MEAN, std=CIFAR_STD, **kwargs
    )


_ARCHS = {
    "vit_tiny_patch16_224": {"patch_size": 16, "embed_dim": 192, "depth": 12, "num_heads": 3},
    "vit_small_patch16_224": {"patch_size": 16, "embed_dim": 384, "depth": 12, "num_heads": 6},
    "vit_base_patch16_224": {"patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12},
    "vit_tiny_patch4_32": {"img_size": 32, "patch_size": 4, "embed_dim": 192, "depth": 12, "num_heads": 3},
}

def _dense(arch: str) -> dict[str, Any]:
    """``{gated_<arch>.<tag>: cfg}`` of timm's default ``<arch>`` weights (``pretrained=True``)."""
    cfg = dense_cfg(arch)
    tag = str(cfg.get("hf_hub_id", "")).rpartition(".")[2]
    return {f"gated_{arch}.{tag}" if tag else f"gated_{arch}": _cfg(**cfg)}


default_cfgs = generate_default_cfgs({
    # pretrained=True: timm's default weights of the plain architecture, in the dense path
    **_dense("vit_tiny_patch16_224"),
    **_dense("vit_small_patch16_224"),
    **_dense("vit_base_patch16_224"),
    "gated_vit_tiny_patch4_32": _cifar_cfg(),
    "vit_tiny_patch4_32": _cifar_cfg(),
})


@register_model
def gated_vit_tiny_patch16_224(pretrained: bool = False, **kwargs: Any) -> GatedVisionTransformer:
    """Gated ViT-Ti/16 (3 heads, MLP 768)."""
    args = _ARCHS["vit_tiny_patch16_224"]
    return _create("gated_vit_tiny_patch16_224", pretrained, **dict(args, **kwargs))


@register_model
def gated_vit_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> GatedVisionTransformer:
    """Gated ViT-S/16 (6 heads, MLP 1536)."""
    args = _ARCHS["vit_small_patch16_224"]
    return _create("gated_vit_small_patch16_224", pretrained, **dict(args, **kwargs))


@register_model
def gated_vit_base_patch16_224(pretrained: bool = False, **kwargs: Any) -> GatedVisionTransformer:
    """Gated ViT-B/16 (12 heads, MLP 3072)."""
    args = _ARCHS["vit_base_patch16_224"]
    return _create("gated_vit_base_patch16_224", pretrained, **dict(args, **kwargs))


@register_model
def gated_vit_tiny_patch4_32(pretrained: bool = False, **kwargs: Any) -> GatedVisionTransformer:
    """Gated ViT-Ti with 4 px patches for 32 px data (64 patches + class token)."""
    args = _ARCHS["vit_tiny_patch4_32"]
    return _create("gated_vit_tiny_patch4_32", pretrained, **dict(args, **kwargs))


@register_model
def vit_tiny_patch4_32(pretrained: bool = False, **kwargs: Any) -> GatedVisionTransformer:
    """Plain (ungated) ViT-Ti with 4 px patches for 32 px data: the vanilla baseline."""
    args = dict(_ARCHS["vit_tiny_patch4_32"], gated=False)
    return _create("vit_tiny_patch4_32", pretrained, **dict(args, **kwargs))
