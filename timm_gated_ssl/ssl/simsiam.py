"""SimSiam loss: negative cosine similarity with a stop-gradient on the target branch.

Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021, arXiv:2011.10566
(Eqs. 1-4). The predictor head is :class:`timm_gated_ssl.ssl.heads.Predictor`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from timm_gated_ssl.ssl.heads import Predictor

__all__ = ["SimSiamLoss", "SimSiamPredictor", "negative_cosine_similarity"]

SimSiamPredictor = Predictor
"""SimSiam's predictor ``Linear(D, 512) BN ReLU Linear(512, D)``: an alias of :class:`Predictor`."""


def negative_cosine_similarity(p: Tensor, z: Tensor) -> Tensor:
    """``D(p, z) = -mean_i cos(p_i, stopgrad(z_i))`` (SimSiam Eq. 1 with Eq. 3's stop-gradient)."""
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=1).mean()


class SimSiamLoss(nn.Module):
    """SimSiam loss ``L = D(p_a, z_b) / 2 + D(p_b, z_a) / 2`` with stop-gradient on ``z``.

    ``p`` are predictor outputs, ``z`` projector outputs. With ``symmetric=False`` only
    ``D(p_a, z_b)`` is used (the asymmetric variant of SimSiam Table 4),
    and ``p_b``/``z_a`` may be omitted. The minimum, reached when every ``p_a[i]`` is parallel to
    ``z_b[i]``, is -1.

    Args:
        symmetric: Average both directions (SimSiam default) instead of using only ``D(p_a, z_b)``.

    Example:
        >>> loss_fn = SimSiamLoss()
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
            p_a: Predictor output for view a, ``(N, D)``.
            z_b: Projector output for view b (target, gradient stopped), ``(N, D)``.
            p_b: Predictor output for view b; required when ``symmetric``.
            z_a: Projector output for view a (target); required when ``symmetric``.

        Returns:
            Scalar loss in ``[-1, 1]``.
        """
        if p_a.shape != z_b.shape:
            raise ValueError(f"p_a and z_b shapes differ: {tuple(p_a.shape)} vs {tuple(z_b.shape)}")
        loss_ab = negative_cosine_similarity(p_a, z_b)
        if not self.symmetric:
            return loss_ab
        if p_b is None or z_a is None:
            raise ValueError("symmetric=True needs p_b and z_a; pass them or use symmetric=False")
        return 0.5 * (loss_ab + negative_cosine_similarity(p_b, z_a))
