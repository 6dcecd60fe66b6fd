"""BYOL loss, momentum update and cosine tau schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from timm_gated_ssl.ssl import (
    BYOLLoss,
    MomentumEncoder,
    cosine_momentum_schedule,
    update_momentum,
)


def naive_normalised_mse(p: torch.Tensor, z: torch.Tensor) -> float:
    total = 0.0
    for i in range(p.shape[0]):
        total += float(((p[i] / p[i].norm() - z[i] / z[i].norm()) ** 2).sum())
    return total / p.shape[0]


def test_hand_values() -> None:
    p = torch.tensor([[1.0, 0.0]])
    loss = BYOLLoss(symmetric=False)
    assert loss(p, torch.tensor([[5.0, 0.0]])).item() == pytest.approx(0.0)
    assert loss(p, torch.tensor([[0.0, 2.0]])).item() == pytest.approx(2.0)
    assert loss(p, torch.tensor([[-1.0, 0.0]])).item() == pytest.approx(4.0)


def test_symmetric_is_sum_of_normalised_mse() -> None:
    p_a, p_b, z_a, z_b = (torch.randn(6, 5) for _ in range(4))
    got = BYOLLoss()(p_a, z_b, p_b=p_b, z_a=z_a).item()
    assert got == pytest.approx(
        naive_normalised_mse(p_a, z_b) + naive_normalised_mse(p_b, z_a), abs=1e-5
    )


def test_stop_gradient_on_target() -> None:
    p = torch.randn(4, 3, requires_grad=True)
    z = torch.randn(4, 3, requires_grad=True)
    BYOLLoss(symmetric=False)(p, z).backward()
    assert p.grad is not None and z.grad is None


def test_update_momentum_hand_values() -> None:
    online, target = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        online.weight.fill_(1.0)
        target.weight.fill_(0.0)
        online.running_mean.fill_(2.0)
        online.num_batches_tracked.fill_(7)
    update_momentum(online, target, 0.9)
    torch.testing.assert_close(target.weight, torch.full((2,), 0.1))
    torch.testing.assert_close(target.running_mean, torch.full((2,), 0.2))
    assert target.num_batches_tracked.item() == 7
    with pytest.raises(ValueError, match=r"tau must be in \[0, 1\], got 1.5"):
        update_momentum(online, target, 1.5)


def test_momentum_encoder_is_frozen_copy() -> None:
    online = nn.Linear(3, 2)
    target = MomentumEncoder(online)
    assert all(not p.requires_grad for p in target.parameters())
    x = torch.randn(4, 3)
    torch.testing.assert_close(target(x), online(x))
    with torch.no_grad():
        online.weight.add_(1.0)
    before = target.module.weight.clone()
    target.update(online, tau=0.5)
    torch.testing.assert_close(target.module.weight, before + 0.5)
    assert not target(x).requires_grad


def test_cosine_schedule() -> None:
    assert cosine_momentum_schedule(0, 100) == pytest.approx(0.996)
    assert cosine_momentum_schedule(50, 100) == pytest.approx(0.998)
    assert cosine_momentum_schedule(100, 100) == pytest.approx(1.0)
    taus = [cosine_momentum_schedule(s, 10) for s in range(11)]
    assert all(a <= b for a, b in itertools.pairwise(taus))
    expected = 1 - 0.004 * (math.cos(math.pi * 0.25) + 1) / 2
    assert cosine_momentum_schedule(25, 100) == pytest.approx(expected)
    with pytest.raises(ValueError, match="step must be in"):
        cosine_momentum_schedule(11, 10)
    with pytest.raises(ValueError, match="total_steps"):
        cosine_momentum_schedule(0, 0)
