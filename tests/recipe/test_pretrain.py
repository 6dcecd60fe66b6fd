"""The pretraining recipe end to end on tiny data: every method, resume, outputs, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import timm
import torch

import timm_gated_ssl
from tests.recipe.conftest import run, weights
from timm_gated_ssl.errors import TrainingStateError
from timm_gated_ssl.recipe import DualSSLModel, NonFiniteLossError, OutputDirNotEmptyError
from timm_gated_ssl.recipe.outputs import list_checkpoints, resolve_checkpoint


@pytest.mark.parametrize("method", ["vicreg", "simsiam", "simclr", "byol"])
def test_two_steps_per_method(pretrain: Any, tmp_path: Path, method: str) -> None:
    metrics = run(pretrain, tmp_path, "--method", method, "--max_steps", "2", "--eval_split", "null",
                  "--eval_train_split", "null")
    assert metrics["steps"] == 2 and metrics["ranks_in_sync"] is True
    model = timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    assert timm_gated_ssl.gate_config(model).budget == 0.5
    loaded = weights(tmp_path)
    assert all(torch.isfinite(v).all() for v in loaded.values() if v.is_floating_point())


def test_vanilla_baseline_and_outputs(pretrain: Any, tmp_path: Path) -> None:
    metrics = run(pretrain, tmp_path, "--model", "resnet18_cifar", "--gating", "false", "--max_steps", "3")
    assert not timm_gated_ssl.has_gates(timm.create_model(f"local-dir:{tmp_path}", pretrained=True))
    assert {"knn_dense", "images_per_s", "wall_time_s"} <= set(metrics) and "knn_gated" not in metrics
    assert 0 < metrics["data_fraction"] < 1  # waiting for batches is part of the training time
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == "resnet18_cifar" and config["model_args"]["num_classes"] == 0
    assert (tmp_path / "config.yaml").exists()


def test_gated_run_reports_both_modes_and_mac_ratio(pretrain: Any, tmp_path: Path) -> None:
    metrics = run(pretrain, tmp_path, "--max_steps", "3", "--budget", "0.3", "--channels_last")
    assert {"knn_dense", "knn_gated", "mac_ratio", "flops_reduction"} <= set(metrics)
    assert 0 < metrics["mac_ratio"] <= 1.0
    assert abs(metrics["mac_ratio"] + metrics["flops_reduction"] - 1) < 1e-9


def test_resume_equals_uninterrupted_run(pretrain: Any, tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    no_eval = ["--eval_split", "null", "--eval_train_split", "null"]
    run(pretrain, straight, "--max_steps", "6", *no_eval)
    run(pretrain, resumed, "--max_steps", "3", *no_eval)  # stops mid-epoch (4 steps per epoch)
    assert [p.name for p in list_checkpoints(resumed)] == ["step_00000003"]
    run(pretrain, resumed, "--max_steps", "6", "--resume_from_checkpoint", "latest", *no_eval)
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_refuses_earlier_run_unless_overwrite(pretrain: Any, tmp_path: Path) -> None:
    args = ("--max_steps", "1", "--eval_split", "null", "--eval_train_split", "null")
    run(pretrain, tmp_path, *args)
    with pytest.raises(OutputDirNotEmptyError, match="--overwrite"):
        run(pretrain, tmp_path, *args)
    run(pretrain, tmp_path, *args, "--overwrite")


def test_nan_loss_stops_and_keeps_last_state(pretrain: Any, tmp_path: Path, monkeypatch) -> None:
    args = ("--eval_split", "null", "--eval_train_split", "null")
    run(pretrain, tmp_path, "--max_steps", "2", *args)
    good = resolve_checkpoint(tmp_path, "latest")
    original = DualSSLModel.forward

    def poisoned(self, *a, **kw):
        out = original(self, *a, **kw)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(DualSSLModel, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match="at step 3"):
        run(pretrain, tmp_path, "--max_steps", "4", "--resume_from_checkpoint", "latest", *args)
    assert resolve_checkpoint(tmp_path, "latest") == good
    assert (good / "model.safetensors").exists()


def test_half_written_state_is_ignored(pretrain: Any, tmp_path: Path) -> None:
    run(pretrain, tmp_path, "--max_steps", "2", "--eval_split", "null", "--eval_train_split", "null")
    latest = resolve_checkpoint(tmp_path, "latest")
    partial = latest.parent / ".tmp_step_00000009"  # a run killed while saving leaves this
    shutil.copytree(latest, partial)
    (partial / "model.safetensors").write_bytes(b"truncated")
    assert resolve_checkpoint(tmp_path, "latest") == latest


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("--dataset", "cifar11"), ValueError, "cifar10"),
        (("--batch_size", "100"), ValueError, "has only 64"),
        (("--budget", "0"), ValueError, r"\(0, 1\]"),
        (("--model", "resnet18_cifar"), ValueError, "gated_"),
        (("--resume_from_checkpoint", "latest"), TrainingStateError, "no training state"),
    ],
)
def test_bad_input(pretrain: Any, tmp_path: Path, args: tuple[str, ...], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        run(pretrain, tmp_path, "--max_steps", "1", *args)


def test_tensorboard_tracker(pretrain: Any, tmp_path: Path) -> None:
    run(pretrain, tmp_path, "--max_steps", "2", "--report_to", "tensorboard", "--eval_split", "null",
        "--eval_train_split", "null")
    assert list(tmp_path.rglob("events.out.tfevents.*")), "no tensorboard event file written"


def test_per_image_augmentation_resumes_exactly(pretrain: Any, tmp_path: Path) -> None:
    # The torchvision v2 path, image by image (augmentation: per_image), stays available and exact.
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    args = ("--augmentation", "per_image", "--eval_split", "null", "--eval_train_split", "null")
    run(pretrain, straight, "--max_steps", "3", *args)
    run(pretrain, resumed, "--max_steps", "2", *args)
    run(pretrain, resumed, "--max_steps", "3", "--resume_from_checkpoint", "latest", *args)
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_records_the_input_size_and_normalisation_it_was_trained_with(tmp_path: Path) -> None:
    """timm.data.resolve_data_config on the exported checkpoint gives the training crop, not the
    architecture's 32 px CIFAR default (the tiny run trains on 16 px digits)."""
    from tests.recipe.conftest import load_pretrain_module
    from timm_gated_ssl.data.datasets import DATASET_PRESETS

    run(load_pretrain_module(), tmp_path, "--max_steps", "1", "--eval_split", "null", "--eval_train_split", "null")
    model = timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    config = timm.data.resolve_data_config({}, model=model)
    digits = DATASET_PRESETS["digits"]
    assert config["input_size"] == (3, 16, 16) and config["crop_pct"] == 1.0
    assert config["mean"] == pytest.approx(digits.mean) and config["std"] == pytest.approx(digits.std)
    assert config["interpolation"] == "bicubic"
