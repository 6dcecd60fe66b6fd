"""BYOL: normalised-MSE loss, predictor, and the momentum (EMA) target network.

Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS 2020,
arXiv:2006.07733 (Eq. 2 for the loss, Sec. 3.2 for the target update and the tau schedule).

Note: the dual recipe of Krishna et al. (arXiv:2301.09164) uses no momentum encoder; these helpers
are for BYOL-style runs where the target is an EMA copy of the online network.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from timm_gated_ssl.ssl.heads import Predictor

__all__ = [
    "BYOLLoss",
    "BYOLPredictor",
    "MomentumEncoder",
    "byol_regression_loss",
    "cosine_momentum_schedule",
    "update_momentum",
]

BYOLPredictor = Predictor
"""BYOL's predictor ``Linear(256, 4096) BN ReLU Linear(4096, 256)``; alias of :class:`Predictor`."""


def byol_regression_loss(p: Tensor, z: Tensor) -> Tensor:
    """``mean_i ||p_i/|p_i| - z_i/|z_i| ||^2 = mean_i (2 - 2 cos(p_i, z_i))``, target detached."""
    return (2.0 - 2.0 * F.cosine_similarity(p.float(), z.detach().float(), dim=1)).mean()


class BYOLLoss(nn.Module):
    """BYOL loss: ``L = l(p_a, z_b) + l(p_b, z_a)`` with ``l(p, z) = 2 - 2 cos(p, sg(z))``.

    ``p`` are online predictions and ``z`` target projections (from the momentum encoder in BYOL,
    or from the other pass when no momentum encoder is used). As in BYOL Eq. 2 the symmetric loss
    is the *sum* of both directions (range ``[0, 8]``); ``symmetric=False`` keeps ``l(p_a, z_b)``.

    Args:
        symmetric: Add the swapped term ``l(p_b, z_a)``.

    Example:
        >>> loss_fn = BYOLLoss()
        >>> p_a, p_b, z_a, z_b = (torch.randn(8, 64) for _ in range(4))
        >>> loss = loss_fn(p_a, z_b, p_b=p_b, z_a=z_a)
    """

    def __init__(self, *, symmetric: bool = True) -> None:
        super().__init__()
        self.symmetric = symmetric

    def forward(
        self, p_a: Tensor, z_b: Tensor, *, p_b: Tensor | None = None, z_a: Tensor | None = None
    ) -> Tensor:
        """Compute the loss.

        Args:
            p_a: Online prediction for view a, ``(N, D)``.
            z_b: Target projection for view b (gradient stopped), ``(N, D)``.
            p_b: Online prediction for view b; required when ``symmetric``.
            z_a: Target projection for view a; required when ``symmetric``.

        Returns:
            Scalar loss.
        """
        if p_a.shape != z_b.shape:
            raise ValueError(f"p_a and z_b shapes differ: {tuple(p_a.shape)} vs {tuple(z_b.shape)}")
        loss = byol_regression_loss(p_a, z_b)
        if not self.symmetric:
            return loss
        if p_b is None or z_a is None:
            raise ValueError("symmetric=True needs p_b and z_a; pass them or use symmetric=False")
        return loss + byol_regression_loss(p_b, z_a)


def _check_tau(tau: float) -> None:
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau!r}")


@torch.no_grad()
def update_momentum(online: nn.Module, target: nn.Module, tau: float) -> None:
    """EMA update ``target <- tau * target + (1 - tau) * online`` (BYOL Sec. 3.1).

    Floating-point parameters and buffers are averaged; integer buffers (e.g. BatchNorm's
    ``num_batches_tracked``) are copied.

    Args:
        online: The trained network.
        target: Its momentum copy, with identically named parameters and buffers.
        tau: Momentum in ``[0, 1]``; 1 leaves the target unchanged, 0 copies the online network.
    """
    _check_tau(tau)
    online_state = dict(online.named_parameters())
    online_state.update(dict(online.named_buffers()))
    for name, t in list(target.named_parameters()) + list(target.named_buffers()):
        if name not in online_state:
            raise ValueError(f"target has {name!r} which the online network lacks")
        o = online_state[name]
        if t.is_floating_point():
            t.lerp_(o.detach().to(t.dtype), 1.0 - tau)
        else:
            t.copy_(o)


def cosine_momentum_schedule(
    step: int, total_steps: int, *, base_tau: float = 0.996, final_tau: float = 1.0
) -> float:
    """BYOL's schedule ``tau = 1 - (1 - base) * (cos(pi * step / total) + 1) / 2``, generalised.

    Args:
        step: Current step (or epoch), in ``[0, total_steps]``.
        total_steps: Number of steps of training, >= 1.
        base_tau: Value at step 0 (0.996 in BYOL).
        final_tau: Value at ``total_steps`` (1.0 in BYOL).

    Returns:
        The momentum for this step.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps!r}")
    if not 0 <= step <= total_steps:
        raise ValueError(f"step must be in [0, {total_steps}], got {step!r}")
    _check_tau(base_tau)
    _check_tau(final_tau)
    return final_tau - (final_tau - base_tau) * (math.cos(math.pi * step / total_steps) + 1) / 2


class MomentumEncoder(nn.Module):
    """A frozen EMA copy of an online network (BYOL's target network).

    The copy is made at construction; its parameters never require gradients and it always runs
    under ``torch.no_grad``. Call :meth:`update` after each optimiser step.

    Args:
        online: The network to track (e.g. backbone + projector).

    Example:
        >>> online = nn.Sequential(nn.Linear(4, 4))
        >>> target = MomentumEncoder(online)
        >>> target.update(online, tau=cosine_momentum_schedule(0, 100))
    """

    def __init__(self, online: nn.Module) -> None:
        super().__init__()
        self.module = copy.deepcopy(online)
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def forward(self, *args: object, **kwargs: object) -> object:
        """Run the target network without gradients."""
        return self.module(*args, **kwargs)

    def update(self, online: nn.Module, tau: float) -> None:
        """Apply :func:`update_momentum` from ``online`` into this target."""
        update_momentum(online, self.module, tau)
