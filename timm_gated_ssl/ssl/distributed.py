"""Gradient-preserving all-gather for losses whose statistics span the global batch.

``torch.distributed.all_gather`` cuts the autograd graph; ``torch.distributed.nn.functional.
all_gather`` does not: its backward reduce-scatters (sums) every rank's gradient onto the rank that
owns each slice. Combined with DDP's gradient averaging over the world size this reproduces the
gradient of the mean of the per-rank losses, i.e. of one big-batch computation (the scheme of
SimCLR, Chen et al., ICML 2020, arXiv:2002.05709, and of VICReg's
``FullGatherLayer``, arXiv:2105.04906).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["gather_with_grad", "is_distributed", "rank_and_world_size"]


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is available, initialised and has more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the world size; ``(0, 1)`` when not running distributed."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every process along dim 0, keeping gradients.

    Every process must pass a tensor of the same shape (use ``drop_last=True`` in the sampler). When
    not running distributed, ``x`` is returned unchanged.

    Args:
        x: Local tensor of shape ``(n, ...)``.

    Returns:
        Tensor of shape ``(world_size * n, ...)`` ordered by rank; the slice
        ``[rank * n : (rank + 1) * n]`` is ``x`` itself.
    """
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)
