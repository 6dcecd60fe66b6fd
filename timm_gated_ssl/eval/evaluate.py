"""One call that turns a mode's frozen features into a :class:`~.report.ModeEvaluation` row.

Runs the paper's evaluation on cached features (Krishna et al., BMVC 2023): weighted k-NN with
k = 20, 1-NN, and the linear probe averaged over seeds; compute numbers, the calibration record and
the channel usage are passed in (they come from the MAC accounting and the gates, not from this
layer). It is the only builder of a row in ``eval/``: :func:`~.checkpoint.evaluate_checkpoint`
fills every entry of its result through it, so a row means the same whichever path made it.

Example:
    >>> row = evaluate_features(  # doctest: +SKIP
    ...     train, test, num_classes=10, mode="gated", budget=0.3, macs=1.9e8, dense_macs=5.6e8
    ... )
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from timm_gated_ssl.eval.features import Features
from timm_gated_ssl.eval.knn import knn_accuracy
from timm_gated_ssl.eval.linear_probe import linear_probe_repeated
from timm_gated_ssl.results import ChannelUsage
from timm_gated_ssl.results.evaluation import Mode, ModeEvaluation

__all__ = ["evaluate_features"]

KNN_TEMPERATURE = 0.07
"""Vote temperature of the weighted k-NN: the paper's T = 0.07, the protocol's and the default."""


def evaluate_features(
    train: Features,
    test: Features,
    *,
    num_classes: int,
    mode: Mode,
    budget: float | None = None,
    macs: float | None = None,
    dense_macs: float | None = None,
    knn: bool = True,
    knn_k: int = 20,
    knn_temperature: float = KNN_TEMPERATURE,
    linear: bool = True,
    linear_seeds: Sequence[int] = (0, 1, 2, 3, 4),
    linear_epochs: int = 100,
    device: torch.device | str | None = None,
    calibrated: bool = False,
    calibration_mac_fraction: float | None = None,
    gate_offset: float | None = None,
    channel_usage: Sequence[ChannelUsage] | None = None,
) -> ModeEvaluation:
    """Evaluate one mode's features with k-NN (k=``knn_k`` and k=1) and the repeated linear probe.

    Args:
        train: Training-split features and labels of this mode (the k-NN bank and probe data).
        test: Test-split features and labels of this mode.
        num_classes: Number of classes.
        mode: ``"dense"``, ``"gated"`` or ``"vanilla"``.
        budget: Target ``t_d`` of the training run, if any.
        macs: This mode's MACs per image on the test set.
        dense_macs: The dense MACs per image; with ``macs`` gives ``mac_fraction``.
        knn: Compute the k-NN metrics.
        knn_k: Neighbours of the weighted k-NN (the paper: 20).
        knn_temperature: Vote temperature of the weighted k-NN.
        linear: Run the linear probe.
        linear_seeds: One probe per seed; the row stores their mean and std.
        linear_epochs: Epochs of each probe.
        device: Where the probes train (default the CPU).
        calibrated: The gates ran at a threshold calibrated to ``budget``.
        calibration_mac_fraction: ``F_g / F_d`` realised on the calibration data (calibrated rows).
        gate_offset: The gate-logit offset the features were extracted at (gated rows).
        channel_usage: Per gated block, the always-off / always-on / dynamic channel counts
            (gated rows; :func:`~.channel_usage.channel_usage_from_masks`).

    Returns:
        The filled-in row.

    Raises:
        ValueError: If ``dense_macs`` is not > 0, or as the metric functions and
            :class:`~.report.ModeEvaluation`.
    """
    mac_fraction = None
    if dense_macs is not None:
        if not (
            isinstance(dense_macs, (int, float)) and math.isfinite(dense_macs) and dense_macs > 0
        ):
            raise ValueError(f"dense_macs must be a finite number > 0, got {dense_macs!r}")
        if macs is not None:
            mac_fraction = macs / dense_macs
    knn_top1 = knn1_top1 = None
    if knn:
        knn_top1 = knn_accuracy(
            train, test, k=knn_k, temperature=knn_temperature, num_classes=num_classes
        )
        knn1_top1 = knn_accuracy(train, test, k=1, num_classes=num_classes)
    linear_top1 = linear_std = None
    runs = None
    if linear:
        probe = linear_probe_repeated(
            train,
            test,
            num_classes=num_classes,
            seeds=linear_seeds,
            epochs=linear_epochs,
            device=device,
        )
        linear_top1, linear_std, runs = probe.top1_mean, probe.top1_std, len(probe.runs)
    return ModeEvaluation(
        mode=mode,
        budget=budget,
        knn_top1=knn_top1,
        knn1_top1=knn1_top1,
        linear_top1=linear_top1,
        linear_top1_std=linear_std,
        linear_runs=runs,
        macs=macs,
        mac_fraction=mac_fraction,
        calibrated=calibrated,
        calibration_mac_fraction=calibration_mac_fraction,
        gate_offset=gate_offset,
        channel_usage=None if channel_usage is None else tuple(channel_usage),
    )
