"""The pretraining recipe co-trains width gates unchanged, given ``gate_type`` in ``model_kwargs``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm

import timm_gated_ssl
from tests.recipe.conftest import ROOT, run
from timm_gated_ssl.gates import WidthGate
from timm_gated_ssl.recipe import PretrainConfig


def test_two_steps_with_width_gates_and_reload(pretrain: Any, tmp_path: Path) -> None:
    metrics = run(pretrain, tmp_path, "--max_steps", "2", "--eval_split", "null", "--eval_train_split", "null",
                  "--model_kwargs", "{channels: [8, 16, 32, 64], gate_type: width, gate_levels: 4}")
    assert metrics["steps"] == 2
    model = timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    config = timm_gated_ssl.gate_config(model)
    assert (config.gate_type, config.levels) == ("width", 4)
    assert all(isinstance(g, WidthGate) for _, g in timm_gated_ssl.iter_gates(model))


def test_width_gate_config_matches_the_fashion_mnist_protocol() -> None:
    config = PretrainConfig.load(ROOT / "recipes" / "configs" / "fashion_mnist_vicreg_width_td03.yaml")
    assert config.model == "gated_resnet18_cifar" and config.budget == 0.3
    assert config.dataset == "fashion_mnist" and config.image_size == 28
    args = config.model_args()
    assert args["gate_type"] == "width" and args["gate_levels"] == 8
    model = timm.create_model(config.model, **args)
    assert all(isinstance(g, WidthGate) for _, g in timm_gated_ssl.iter_gates(model))
