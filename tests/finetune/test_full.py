"""Full fine-tuning keeps the budget; the output is a timm classifier that loads through
``local-dir:`` and publishes with a card listing top-1 and compute per budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import timm
import torch

import timm_gated_ssl
from tests.finetune.conftest import run_finetune
from timm_gated_ssl.data import EvalDataset, build_eval_transform, load_image_dataset
from timm_gated_ssl.finetune import use_head
from timm_gated_ssl.hub.push import stage_checkpoint


@pytest.fixture(scope="module")
def full_run(finetune: Any, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("full")
    metrics = run_finetune(finetune, tiny_checkpoint, out, "--mode", "full", "--budget", "0.3",
                           "--budgets", "0.5", "--epochs", "2", "--lr", "0.05", "--weight_decay", "5e-4",
                           "--save_every", "1")
    return out, metrics


def _test_split() -> tuple[torch.Tensor, torch.Tensor]:
    info = load_image_dataset("digits", split="test", image_size=16)
    data = EvalDataset(info.dataset, build_eval_transform(image_size=16, mean=info.mean, std=info.std))
    items = [data[i] for i in range(len(data))]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def test_full_mode_keeps_the_mac_fraction_at_the_budget(full_run: tuple[Path, dict]) -> None:
    out, metrics = full_run
    assert metrics["mode"] == "full" and metrics["budget"] == 0.3
    assert abs(metrics["mac_fraction"] - 0.3) <= 0.05  # realised on the test split
    assert abs(metrics["mac_fraction_gated_t0.5"] - 0.5) <= 0.05
    assert metrics["ranks_in_sync"] is True
    assert (out / "checkpoints").is_dir()


def test_local_dir_round_trip(full_run: tuple[Path, dict]) -> None:
    out, metrics = full_run
    config = json.loads((out / "config.json").read_text())
    assert config["num_classes"] == 10
    assert config["model_args"]["budget"] == 0.3
    assert set(config["model_args"]["calibrated_budgets"]) == {"0.3", "0.5"}
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    images, labels = _test_split()
    with torch.no_grad(), timm_gated_ssl.gate_mode(model, "gated"):
        gated = 100.0 * float((model(images).argmax(1) == labels).float().mean())
    assert gated == pytest.approx(metrics["top1_gated"], abs=1e-6)
    count = timm_gated_ssl.count_macs(model, images)  # deterministic gates, the reloaded threshold
    assert float((count.gated / count.dense).mean()) == pytest.approx(metrics["mac_fraction"], abs=1e-6)
    use_head(model, out, "dense")
    with torch.no_grad(), timm_gated_ssl.gate_mode(model, "dense"):
        dense = 100.0 * float((model(images).argmax(1) == labels).float().mean())
    assert dense == pytest.approx(metrics["top1_dense"], abs=1e-6)
    timm_gated_ssl.set_budget(model, 0.5)  # the other calibrated budget
    with pytest.raises(KeyError, match="heads: dense, gated"):
        use_head(model, out, "gated_t0.1")


def test_push_card_lists_top1_and_compute_per_budget(full_run: tuple[Path, dict], tmp_path: Path) -> None:
    out, metrics = full_run
    staged = stage_checkpoint(out, tmp_path, repo_id="me/finetuned")
    assert {"README.md", "config.json", "model.safetensors", "results.json"} <= set(staged)
    card = (tmp_path / "README.md").read_text()
    assert "pipeline_tag: image-classification" in card
    assert "Fine-tuned top-1 (%) [gated, calibrated to t_d=0.3]" in card
    assert f"{metrics['top1_gated']:.2f}" in card and f"{metrics['mac_fraction']:.4f}" in card
    assert f"{metrics['mac_fraction_gated_t0.5']:.4f}" in card
