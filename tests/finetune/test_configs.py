"""The offline quickstart configs, end to end (cut to a few steps), and two gloo processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import timm

import timm_gated_ssl
from tests.recipe.conftest import ROOT
from timm_gated_ssl.finetune import FinetuneConfig


def test_every_finetune_config_loads() -> None:
    paths = sorted((ROOT / "recipes" / "configs").glob("finetune_*.yaml"))
    assert [p.stem for p in paths] == ["finetune_quickstart", "finetune_quickstart_full"]
    for path in paths:
        config = FinetuneConfig.load(path)
        assert config.checkpoint == "runs/quickstart" and config.dataset == "digits"


@pytest.mark.parametrize("name", ["finetune_quickstart", "finetune_quickstart_full"])
def test_quickstart_configs(finetune: Any, tiny_checkpoint: Path, tmp_path: Path, name: str) -> None:
    finetune.main(["--cpu", "--no_progress", "--config", str(ROOT / f"recipes/configs/{name}.yaml"),
                   "--checkpoint", str(tiny_checkpoint), "--output_dir", str(tmp_path),
                   "--max_steps", "2", "--seeds", "[0]", "--batch_size", "64",
                   *(["--budget", "0.3"] if name.endswith("full") else [])])  # the quickstart's t_d
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"top1_dense", "top1_gated", "top1_gated_t0.5", "mac_fraction"} <= set(metrics)
    model = timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    assert model.num_classes == 10 and "0.5" in model.calibrated_budgets
    assert timm_gated_ssl.has_gates(model)


@pytest.mark.slow
def test_two_gloo_processes_full_mode_bf16(tiny_checkpoint: Path, tmp_path: Path) -> None:
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "bf16", "--dynamo_backend", "no"]
    out = tmp_path / "run"
    args = [str(ROOT / "recipes" / "finetune.py"), "--no_progress", "--checkpoint", str(tiny_checkpoint),
            "--dataset", "digits", "--output_dir", str(out), "--mode", "full", "--train_subset", "128",
            "--batch_size", "16", "--epochs", "1", "--max_steps", "3", "--lr", "0.05", "--calibration_size", "64"]
    result = subprocess.run(launcher + args, check=False, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True  # no unused-parameter error
    assert metrics["steps"] == 3
    assert abs(metrics["mac_fraction"] - 0.5) <= 0.05
