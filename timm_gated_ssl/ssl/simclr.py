"""NT-Xent (normalised temperature-scaled cross entropy), the contrastive loss of SimCLR.

Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020, arXiv:2002.05709 (Eq. 1 and Algorithm 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from timm_gated_ssl.ssl.distributed import gather_with_grad, rank_and_world_size

__all__ = ["NTXentLoss"]


class NTXentLoss(nn.Module):
    """NT-Xent loss over two views with negatives drawn from the whole (global) batch.

    Each of the ``2N`` local embeddings is an anchor; its positive is the same sample in the other
    view and its negatives are the other ``2 * N_global - 2`` embeddings of both views. When
    ``torch.distributed`` is initialised with more than one process, the candidates are gathered
    from every process with ``torch.distributed.nn.functional.all_gather`` (gradients flow back to
    the owning process) and the positive of local sample ``i`` sits at global index
    ``rank * N + i``. Every process must use the same local batch size. The returned value is the
    mean over this process's anchors; with DDP's gradient averaging this equals one computation
    over the global batch. Without distributed training the computation is purely local.

    Args:
        temperature: Softmax temperature tau (SimCLR: 0.1 for ImageNet at large batches; 0.2 to 0.5
            is common on CIFAR).
        gather_distributed: Gather negatives across processes when running distributed.

    Example:
        >>> loss_fn = NTXentLoss(temperature=0.2)
        >>> loss = loss_fn(torch.randn(16, 128), torch.randn(16, 128))
    """

    def __init__(self, *, temperature: float = 0.1, gather_distributed: bool = True) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.gather_distributed = gather_distributed

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        """Compute the symmetric NT-Xent loss.

        Args:
            z_a: Embeddings of view 1, ``(N, D)``.
            z_b: Embeddings of view 2, ``(N, D)``; row ``i`` is the positive of ``z_a[i]``.

        Returns:
            Scalar loss averaged over the ``2N`` local anchors.
        """
        if z_a.ndim != 2 or z_a.shape != z_b.shape:
            raise ValueError(
                f"z_a and z_b must both have shape (N, D); got {tuple(z_a.shape)} and "
                f"{tuple(z_b.shape)}"
            )
        n = z_a.shape[0]
        z_a = F.normalize(z_a.float(), dim=1)
        z_b = F.normalize(z_b.float(), dim=1)
        rank, world = rank_and_world_size() if self.gather_distributed else (0, 1)
        if world > 1:
            all_a, all_b = gather_with_grad(z_a), gather_with_grad(z_b)
        else:
            all_a, all_b = z_a, z_b
        candidates = torch.cat([all_a, all_b], dim=0)  # (2 * N_global, D)
        n_global = all_a.shape[0]
        anchors = torch.cat([z_a, z_b], dim=0)  # (2N, D)
        logits = anchors @ candidates.T / self.temperature
        local = torch.arange(n, device=z_a.device) + rank * n
        # Anchor z_a[i] is candidate `local[i]`; z_b[i] is candidate `n_global + local[i]`.
        self_index = torch.cat([local, local + n_global])
        positive_index = torch.cat([local + n_global, local])
        rows = torch.arange(2 * n, device=z_a.device)
        self_mask = torch.zeros_like(logits, dtype=torch.bool)
        self_mask[rows, self_index] = True
        logits = logits.masked_fill(self_mask, float("-inf"))
        return F.cross_entropy(logits, positive_index)
