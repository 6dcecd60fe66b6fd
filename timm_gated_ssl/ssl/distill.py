"""In-place distillation of the gated pass towards the dense pass of the same image.

Slimmable networks train their sub-networks on the full network's prediction for the same input,
with the full network's output detached ("in-place distillation": Yu & Huang, "Universally
Slimmable Networks and Improved Training Techniques", ICCV 2019; also once-for-all training, Cai et
al., ICLR 2020, and for weight-shared SSL sub-networks the online distillation of SlimCLR, Zhao et
al., arXiv:2209.15525). Here the sub-network is the gated mode, the full network the dense mode,
and the target is the dense backbone feature of the image the gated pass saw: the stop-gradient
keeps the dense encoder from being pulled towards the cheaper one.

Example:
    >>> distill = FeatureDistillLoss(weight=1.0)
    >>> loss = distill(h_gated_view1, h_dense_view1)  # the target is detached inside
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DISTILL_TARGETS", "FeatureDistillLoss"]

DISTILL_TARGETS = ("features", "embeddings")
"""What is distilled: backbone features (what a probe reads) or projector embeddings."""


class FeatureDistillLoss(nn.Module):
    """``weight * mean_b (1 - cos(student_b, stopgrad(teacher_b)))``.

    The cosine form ignores the feature scale, which differs between the modes (separate norms,
    fewer active channels in the gated pass); its value is in [0, 2 * weight].

    Args:
        weight: Loss weight (> 0).

    Raises:
        ValueError: ``weight`` is not positive.
    """

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        if not weight > 0:
            raise ValueError(f"distillation weight must be > 0, got {weight!r}")
        self.weight = float(weight)

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """The loss (float32 scalar) for ``(B, D)`` student and teacher features."""
        if student.shape != teacher.shape or student.dim() != 2:
            raise ValueError(
                f"student and teacher must both be (batch, dim) with equal shapes, got "
                f"{tuple(student.shape)} and {tuple(teacher.shape)}"
            )
        cos = F.cosine_similarity(student.float(), teacher.detach().float(), dim=1)
        return self.weight * (1.0 - cos).mean()

    def extra_repr(self) -> str:
        return f"weight={self.weight}"

