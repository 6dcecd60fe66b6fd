"""The end-of-training budget check: measured independently with count_macs, calibrated into the
checkpoint only when training missed the budget by more than the tolerance, and the budget hit on
a dataset the defaults were never tuned on (photographs cut into crops)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import timm
import torch

import timm_gated_ssl
from tests.recipe.conftest import ROOT, run
from timm_gated_ssl.data import load_image_dataset
from timm_gated_ssl.recipe.budget_check import build_budget_loader, settle_budget


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("gated_resnet18_cifar", channels=[8, 16, 32, 64], budget=0.3, num_classes=0).eval()


def _fraction(model: torch.nn.Module, images: torch.Tensor) -> float:
    count = timm_gated_ssl.count_macs(model, images)
    return float(count.gated.mean() / count.dense)


def test_within_tolerance_measures_and_keeps_the_threshold() -> None:
    model, images = _tiny_model(), torch.randn(48, 3, 16, 16)
    trained = _fraction(model, images)
    check = settle_budget(model, [images[:32], images[32:]], budget=trained + 0.02, tolerance=0.05)
    assert check.trained == pytest.approx(trained, abs=1e-9) and check.images == 48
    assert check.calibrated is None and timm_gated_ssl.gate_offset(model) == 0.0
    assert "within the tolerance 0.05" in check.message()
    kept = settle_budget(model, [images], budget=0.9, tolerance=None)
    assert kept.calibrated is None and "trained threshold is kept" in kept.message()


def test_beyond_tolerance_calibrates_to_the_budget() -> None:
    model, images = _tiny_model(), torch.randn(48, 3, 16, 16)
    trained = _fraction(model, images)
    budget = round(trained - 0.15, 2)
    check = settle_budget(model, [images], budget=budget, tolerance=0.05)
    assert check.calibrated == pytest.approx(budget, abs=0.01)
    assert _fraction(model, images) == pytest.approx(check.calibrated, abs=1e-9)  # the model now runs there
    assert timm_gated_ssl.gate_offset(model) == pytest.approx(check.offset)
    assert check.metrics()["budget_calibrated"] is True
    assert f"calibrated the gate threshold to {check.calibrated:.3f}" in check.message()


def test_budget_loader_takes_the_first_training_images_untransformed() -> None:
    info = load_image_dataset("digits", split="train", image_size=16)
    batches = list(build_budget_loader(info, images=40, batch_size=16))
    assert [images.shape for images, _ in batches] == [(16, 3, 16, 16), (16, 3, 16, 16), (8, 3, 16, 16)]


def test_recipe_calibrates_a_missed_budget_into_the_checkpoint(pretrain: Any, tmp_path: Path) -> None:
    # No budget or bound loss: the gates cannot learn the budget, so the check must step in.
    metrics = run(pretrain, tmp_path, "--budget", "0.3", "--budget_weight", "0", "--bound_weight", "0",
                  "--max_steps", "2", "--eval_split", "null", "--eval_train_split", "null")
    assert abs(metrics["mac_ratio_trained"] - 0.3) > 0.05
    assert metrics["budget_calibrated"] is True and metrics["mac_ratio_calibrated"] == pytest.approx(0.3, abs=0.01)
    model = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    info = load_image_dataset("digits", split="train", image_size=16)
    images = torch.cat([batch for batch, _ in build_budget_loader(info, images=64)])  # --train_subset 64
    assert metrics["budget_check_images"] == 64
    assert _fraction(model, images) == pytest.approx(metrics["mac_ratio_calibrated"], abs=1e-4)
    table = json.loads((tmp_path / "config.json").read_text())["model_args"]["calibrated_budgets"]
    assert float(table["0.3"]) == pytest.approx(metrics["budget_gate_offset"])


def test_recipe_keeps_the_trained_threshold_when_told(pretrain: Any, tmp_path: Path) -> None:
    metrics = run(pretrain, tmp_path, "--budget", "0.3", "--budget_weight", "0", "--bound_weight", "0",
                  "--max_steps", "2", "--eval_split", "null", "--eval_train_split", "null",
                  "--budget_tolerance", "null")
    assert metrics["budget_calibrated"] is False and abs(metrics["mac_ratio_trained"] - 0.3) > 0.05
    model = timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    assert timm_gated_ssl.gate_offset(model) == 0.0


def test_budget_on_photographs_the_defaults_were_not_tuned_on(pretrain: Any, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _photos import build_photo_crops

    folder = build_photo_crops(tmp_path / "photos", train_per_class=8, test_per_class=6, size=24, classes=8)
    out = tmp_path / "run"
    pretrain.main(["--cpu", "--no_progress", "--output_dir", str(out), "--config",
                   str(ROOT / "recipes" / "configs" / "quickstart.yaml"), "--dataset", str(folder),
                   "--image_size", "16", "--batch_size", "16", "--epochs", "2", "--model_kwargs",
                   "{channels: [8, 16, 32, 64]}", "--projector_hidden_dim", "32", "--projector_out_dim", "32"])
    metrics = json.loads((out / "metrics.json").read_text())
    # the test split: crops of the photographs' right quarters, never seen in training
    assert abs(metrics["mac_ratio"] - 0.3) <= 0.05, metrics
