"""Weighted k-nearest-neighbour classification of frozen features.

The classifier of Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination" (CVPR 2018), as used by DINO (Caron et al., ICCV 2021) and by the paper this project
implements as an online monitor: cosine similarity between L2-normalised features, the ``k`` most
similar training samples vote for their class with weight ``exp(sim / T)``, ``T = 0.07``, and the
class with the largest summed weight wins (ties go to the lowest class index).

Example:
    >>> acc20 = knn_accuracy(train, test)  # doctest: +SKIP
    >>> acc1 = knn_accuracy(train, test, k=1)  # doctest: +SKIP
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from timm_gated_ssl.eval.features import Features

__all__ = ["knn_accuracy", "knn_predict"]


def _check_banks(train: Features, test: Features, *, k: int, temperature: float) -> None:
    if len(train) == 0:
        raise ValueError("the training (memory) bank is empty; k-NN needs at least one sample")
    if len(test) == 0:
        raise ValueError("the test bank is empty; nothing to classify")
    if train.dim != test.dim:
        raise ValueError(
            f"feature dimensions differ: train has D={train.dim}, test has D={test.dim}"
        )
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(train):
        raise ValueError(f"k must be an integer in [1, {len(train)}] (the bank size), got {k!r}")
    if not (
        isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def _resolve_num_classes(train: Features, test: Features, num_classes: int | None) -> int:
    for name, bank in (("train", train), ("test", test)):
        if bool((bank.labels < 0).any()):
            raise ValueError(
                f"{name} labels must be class indices >= 0, found {int(bank.labels.min())}"
                " (unlabeled data cannot be used for k-NN)"
            )
    seen = int(max(int(train.labels.max()), int(test.labels.max()))) + 1
    if num_classes is None:
        return seen
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < seen:
        raise ValueError(
            f"num_classes must be an integer >= {seen} (largest label + 1), got {num_classes!r}"
        )
    return num_classes


def knn_predict(
    train: Features,
    test: Features,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 256,
) -> Tensor:
    """Predict a class for every test sample by weighted k-NN over the training bank.

    Args:
        train: The memory bank (features and labels) the neighbours come from.
        test: The samples to classify; their labels only bound ``num_classes``.
        k: Number of neighbours, in ``[1, len(train)]``. With ``k=1`` this is plain
            nearest-neighbour classification by cosine similarity.
        temperature: ``T`` in the vote weight ``exp(sim / T)``; must be > 0.
        num_classes: Number of classes; defaults to the largest label seen + 1.
        chunk_size: Test samples scored per step; memory is ``O(chunk_size * len(train))``.

    Returns:
        ``[len(test)]`` int64 predicted class indices, on the CPU.

    Raises:
        ValueError: On empty banks, mismatched feature dimensions, ``k`` outside
            ``[1, len(train)]``, a non-positive temperature or ``chunk_size``, negative labels, or
            ``num_classes`` smaller than the largest label + 1.
    """
    _check_banks(train, test, k=k, temperature=temperature)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    n_classes = _resolve_num_classes(train, test, num_classes)

    bank = F.normalize(train.features.float(), dim=1)
    bank_labels = train.labels.long()
    preds: list[Tensor] = []
    for start in range(0, len(test), chunk_size):
        queries = F.normalize(test.features[start : start + chunk_size].float(), dim=1)
        sims = queries @ bank.T  # [c, N_train]
        top_sims, top_idx = sims.topk(k, dim=1)  # [c, k]
        weights = (top_sims / temperature).exp()
        votes = torch.zeros(queries.shape[0], n_classes, dtype=weights.dtype)
        votes.scatter_add_(1, bank_labels[top_idx], weights)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def knn_accuracy(
    train: Features,
    test: Features,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 256,
) -> float:
    """Top-1 accuracy (%) of the weighted k-NN classifier of :func:`knn_predict`.

    The paper monitors ``k=20`` (weighted, online) and reports ``k=1`` offline.

    Args:
        train: The memory bank.
        test: The labelled samples to classify.
        k: Number of neighbours, in ``[1, len(train)]``.
        temperature: Vote temperature ``T > 0``.
        num_classes: Number of classes; defaults to the largest label seen + 1.
        chunk_size: Test samples scored per step.

    Returns:
        Top-1 accuracy in percent, in ``[0, 100]``.

    Raises:
        ValueError: As :func:`knn_predict`.
    """
    preds = knn_predict(
        train, test, k=k, temperature=temperature, num_classes=num_classes, chunk_size=chunk_size
    )
    return 100.0 * int((preds == test.labels.long()).sum()) / len(test)
