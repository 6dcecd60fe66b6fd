"""Batch strategies of the compact blocks, for families that run a whole block per strategy.

A compact block decides per sample which channels (heads, units) are on, but a batched matrix
product needs one set of rows for every sample. The strategies (measured in ``docs/speed.md``):

* ``"union"`` (default): run the union of the kept channels over the batch and zero each sample's
  off channels among them (:func:`zero_off`), so every sample gets exactly its masked result.
* ``"per_sample"``: one batch-1 pass per sample (exact slicing, no zeroing).
* ``"group"``: one pass per set of samples with identical masks.

One list of strategies for every family; :func:`run_batched` is the strategy loop of the ResNet and
ViT blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

BatchStrategy = Literal["union", "per_sample", "group"]
BATCH_STRATEGIES: tuple[str, ...] = ("union", "per_sample", "group")

__all__ = ["BATCH_STRATEGIES", "BatchStrategy", "check_strategy", "kept", "run_batched", "zero_off"]

Masks = tuple[torch.Tensor, ...]


def check_strategy(strategy: str) -> BatchStrategy:
    """Return ``strategy`` if it is a known batch strategy.

    Raises:
        ValueError: naming the bad value and the valid ones.
    """
    if strategy not in BATCH_STRATEGIES:
        raise ValueError(f"unknown batch_strategy {strategy!r}; valid: {', '.join(BATCH_STRATEGIES)}")
    return strategy  # type: ignore[return-value]


def kept(mask: torch.Tensor) -> torch.Tensor:
    """Sorted indices of the channels that any sample of the ``(B, W)`` bool mask keeps (may be empty)."""
    keep = mask.any(dim=0) if mask.shape[0] > 1 else mask[0]
    return keep.nonzero().flatten()


def zero_off(h: torch.Tensor, mask: torch.Tensor, idx: torch.Tensor, repeat: int = 1) -> torch.Tensor:
    """Zero, per sample, the gathered channels ``idx`` that the sample's mask turns off.

    Args:
        h: ``(B, ..., len(idx) * repeat)`` activations of the gathered channels, channels last.
        mask: ``(B, W)`` bool mask of the whole width.
        idx: The gathered channels (the union over the batch).
        repeat: Each mask value covers this many consecutive channels of ``h`` (a head's dims).

    Returns:
        ``h`` itself when no sample turns a gathered channel off (batch 1 always), else a masked copy.
    """
    if mask.shape[0] == 1:
        return h
    sub = mask.index_select(1, idx)
    if bool(sub.all()):
        return h
    sub = sub.to(h.dtype)
    if repeat > 1:
        sub = sub.repeat_interleave(repeat, dim=1)
    return h * sub.reshape((sub.shape[0],) + (1,) * (h.dim() - 2) + (sub.shape[1],))


def run_batched(
    fn: Callable[[torch.Tensor, Masks], torch.Tensor],
    x: torch.Tensor,
    masks: Sequence[torch.Tensor],
    strategy: BatchStrategy,
) -> torch.Tensor:
    """Apply ``fn(x_rows, masks_rows)`` to a batch according to ``strategy``.

    ``fn`` must be exact for any rows it is given (with ``"union"`` it sees the whole batch and does
    the zeroing itself); its output has one row per input row.

    Args:
        fn: The block computation on a sub-batch and its masks.
        x: ``(B, ...)`` block input.
        masks: ``(B, W_i)`` bool masks, one per gated width.
        strategy: ``"union"``, ``"per_sample"`` or ``"group"``.

    Returns:
        ``(B, ...)`` output, rows in input order.
    """
    masks = tuple(masks)
    if x.shape[0] == 1 or strategy == "union":
        return fn(x, masks)
    if strategy == "per_sample":
        return torch.cat([fn(x[i : i + 1], tuple(m[i : i + 1] for m in masks)) for i in range(x.shape[0])])
    _, inverse = torch.unique(torch.cat(masks, dim=1), dim=0, return_inverse=True)
    out: torch.Tensor | None = None
    for g in range(int(inverse.max()) + 1):
        rows = (inverse == g).nonzero().flatten()
        y = fn(x.index_select(0, rows), tuple(m.index_select(0, rows) for m in masks))
        if out is None:
            out = y.new_empty((x.shape[0],) + y.shape[1:])
        out.index_copy_(0, rows, y)
    assert out is not None
    return out
