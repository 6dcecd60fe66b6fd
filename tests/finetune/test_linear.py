"""Linear mode equals a hand-rolled linear probe on a tiny fixed problem."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import timm_gated_ssl
from tests.finetune.conftest import run_finetune
from timm_gated_ssl.data import EvalDataset, build_eval_transform, load_image_dataset

EPOCHS, LR = 4, 0.4


def _split(name: str, size: int, pick: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    info = load_image_dataset("digits", split=name, image_size=size)
    rows = info.dataset if pick is None else info.dataset.select(pick)
    data = EvalDataset(rows, build_eval_transform(image_size=size, mean=info.mean, std=info.std))
    items = [data[i] for i in range(len(data))]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def _hand_rolled_probe(features: torch.Tensor, labels: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-batch SGD (Nesterov, momentum 0.9) from zero on the batch-standardised features, cosine
    learning rate from the peak on the first step to 0 on the last; returned as the one linear map
    of the eval-mode head (running statistics after EPOCHS updates of momentum 0.1 from (0, 1))."""
    mean, var = features.mean(0), features.var(0, unbiased=False)
    standardised = (features - mean) / (var + 1e-6).sqrt()
    weight = torch.zeros(10, features.shape[1], requires_grad=True)
    bias = torch.zeros(10, requires_grad=True)
    optimizer = torch.optim.SGD([weight, bias], lr=lr, momentum=0.9, nesterov=True)
    for step in range(EPOCHS):
        for group in optimizer.param_groups:
            group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / (EPOCHS - 1)))
        loss = F.cross_entropy(F.linear(standardised, weight, bias), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    kept = 0.9 ** EPOCHS
    running_mean = (1 - kept) * mean
    running_var = kept * 1.0 + (1 - kept) * features.var(0, unbiased=True)
    folded = weight.detach() / (running_var + 1e-6).sqrt()
    return folded, bias.detach() - folded @ running_mean


def test_linear_mode_equals_a_hand_rolled_probe(finetune: Any, tiny_checkpoint: Path, tmp_path: Path) -> None:
    # One full batch of 64 un-augmented images per step: the batch order cannot matter.
    metrics = run_finetune(finetune, tiny_checkpoint, tmp_path, "--batch_size", "64", "--augment", "false",
                           "--epochs", str(EPOCHS), "--lr", str(LR))
    heads = load_file(str(tmp_path / "heads.safetensors"))

    backbone = timm.create_model(f"local-dir:{tiny_checkpoint}", pretrained=True).eval()
    info = load_image_dataset("digits", split="train")
    pick = sorted(torch.randperm(len(info), generator=torch.Generator().manual_seed(0))[:64].tolist())
    images, labels = _split("train", 16, pick)
    test_images, test_labels = _split("test", 16)
    for mode in ("dense", "gated"):
        with torch.no_grad(), timm_gated_ssl.gate_mode(backbone, mode):
            features, test_features = backbone(images), backbone(test_images)
        weight, bias = _hand_rolled_probe(features, labels, LR * 64 / 256)
        torch.testing.assert_close(heads[f"{mode}.weight"], weight, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(heads[f"{mode}.bias"], bias, atol=1e-5, rtol=1e-4)
        top1 = 100.0 * float((F.linear(test_features, weight, bias).argmax(1) == test_labels).float().mean())
        assert abs(metrics[f"top1_{mode}"] - top1) < 1e-6
    assert metrics["top1_dense_std"] == 0.0 and metrics["mac_fraction_dense"] == 1.0
    assert metrics["final_lr"] == 0.0  # the cosine ends at min_lr (0) on the last update


def test_seeds_give_mean_and_std_and_a_head_per_budget(finetune: Any, tiny_checkpoint: Path, tmp_path: Path) -> None:
    metrics = run_finetune(finetune, tiny_checkpoint, tmp_path, "--seeds", "[0, 1]", "--budgets", "0.3",
                           "--max_steps", "1")
    assert metrics["seeds"] == [0, 1]
    assert {"top1_dense", "top1_gated", "top1_gated_t0.3"} <= set(metrics)
    assert abs(metrics["mac_fraction_gated_t0.3"] - 0.3) <= 0.05
    assert set(load_file(str(tmp_path / "heads.safetensors"))) == {
        f"{h}.{p}" for h in ("dense", "gated", "gated_t0p3") for p in ("weight", "bias")}
    # The checkpoint still runs at its trained threshold; 0.3 is in the table.
    model = timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    assert timm_gated_ssl.gate_config(model).budget == 0.5
    assert list(timm_gated_ssl.calibrated_budgets(model)) == [0.3]


def test_vanilla_checkpoint_gets_one_head(finetune: Any, tmp_path: Path) -> None:
    """A checkpoint without gates (the vanilla baseline) is linearly evaluated with one head."""
    from timm.models import save_for_hf

    plain = tmp_path / "plain"
    save_for_hf(timm.create_model("resnet18_cifar", channels=[8, 16, 32, 64], num_classes=0), plain,
                safe_serialization=True)
    metrics = run_finetune(finetune, plain, tmp_path / "out", "--image_size", "16", "--max_steps", "1")
    assert metrics["mac_fraction_vanilla"] == 1.0 and "top1_gated" not in metrics
    model = timm.create_model(f"local-dir:{tmp_path / 'out'}", pretrained=True)
    assert model.num_classes == 10 and not timm_gated_ssl.has_gates(model)


def test_the_linear_head_reaches_the_frozen_probe(finetune: Any, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """The recipe's linear head (minibatches of 64, 8 epochs) lands within 3 points of the frozen
    probe of ``eval/`` on the same images and features; on unscaled features it diverged."""
    from timm_gated_ssl.eval import Features
    from timm_gated_ssl.eval.linear_probe import linear_probe

    metrics = run_finetune(finetune, tiny_checkpoint, tmp_path, "--train_subset", "512", "--batch_size", "64",
                           "--epochs", "8", "--lr", "0.4", "--augment", "false")
    backbone = timm.create_model(f"local-dir:{tiny_checkpoint}", pretrained=True).eval()
    info = load_image_dataset("digits", split="train")
    pick = sorted(torch.randperm(len(info), generator=torch.Generator().manual_seed(0))[:512].tolist())
    (images, labels), (test_images, test_labels) = _split("train", 16, pick), _split("test", 16)
    with torch.no_grad(), timm_gated_ssl.gate_mode(backbone, "dense"):
        train, test = Features(backbone(images), labels), Features(backbone(test_images), test_labels)
    probe = linear_probe(train, test, num_classes=10).top1
    assert metrics["top1_dense"] >= probe - 3.0
