"""The README's quickstart config, end to end (cut to a few steps)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import timm
import torch

import timm_gated_ssl
from tests.recipe.conftest import ROOT


def test_quickstart_config(pretrain: Any, tmp_path: Path) -> None:
    pretrain.main(["--cpu", "--no_progress", "--config", str(ROOT / "recipes/configs/quickstart.yaml"),
                   "--output_dir", str(tmp_path), "--max_steps", "2", "--knn_max_bank", "300"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"knn_dense", "knn_gated", "mac_ratio", "images_per_s", "wall_time_s"} <= set(metrics)
    assert 10.0 <= metrics["knn_dense"] <= 100.0  # 10 classes
    model = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert timm_gated_ssl.gate_config(model).budget == 0.3
    with timm_gated_ssl.gate_mode(model, "gated"):
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 512)


def test_quickstart_hits_its_budget_by_training_alone(pretrain: Any, tmp_path: Path) -> None:
    """The whole quickstart schedule (every step, the progress-based bound relaxation) on a
    narrower ResNet-18: the deterministic gates end within 0.05 of the budget on the test split,
    with no calibration."""
    pretrain.main(["--cpu", "--no_progress", "--config", str(ROOT / "recipes/configs/quickstart.yaml"),
                   "--output_dir", str(tmp_path), "--model_kwargs", "{channels: [16, 32, 64, 128]}",
                   "--projector_hidden_dim", "128", "--projector_out_dim", "128", "--knn_max_bank", "300",
                   "--save_every", "0"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == 4  # the schedule ran to its end
    assert abs(metrics["mac_ratio"] - 0.3) <= 0.05, metrics["mac_ratio"]
