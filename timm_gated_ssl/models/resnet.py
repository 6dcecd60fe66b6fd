"""Gated ResNets registered in timm: ``gated_resnet18/34/50`` and their CIFAR-stem variants, plus the
plain CIFAR-stem baselines (``resnet18_cifar`` ...) that a fair comparison needs.

Each entry point is a few lines around :func:`_create`, as in timm. Gate options are entry-point
keyword arguments (``budget``, ``separate_bn``, ``tau``, ``gate_reduction``, ``calibrated_budgets``,
``gate_type``, ``gate_levels``),
so timm records them in ``config.json``'s ``model_args`` and
``timm.create_model("local-dir:DIR", pretrained=True)`` rebuilds the same gated model.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from ..gates import GateConfig
from ._gating import as_timm_class, check_forward_input, setup_gates
from .cifar_stem import apply_cifar_stem
from .dense_init import chain_filter, dense_cfg

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class GatedResNet(ResNet):
    """A timm ``ResNet`` with gates attached by hooks and an optional CIFAR stem.

    It is a ``ResNet`` (same forward, same state-dict keys plus the gates'), so everything timm
    does with ResNets (``features_only``, ``forward_head``, ``reset_classifier``, gradient
    checkpointing) keeps working.

    Args:
        gated: Attach gates (False builds the plain baseline with the same stem).
        cifar_stem: Use a 3x3 stride-1 stem without max-pool (32 px data).
        cifar_stem_padding: Padding of the CIFAR stem conv (1, or 2 as in the paper's code).
        budget: Training target ``t_d`` of the budget loss, in (0, 1].
        separate_bn: One set of block norms per mode (the paper's setting).
        tau: Gate estimator temperature.
        gate_reduction: Gate hidden width is ``C_in // gate_reduction``.
        calibrated_budgets: ``{budget: logit offset}`` table written by ``calibrate_budget``
            (string keys, e.g. ``{"0.3": 1.25}``); when ``budget`` is in it, its offset is applied
            to every gate. ``calibrate_budget`` also records the table in ``_model_args``, so
            ``timm.models.save_for_hf`` writes it to ``config.json`` and loading restores it. Weights
            loaded afterwards (``pretrained=True``) bring the offset that was active when they were
            saved; ``set_budget(model, b)`` switches to another calibrated budget.
        gate_type: ``"channel"`` (default, the paper's gates) or ``"width"`` (per-input prefix
            widths, ``docs/width_gates.md``).
        gate_levels: Number of width levels of ``gate_type="width"``.
        **kwargs: Passed to timm's ``ResNet``.
    """

    def __init__(
        self,
        *,
        gated: bool = True,
        cifar_stem: bool = False,
        cifar_stem_padding: int = 1,
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
        if cifar_stem:
            apply_cifar_stem(self, padding=cifar_stem_padding)
        setup_gates(
            self, gated=gated, budget=budget, separate_bn=separate_bn, tau=tau,
            gate_reduction=gate_reduction, calibrated_budgets=calibrated_budgets,
            gate_type=gate_type, gate_levels=gate_levels,
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """timm's ``forward_features`` (and so ``forward``), after checking the input's shape.

        Raises:
            InputShapeError: ``x`` is not ``(B, C, H, W)`` with the stem's ``C`` channels
                (:func:`~timm_gated_ssl.models._gating.check_forward_input`).
        """
        check_forward_input(self, x)
        return super().forward_features(x)

    def forward_intermediates(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """timm's ``forward_intermediates`` (same arguments), after checking the input's shape."""
        check_forward_input(self, x, method="forward_intermediates")
        return super().forward_intermediates(x, *args, **kwargs)

    def __prepare_scriptable__(self) -> ResNet:
        """What ``torch.jit.script`` compiles: this model as a timm ``ResNet`` (see
        :func:`~timm_gated_ssl.models._gating.as_timm_class`)."""
        return as_timm_class(self, ResNet)


def _create(variant: str, pretrained: bool, **kwargs: Any) -> GatedResNet:
    # Dense timm checkpoints get their gates and gated norm copies filled in (dense_init.py).
    return build_model_with_cfg(GatedResNet, variant, pretrained, pretrained_filter_fn=chain_filter(None),
                                **kwargs)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD, "first_conv": "conv1", "classifier": "fc",
        "license": "apache-2.0", "paper_ids": "arXiv:2301.09164", **kwargs,
    }


def _cifar_cfg(**kwargs: Any) -> dict[str, Any]:
    return _cfg(
        num_classes=10, input_size=(3, 32, 32), pool_size=(4, 4), crop_pct=1.0,
        mean=CIFAR_MEAN, std=CIFAR_STD, **kwargs,
    )


_ARCHS = {
    "resnet18": {"block": BasicBlock, "layers": (2, 2, 2, 2)},
    "resnet34": {"block": BasicBlock, "layers": (3, 4, 6, 3)},
    "resnet50": {"block": Bottleneck, "layers": (3, 4, 6, 3)},
}

def _dense_tag(arch: str) -> str:
    """``gated_<arch>.<tag>`` of timm's default ``<arch>`` weights (``pretrained=True`` loads them)."""
    cfg = dense_cfg(arch)
    tag = str(cfg.get("hf_hub_id", "")).rpartition(".")[2]
    return f"gated_{arch}.{tag}" if tag else f"gated_{arch}"


default_cfgs = generate_default_cfgs({
    # pretrained=True: timm's default weights of the plain architecture, in the dense path
    **{_dense_tag(arch): _cfg(**dense_cfg(arch)) for arch in _ARCHS},
    **{f"gated_{arch}_cifar": _cifar_cfg() for arch in _ARCHS},
    **{f"{arch}_cifar": _cifar_cfg() for arch in _ARCHS},
})


@register_model
def gated_resnet18(pretrained: bool = False, **kwargs: Any) -> GatedResNet:
    """Gated ResNet-18 (ImageNet stem). ``pretrained=True`` loads timm's default ``resnet18`` weights into
    the dense path; the gates start untrained (``recipes/pretrain.py --init_from`` trains them)."""
    return _create("gated_resnet18", pretrained, **dict(_ARCHS["resnet18"], **kwargs))


@register_model
def gated_resnet34(pretrained: bool = False, **kwargs: Any) -> GatedResNet:
    """Gated ResNet-34 (ImageNet stem). ``pretrained=True`` loads timm's default ``resnet34`` weights into
    the dense path; the gates start untrained (``recipes/pretrain.py --init_from`` trains them)."""
    return _create("gated_resnet34", pretrained, **dict(_ARCHS["resnet34"], **kwargs))


@register_model
def gated_resnet50(pretrained: bool = False, **kwargs: Any) -> GatedResNet:
    """Gated ResNet-50 (ImageNet stem); both Bottleneck inner widths are gated. ``pretrained=True``
    loads timm's default ``resnet50`` weights into the dense path; the gates start untrained
    (``recipes/pretrain.py --init_from`` trains them)."""
    return _create("gated_resnet50", pretrained, **dict(_ARCHS["resnet50"], **kwargs))


@register_model
def gated_resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> GatedResNet:
    """Gated ResNet-18 with the CIFAR stem (the paper's CIFAR model)."""
    args = dict(_ARCHS["resnet18"], cifar_stem=True)
    return _create("gated_resnet18_cifar", pretrained, **dict(args, **kwargs))


@register_model
def gated_resnet34_cifar(pretrained: bool = False, **kwargs: Any) -> GatedResNet:
    """Gated ResNet-34 with the CIFAR stem."""
    args = dict(_ARCHS["resnet34"], cifar_stem=True)
    return _create("gated_resnet34_cifar", pretrained, **dict(args, **kwargs))


@register_model
def gated_resnet50_cifar(pretrained: bool = False, **kwargs: Any) -> GatedResNet:
    """Gated ResNet-50 with the CIFAR stem."""
    args = dict(_ARCHS["resnet50"], cifar_stem=True)
    return _create("gated_resnet50_cifar", pretrained, **dict(args, **kwargs))


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> GatedResNet:
    """Plain (ungated) ResNet-18 with the CIFAR stem: the vanilla baseline."""
    args = dict(_ARCHS["resnet18"], cifar_stem=True, gated=False)
    return _create("resnet18_cifar", pretrained, **dict(args, **kwargs))


@register_model
def resnet34_cifar(pretrained: bool = False, **kwargs: Any) -> GatedResNet:
    """Plain (ungated) ResNet-34 with the CIFAR stem."""
    args = dict(_ARCHS["resnet34"], cifar_stem=True, gated=False)
    return _create("resnet34_cifar", pretrained, **dict(args, **kwargs))


@register_model
def resnet50_cifar(pretrained: bool = False, **kwargs: Any) -> GatedResNet:
    """Plain (ungated) ResNet-50 with the CIFAR stem."""
    args = dict(_ARCHS["resnet50"], cifar_stem=True, gated=False)
    return _create("resnet50_cifar", pretrained, **dict(args, **kwargs))
