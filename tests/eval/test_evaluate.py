"""evaluate_features fills a row from the metric functions it wraps."""

from __future__ import annotations

import pytest
import torch

from timm_gated_ssl.eval.evaluate import evaluate_features
from timm_gated_ssl.eval.knn import knn_accuracy
from timm_gated_ssl.eval.linear_probe import linear_probe_repeated

from .conftest import random_features


def test_row_matches_the_parts() -> None:
    train = random_features(100, 8, 3, seed=0)
    test = random_features(50, 8, 3, seed=1)
    row = evaluate_features(
        train,
        test,
        num_classes=3,
        mode="gated",
        budget=0.3,
        macs=2.0,
        dense_macs=8.0,
        linear_seeds=(0, 1),
        linear_epochs=2,
    )
    probe = linear_probe_repeated(train, test, num_classes=3, seeds=(0, 1), epochs=2)
    assert row.knn_top1 == knn_accuracy(train, test, k=20)
    assert row.knn1_top1 == knn_accuracy(train, test, k=1)
    assert row.linear_top1 == probe.top1_mean and row.linear_top1_std == probe.top1_std
    assert row.linear_runs == 2
    assert row.mac_fraction == 0.25 and row.flops_reduction == 0.75


def test_skips_and_errors() -> None:
    train = random_features(30, 4, 3, seed=0)
    row = evaluate_features(train, train, num_classes=3, mode="dense", knn=False, linear=False)
    assert row.knn_top1 is None and row.linear_top1 is None and row.mac_fraction is None
    with pytest.raises(ValueError, match="dense_macs must be a finite number > 0, got 0"):
        evaluate_features(train, train, num_classes=3, mode="dense", dense_macs=0, linear=False)


def test_calibration_and_channel_usage_are_carried_into_the_row() -> None:
    from timm_gated_ssl.eval.channel_usage import channel_usage_from_masks

    train = random_features(40, 4, 3, seed=0)
    usage = channel_usage_from_masks({"layer1.0": torch.tensor([[0, 1, 1], [0, 1, 0]])})
    row = evaluate_features(
        train, train, num_classes=3, mode="gated", budget=0.5, macs=4.0, dense_macs=8.0,
        linear=False, calibrated=True, calibration_mac_fraction=0.49, gate_offset=-0.25,
        channel_usage=usage,
    )
    assert row.calibrated and row.calibration_mac_fraction == 0.49 and row.gate_offset == -0.25
    assert row.channel_usage == tuple(usage) and row.mac_fraction == 0.5
    with pytest.raises(ValueError, match="a calibrated entry needs the budget"):
        evaluate_features(train, train, num_classes=3, mode="gated", calibrated=True, knn=False,
                          linear=False)
