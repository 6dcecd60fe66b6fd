"""VICRegLoss against a naive per-dimension/per-pair implementation and hand-worked values."""

from __future__ import annotations

import math

import pytest
import torch

from timm_gated_ssl.ssl import VICRegLoss


def naive_vicreg(za: torch.Tensor, zb: torch.Tensor, eps: float = 1e-4) -> tuple[float, ...]:
    n, d = za.shape
    inv = sum((za[i, j] - zb[i, j]) ** 2 for i in range(n) for j in range(d)) / (n * d)
    var = 0.0
    cov = 0.0
    for z in (za, zb):
        mean = [sum(z[i, j] for i in range(n)) / n for j in range(d)]
        for j in range(d):
            v = sum((z[i, j] - mean[j]) ** 2 for i in range(n)) / (n - 1)
            var += max(0.0, 1.0 - math.sqrt(v + eps)) / d / 2
        for j in range(d):
            for k in range(d):
                if j != k:
                    c = sum((z[i, j] - mean[j]) * (z[i, k] - mean[k]) for i in range(n)) / (n - 1)
                    cov += c**2 / d
    inv, var, cov = float(inv), float(var), float(cov)
    return 25 * inv + 25 * var + cov, inv, var, cov


def test_matches_naive_implementation() -> None:
    g = torch.Generator().manual_seed(0)
    za = torch.randn(6, 4, generator=g, dtype=torch.float64) * 0.5
    zb = torch.randn(6, 4, generator=g, dtype=torch.float64) * 0.5
    out = VICRegLoss()(za, zb)
    expected = naive_vicreg(za, zb)
    got = (out.loss, out.invariance, out.variance, out.covariance)
    for g_, e in zip(got, expected):
        assert g_.item() == pytest.approx(e, rel=1e-5)
    assert out.variance.item() > 0  # the hinge is active at this scale


def test_hand_worked_example() -> None:
    # Var of each dim = 2 (hinge off); cov = [[2, 2], [2, 2]] -> off-diag sq 8 / D=2 = 4 per branch
    z = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    out = VICRegLoss()(z, z.clone())
    assert out.invariance.item() == 0
    assert out.variance.item() == 0
    assert out.covariance.item() == pytest.approx(8.0)
    assert out.loss.item() == pytest.approx(8.0)


def test_collapsed_embeddings() -> None:
    z = torch.zeros(4, 3)
    out = VICRegLoss()(z, z)
    assert out.variance.item() == pytest.approx(1 - math.sqrt(1e-4))
    assert out.loss.item() == pytest.approx(25 * (1 - math.sqrt(1e-4)))


def test_symmetric_and_weights() -> None:
    za, zb = torch.randn(8, 5), torch.randn(8, 5)
    loss = VICRegLoss(invariance_weight=2.0, variance_weight=3.0, covariance_weight=0.5)
    ab, ba = loss(za, zb), loss(zb, za)
    torch.testing.assert_close(ab.loss, ba.loss)
    torch.testing.assert_close(ab.loss, 2 * ab.invariance + 3 * ab.variance + 0.5 * ab.covariance)


def test_batch_size_invariance_of_duplicated_batch() -> None:
    # Invariance is a mean: duplicating the batch leaves it unchanged.
    za, zb = torch.randn(5, 3), torch.randn(5, 3)
    one = VICRegLoss()(za, zb)
    two = VICRegLoss()(za.repeat(2, 1), zb.repeat(2, 1))
    torch.testing.assert_close(one.invariance, two.invariance)


def test_gradients_flow_to_both_inputs() -> None:
    za = torch.randn(8, 4, requires_grad=True)
    zb = torch.randn(8, 4, requires_grad=True)
    VICRegLoss()(za, zb).loss.backward()
    assert za.grad is not None and zb.grad is not None
    assert za.grad.abs().sum() > 0 and zb.grad.abs().sum() > 0


def test_errors() -> None:
    with pytest.raises(ValueError, match="shape"):
        VICRegLoss()(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="at least 2"):
        VICRegLoss()(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match="variance_weight must be >= 0, got -1"):
        VICRegLoss(variance_weight=-1)
    with pytest.raises(ValueError, match="eps"):
        VICRegLoss(eps=0)
