"""SimSiamLoss: hand values, stop-gradient, symmetric averaging."""

from __future__ import annotations

import pytest
import torch

from timm_gated_ssl.ssl import SimSiamLoss, SimSiamPredictor


def naive_d(p: torch.Tensor, z: torch.Tensor) -> float:
    total = 0.0
    for i in range(p.shape[0]):
        total += -float(p[i] @ z[i] / (p[i].norm() * z[i].norm()))
    return total / p.shape[0]


def test_hand_values() -> None:
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    parallel = torch.tensor([[3.0, 0.0], [0.0, 0.5]])
    orthogonal = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    loss = SimSiamLoss(symmetric=False)
    assert loss(p, parallel).item() == pytest.approx(-1.0)
    assert loss(p, orthogonal).item() == pytest.approx(0.0)
    assert loss(p, -parallel).item() == pytest.approx(1.0)


def test_symmetric_matches_naive() -> None:
    p_a, p_b, z_a, z_b = (torch.randn(5, 7) for _ in range(4))
    got = SimSiamLoss()(p_a, z_b, p_b=p_b, z_a=z_a)
    assert got.item() == pytest.approx(0.5 * naive_d(p_a, z_b) + 0.5 * naive_d(p_b, z_a), abs=1e-6)


def test_stop_gradient_on_target() -> None:
    p = torch.randn(4, 3, requires_grad=True)
    z = torch.randn(4, 3, requires_grad=True)
    SimSiamLoss(symmetric=False)(p, z).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None


def test_symmetric_needs_both_directions() -> None:
    with pytest.raises(ValueError, match="symmetric=True needs p_b and z_a"):
        SimSiamLoss()(torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match="shapes differ"):
        SimSiamLoss()(torch.randn(2, 3), torch.randn(2, 4))


def test_predictor_shape() -> None:
    pred = SimSiamPredictor(16, 4)
    assert pred(torch.randn(3, 16)).shape == (3, 16)
