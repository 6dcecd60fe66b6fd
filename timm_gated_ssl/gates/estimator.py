"""The binary gate estimator: Gumbel/logistic-noise straight-through (Jang et al. 2017; Maddison et
al. 2017), as used by DGNet (Li et al., ICCV 2021) and by Krishna et al. (BMVC 2023).

Training: ``u ~ U(0, 1)``, ``e = log(u) - log(1 - u)``, ``s = sigmoid((a + e) / tau)``,
``h = [s >= 0.5]``; the forward value is ``h`` and the gradient is that of ``s``.
Inference: ``m = [a >= 0]``, deterministic.
"""

from __future__ import annotations

import torch

DEFAULT_TAU = 2.0 / 3.0
_EPS = 1e-6


def logistic_noise(like: torch.Tensor) -> torch.Tensor:
    """Sample ``log(u) - log(1 - u)`` with ``u ~ U(0, 1)``, guarded away from 0 and 1."""
    u = torch.rand_like(like, dtype=torch.float32).clamp_(_EPS, 1.0 - _EPS)
    return (torch.log(u) - torch.log1p(-u)).to(like.dtype)


def straight_through_gate(
    logits: torch.Tensor, *, tau: float = DEFAULT_TAU, stochastic: bool = True, noise_scale: float = 1.0
) -> torch.Tensor:
    """Turn gate logits into a 0/1 mask.

    Args:
        logits: Gate logits of any shape.
        tau: Temperature of the relaxed sample (training only).
        stochastic: Draw logistic noise and use the straight-through gradient (training); when
            False, return the deterministic mask ``[logits >= 0]`` with no gradient (inference).

    Returns:
        A tensor of logits' shape and dtype holding exactly 0.0 or 1.0.
    """
    if not stochastic:
        return (logits >= 0).to(logits.dtype)
    noisy = logits + noise_scale * logistic_noise(logits) if noise_scale else logits
    soft = torch.sigmoid(noisy / tau)
    return _HardThreshold.apply(soft)


class _HardThreshold(torch.autograd.Function):
    """Forward ``[s >= 0.5]`` exactly (no ``h + s - s`` rounding), backward the identity."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, soft: torch.Tensor) -> torch.Tensor:
        return (soft >= 0.5).to(soft.dtype)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        return grad
