"""The gates' training noise in full fine-tuning: annealed as in pretraining, so that the last steps
train the masks the test split runs."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from torch.nn.modules.batchnorm import _NormBase

import timm_gated_ssl  # noqa: F401  (registers gated_*)
from timm_gated_ssl import gate_masks, gate_mode, iter_gates
from timm_gated_ssl.budget import BudgetLoss
from timm_gated_ssl.errors import ConfigError
from timm_gated_ssl.finetune import FinetuneConfig
from timm_gated_ssl.finetune.heads import DualClassifier


def tiny_classifier(schedule: str) -> DualClassifier:
    torch.manual_seed(0)
    backbone = timm.create_model("gated_resnet18_cifar", num_classes=0, layers=(1, 1, 1, 1),
                                 channels=(8, 16, 32, 64))
    return DualClassifier(backbone, 3, budget_loss=BudgetLoss(0.5), noise_schedule=schedule).train()


def noise_scales(model: DualClassifier) -> set[float]:
    return {gate.noise_scale for _, gate in iter_gates(model.backbone)}


@pytest.mark.parametrize(("schedule", "progress", "expected"), [
    ("cosine", 0.0, 1.0), ("cosine", 0.25, 0.5 * (1 + math.cos(math.pi / 4))), ("cosine", 0.5, 0.5),
    ("cosine", 1.0, 0.0), ("constant", 0.0, 1.0), ("constant", 1.0, 1.0),
])
def test_each_step_sets_the_noise_of_its_progress(schedule: str, progress: float, expected: float) -> None:
    model = tiny_classifier(schedule)
    model(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0]), progress=progress)
    (scale,) = noise_scales(model)
    assert scale == pytest.approx(expected, abs=1e-12)


def test_the_last_step_trains_the_inference_masks() -> None:
    """At the end of the cosine the training-mode gated pass draws no noise: its masks are the
    eval-mode (deterministic) masks of the same weights; under the constant schedule they are not.
    The norms run on their running statistics in both passes, so only the noise can differ."""
    images, labels = torch.randn(8, 3, 16, 16), torch.arange(8) % 3
    for schedule, same in (("cosine", True), ("constant", False)):
        model = tiny_classifier(schedule)
        for module in model.modules():
            if isinstance(module, _NormBase):
                module.eval()
        model(images, labels, progress=1.0)
        trained = {k: [m.detach().clone() for m in v] for k, v in gate_masks(model.backbone).items()}
        model.eval()
        with torch.no_grad(), gate_mode(model.backbone, "gated"):
            model.backbone(images)
        inferred = gate_masks(model.backbone)
        equal = all(torch.equal(a, b) for k in trained for a, b in zip(trained[k], inferred[k]))
        assert equal is same, schedule


def test_an_unknown_schedule_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="gate_noise_schedule.*cosine"):
        FinetuneConfig.from_dict({"gate_noise_schedule": "linear"})
    assert FinetuneConfig().gate_noise_schedule == "cosine"
