"""``export_static(model, loader)``: a plain, narrower timm model without what the gates never use.

One entry point for every family; each family's export (``static.py`` for ResNets,
``static_vit.py`` for ViTs) takes the same options and returns a :class:`StaticExport`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn

from ..attach import FAMILIES, block_family, gate_family, has_gates, require_gates
from ..errors import UnsupportedModelError
from ..registry import Registry
from .static import export_static_resnet
from .static_common import StaticExport
from .static_vit import export_static_vit

__all__ = ["STATIC_EXPORTERS", "export_static", "model_family"]

StaticExporter = Callable[..., StaticExport]
"""``exporter(model, loader, *, min_firing_rate, max_batches, eval_loader, base, base_kwargs, rates)``."""

STATIC_EXPORTERS: Registry[StaticExporter] = Registry("static exporter")
"""Static exports by block family (``attach.FAMILIES`` names) of the model's gated blocks."""
STATIC_EXPORTERS.add("resnet", export_static_resnet)
STATIC_EXPORTERS.add("vit", export_static_vit)


def model_family(model: nn.Module) -> str:
    """The block family of a gated model's blocks (every gated block of a model is of one family).

    Raises:
        NoGatesError: ``model`` has no gates.
    """
    name, gate = require_gates(model)[0]
    return gate_family(model.get_submodule(name), gate)


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
    """Export a gated ResNet or ViT as a plain timm model without the channels its gates never use.

    The export is :data:`STATIC_EXPORTERS` of the model's block family: ResNets keep channels
    (``static.py``), ViTs keep attention heads and MLP units (``static_vit.py``); the options mean
    the same for both.

    Args:
        model: A gated timm ResNet or ViT (``attach_gates`` on a timm model, or a ``gated_*`` model).
        loader: Calibration data: image batches or ``(images, labels)`` tuples.
        min_firing_rate: Keep a channel only if it is on for at least this fraction of the
            calibration images (0 keeps every channel that fired at least once).
        max_batches: Use at most this many calibration batches.
        eval_loader: Optional labelled ``(images, labels)`` data to report the top-1 of the gated
            source and of the static model (a classifier's; for a headless encoder,
            ``num_classes=0``, a two-fold weighted 20-NN on these images).
        base: The ungated timm architecture to rebuild (default: the source's ``architecture``
            without its ``gated_`` prefix).
        base_kwargs: ``timm.create_model`` kwargs of the base (default: the source's recorded
            ``create_model`` kwargs minus the gate options).

    Returns:
        A :class:`StaticExport`; its ``model`` saves with ``timm.models.save_for_hf`` and loads with
        ``timm.create_model("local-dir:DIR", pretrained=True)``.

    Raises:
        NoGatesError: ``model`` has no gates.
        TypeError: a residual block (or ViT block) that is not gated or not supported.
        UnsupportedModelError: no family exports this model.
        ValueError: ``min_firing_rate`` outside [0, 1], empty loader, or a base that does not match.
    """
    if not has_gates(model) and not any(block_family(m) for m in model.modules()):
        raise UnsupportedModelError(
            f"export_static supports gated timm ResNets and VisionTransformers, got {type(model).__name__} "
            f"(no gates, and no block of a registered family: {', '.join(map(str, FAMILIES))})"
        )
    family = model_family(model)
    if family not in STATIC_EXPORTERS:
        raise UnsupportedModelError(
            f"export_static has no export for {type(model).__name__} (gated blocks of family "
            f"{family!r}); it exports: {', '.join(map(str, STATIC_EXPORTERS))}"
        )
    return STATIC_EXPORTERS[family](model, loader, min_firing_rate=min_firing_rate, max_batches=max_batches,
                                    eval_loader=eval_loader, base=base, base_kwargs=base_kwargs)
