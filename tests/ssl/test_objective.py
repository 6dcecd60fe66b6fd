"""SSL method registry and SSLObjective."""

from __future__ import annotations

import pytest
import torch

from timm_gated_ssl.ssl import SSL_LOSSES, MomentumEncoder, build_ssl_objective


def test_registry_names() -> None:
    assert set(SSL_LOSSES) == {"vicreg", "simsiam", "simclr", "byol"}


def test_unknown_name_lists_valid() -> None:
    with pytest.raises(ValueError, match=r"unknown SSL method 'mocov3'.*'byol'.*'vicreg'"):
        build_ssl_objective("mocov3", in_dim=8)


@pytest.mark.parametrize("name", sorted(SSL_LOSSES))
def test_forward_backward(name: str) -> None:
    obj = build_ssl_objective(name, in_dim=8, hidden_dim=16, out_dim=6)
    h_a = torch.randn(4, 8, requires_grad=True)
    h_b = torch.randn(4, 8, requires_grad=True)
    out = obj(h_a, h_b)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert h_a.grad is not None and h_a.grad.abs().sum() > 0
    assert (obj.predictor is not None) == (name in {"simsiam", "byol"})


def test_method_default_sizes() -> None:
    assert build_ssl_objective("vicreg", in_dim=512).projector.out_dim == 2048
    assert build_ssl_objective("simclr", in_dim=512).projector.out_dim == 128
    assert build_ssl_objective("byol", in_dim=512).projector.out_dim == 256
    assert build_ssl_objective("simclr", in_dim=8, temperature=0.5).loss.temperature == 0.5


def test_vicreg_terms_are_logged() -> None:
    out = build_ssl_objective("vicreg", in_dim=8, hidden_dim=8, out_dim=8)(
        torch.randn(4, 8), torch.randn(4, 8)
    )
    assert set(out.terms) == {"invariance", "variance", "covariance"}


def test_byol_with_momentum_targets() -> None:
    obj = build_ssl_objective("byol", in_dim=8, hidden_dim=16, out_dim=6, predictor_hidden_dim=16)
    target = MomentumEncoder(obj.projector)
    h_a, h_b = torch.randn(4, 8), torch.randn(4, 8)
    out = obj(h_a, h_b, target_a=target(h_a), target_b=target(h_b))
    out.loss.backward()
    assert all(p.grad is None for p in target.parameters())


def test_predictor_size_for_method_without_predictor() -> None:
    with pytest.raises(ValueError, match="has no predictor"):
        build_ssl_objective("vicreg", in_dim=8, predictor_hidden_dim=4)
