"""One feature pass of a frozen encoder over one split, with the gated mode's masks and compute.

:func:`~.checkpoint.evaluate_checkpoint` needs, per mode and split, the pooled features and, in
the gated mode, the deterministic gate masks (for the channel usage) and each image's realised
``F_g / F_d`` (for the compute column of Krishna et al., BMVC 2023, Table 1). Taking all three
from the same forward means every image runs once per mode and the MACs are those of the very
masks behind the features.

Example:
    >>> split = extract_pass(  # doctest: +SKIP
    ...     model, loader, mode="gated", table=cost_table(model, (3, 32, 32)),
    ...     accelerator=None, progress=False, desc="gated test",
    ... )
    >>> float(split.fraction.mean())  # doctest: +SKIP
    0.31
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..attach import gate_masks, gate_mode
from ..compute import CostTable
from .features import Features, extract_features

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = ["SplitPass", "extract_pass"]


@dataclass(frozen=True)
class SplitPass:
    """Features of one mode on one split; for the gated mode also masks and compute.

    Attributes:
        features: Pooled (pre-logits) features and labels, one row per image.
        fraction: ``(N,)`` float64 gated / dense MACs per image (gated mode only).
        masks: Gated block (``"block"`` or ``"block[i]"`` for a block with several gated
            widths) -> ``(N, C)`` bool mask of the channels that fired (gated mode only).
    """

    features: Features
    fraction: Tensor | None = None
    masks: dict[str, Tensor] | None = None


def extract_pass(
    model: nn.Module,
    loader: Any,
    *,
    mode: str | None,
    table: CostTable | None,
    accelerator: Accelerator | None,
    progress: bool,
    desc: str,
) -> SplitPass:
    """Features (and in gated mode masks and per-sample MAC fractions) in one forward per batch.

    Masks and fractions ride along as extra feature columns, so one ``gather_for_metrics`` keeps
    them aligned with the features and drops a distributed loader's padding for all of them.

    Args:
        model: The frozen timm encoder (its head's ``pre_logits`` output is the feature).
        loader: Batches of ``(images, labels)``.
        mode: ``"dense"`` or ``"gated"`` for a gated model (set with
            :func:`~timm_gated_ssl.attach.gate_mode` for the pass), None for an ungated one.
        table: The model's :func:`~timm_gated_ssl.compute.cost_table` at the input size;
            required in gated mode, unused otherwise.
        accelerator: Gathers the features across processes and sets the autocast, if given.
        progress: Show a progress bar (main process).
        desc: Label of the progress bar.

    Returns:
        The split's features, with ``fraction`` and ``masks`` in gated mode.
    """
    gated = mode == "gated"
    layout: list[tuple[str, int]] = []  # (column name, width) of the mask columns
    dim: list[int] = []
    autocast = accelerator.autocast if accelerator is not None else contextlib.nullcontext

    def features_of(images: Tensor) -> Tensor:
        with autocast():
            out = model.forward_head(model.forward_features(images), pre_logits=True)
        out = out.float()
        if not gated:
            return out
        assert table is not None
        masks = gate_masks(model)
        if not layout:
            dim.append(out.shape[1])
            for block, per_width in masks.items():
                for i, mask in enumerate(per_width):
                    name = block if len(per_width) == 1 else f"{block}[{i}]"
                    layout.append((name, int(mask.shape[1])))
        columns = [out] + [m.float() for per_width in masks.values() for m in per_width]
        fraction = table.gated(masks) / table.dense
        return torch.cat([*columns, fraction.float().unsqueeze(1)], dim=1)

    gate_kwargs: dict[str, Any] = {}
    if mode is not None:
        gate_kwargs = {"mode": mode, "mode_context": gate_mode}
    bank = extract_features(
        model,
        loader,
        accelerator=accelerator,
        progress=progress,
        desc=desc,
        feature_fn=features_of,
        **gate_kwargs,
    )
    if not gated:
        return SplitPass(bank)
    packed = bank.features
    features = type(bank)(features=packed[:, : dim[0]].contiguous(), labels=bank.labels)
    masks: dict[str, Tensor] = {}
    start = dim[0]
    for name, width in layout:
        masks[name] = packed[:, start : start + width] > 0.5
        start += width
    return SplitPass(features, fraction=packed[:, start].double(), masks=masks)
