"""A wrongly shaped input gets a message naming the expected shape."""

from __future__ import annotations

import pytest
import timm
import torch

import timm_gated_ssl  # noqa: F401
from timm_gated_ssl.compute import cost_table, count_macs
from timm_gated_ssl.errors import InputShapeError


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return timm.create_model("gated_resnet18_cifar", channels=(8, 16, 32, 64), num_classes=0)


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (torch.randn(3, 16, 16), r"shape \(B, 3, H, W\), got shape \(3, 16, 16\): add the batch dimension"),
        (torch.randn(2, 1, 16, 16), r"shape \(B, 3, H, W\): 3 channels, got 1"),
        (torch.randn(2, 16, 16, 3), r"shape \(B, 3, H, W\): 3 channels, got 16"),
        (torch.randn(1, 2, 3, 16, 16), r"shape \(B, 3, H, W\), got shape \(1, 2, 3, 16, 16\)"),
        (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), "expects float images"),
        (torch.randn(0, 3, 16, 16), "empty batch"),
        ([[0.0]], r"expects a tensor of images of shape \(B, 3, H, W\), got a list"),
    ],
)
def test_count_macs_names_the_expected_shape(model: torch.nn.Module, images: object, match: str) -> None:
    with pytest.raises(InputShapeError, match=match):
        count_macs(model, images)  # type: ignore[arg-type]
    assert issubclass(InputShapeError, ValueError)


def test_fixed_size_vit_names_its_size() -> None:
    vit = timm.create_model("gated_vit_tiny_patch16_224", num_classes=0, depth=1)
    with pytest.raises(InputShapeError, match=r"\(B, 3, 224, 224\) \(this ViT has a fixed input size\), got 32x32"):
        count_macs(vit, torch.randn(1, 3, 32, 32))


def test_cost_table_checks_the_size(model: torch.nn.Module) -> None:
    with pytest.raises(InputShapeError, match="3 channels, got 1"):
        cost_table(model, (1, 16, 16))
    with pytest.raises(InputShapeError, match="per-image size"):
        cost_table(model, (16, 16))
    assert cost_table(model, (3, 16, 16)).dense > 0
