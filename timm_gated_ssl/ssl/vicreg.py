"""VICReg loss: Variance-Invariance-Covariance Regularization.

Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR 2022, arXiv:2105.04906. It is the loss that ties the gated and the dense pass
together in Krishna et al., BMVC 2023, arXiv:2301.09164 (view 1 gated, view 2 dense).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from timm_gated_ssl.ssl.distributed import gather_with_grad

__all__ = ["VICRegLoss", "VICRegOutput", "covariance_loss", "variance_loss"]


class VICRegOutput(NamedTuple):
    """Weighted total and the three unweighted terms of :class:`VICRegLoss`."""

    loss: Tensor
    invariance: Tensor
    variance: Tensor
    covariance: Tensor


def variance_loss(z: Tensor, *, eps: float = 1e-4, target: float = 1.0) -> Tensor:
    """Hinge on the per-dimension standard deviation: ``mean_j relu(target - sqrt(var_j + eps))``.

    The variance is the unbiased batch variance (as ``torch.var`` in the VICReg reference code).
    """
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(target - std).mean()


def covariance_loss(z: Tensor) -> Tensor:
    """Sum of squared off-diagonal entries of the batch covariance matrix, divided by D."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = (z.T @ z) / (n - 1)
    off_diag = cov - torch.diag_embed(torch.diagonal(cov))
    return off_diag.pow(2).sum() / d


class VICRegLoss(nn.Module):
    """VICReg loss between two batches of embeddings ``z_a`` and ``z_b`` of shape ``(N, D)``.

    ``loss = w_inv * MSE(z_a, z_b) + w_var * (v(z_a) + v(z_b)) / 2 + w_cov * (c(z_a) + c(z_b))``,
    where ``v`` is the hinge ``mean_j relu(1 - sqrt(Var(z_j) + eps))`` and ``c`` the squared
    off-diagonal covariance summed and divided by D (arXiv:2105.04906, Eqs. 1-6 and the reference
    implementation: variance averaged over branches, covariance summed).

    Distributed training: by default (``gather_distributed=False``) variance and covariance are
    computed on each process's own batch, as in the solo-learn based code of Krishna et al.; DDP
    then averages the gradients. With ``gather_distributed=True`` both statistics use the batch
    gathered from all processes with gradients (VICReg's ``FullGatherLayer`` scheme), so the
    result matches a single-process run on the global batch. The invariance term is always per
    process (it is a mean over samples, so DDP averaging already makes it global).

    Args:
        invariance_weight: Weight of the MSE term (lambda, 25 in the paper).
        variance_weight: Weight of the variance hinge (mu, 25).
        covariance_weight: Weight of the covariance term (nu, 1).
        eps: Added to the variance before the square root.
        gather_distributed: Compute variance/covariance on the all-gathered global batch.

    Example:
        >>> loss_fn = VICRegLoss()
        >>> out = loss_fn(torch.randn(32, 128), torch.randn(32, 128))
        >>> out.loss.backward()  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        eps: float = 1e-4,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (
            ("invariance_weight", invariance_weight),
            ("variance_weight", variance_weight),
            ("covariance_weight", covariance_weight),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.invariance_weight = float(invariance_weight)
        self.variance_weight = float(variance_weight)
        self.covariance_weight = float(covariance_weight)
        self.eps = float(eps)
        self.gather_distributed = gather_distributed

    def forward(self, z_a: Tensor, z_b: Tensor) -> VICRegOutput:
        """Compute the loss.

        Args:
            z_a: Embeddings of the first view (the gated pass in the dual recipe), ``(N, D)``.
            z_b: Embeddings of the second view (the dense pass), ``(N, D)``.

        Returns:
            :class:`VICRegOutput` with the weighted ``loss`` and the unweighted terms.
        """
        if z_a.ndim != 2 or z_a.shape != z_b.shape:
            raise ValueError(
                f"z_a and z_b must both have shape (N, D); got {tuple(z_a.shape)} and "
                f"{tuple(z_b.shape)}"
            )
        if z_a.shape[0] < 2:
            raise ValueError(f"VICReg needs a batch of at least 2 samples, got {z_a.shape[0]}")
        # Statistics in float32 even under autocast: bf16 covariance sums are too coarse.
        z_a, z_b = z_a.float(), z_b.float()
        invariance = F.mse_loss(z_a, z_b)
        if self.gather_distributed:
            z_a, z_b = gather_with_grad(z_a), gather_with_grad(z_b)
        variance = 0.5 * (variance_loss(z_a, eps=self.eps) + variance_loss(z_b, eps=self.eps))
        covariance = covariance_loss(z_a) + covariance_loss(z_b)
        loss = (
            self.invariance_weight * invariance
            + self.variance_weight * variance
            + self.covariance_weight * covariance
        )
        return VICRegOutput(loss, invariance, variance, covariance)
