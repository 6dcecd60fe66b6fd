"""Exact resume and the NaN guard of recipes/finetune.py (as the pretraining recipe's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.finetune.conftest import run_finetune
from timm_gated_ssl.finetune import DualClassifier
from timm_gated_ssl.recipe import NonFiniteLossError, list_checkpoints

# 64 images / 16 per step = 4 steps per epoch; stochastic gates and augmented crops.
FULL = ["--mode", "full", "--batch_size", "16", "--epochs", "2", "--lr", "0.05"]


def test_resume_equals_uninterrupted_run(finetune: Any, tiny_checkpoint: Path, tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_finetune(finetune, tiny_checkpoint, straight, *FULL, "--max_steps", "6")
    run_finetune(finetune, tiny_checkpoint, resumed, *FULL, "--max_steps", "3")  # stops mid-epoch
    assert [p.name for p in list_checkpoints(resumed)] == ["step_00000003"]
    run_finetune(finetune, tiny_checkpoint, resumed, *FULL, "--max_steps", "6", "--resume_from_checkpoint",
                 "latest")
    for name in ("model.safetensors", "heads.safetensors"):
        a, b = load_file(str(straight / name)), load_file(str(resumed / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)


def test_nan_loss_stops(finetune: Any, tiny_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    original = DualClassifier.forward

    def poisoned(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(DualClassifier, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match="at step 1"):
        run_finetune(finetune, tiny_checkpoint, tmp_path, *FULL)
    assert not (tmp_path / "model.safetensors").exists()
