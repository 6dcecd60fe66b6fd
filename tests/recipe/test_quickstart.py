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
