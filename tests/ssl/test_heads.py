"""Projector and Predictor layer structure and validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from timm_gated_ssl.ssl import Predictor, Projector


def test_default_projector_is_paper_layout() -> None:
    proj = Projector(512)
    kinds = [type(m) for m in proj]
    assert kinds == [
        nn.Linear,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.Linear,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.Linear,
    ]
    dims = [(m.in_features, m.out_features) for m in proj if isinstance(m, nn.Linear)]
    assert dims == [(512, 2048), (2048, 2048), (2048, 2048)]


def test_projector_variants() -> None:
    single = Projector(8, 4, 3, num_layers=1)
    assert [type(m) for m in single] == [nn.Linear]
    assert single(torch.randn(2, 8)).shape == (2, 3)
    with_bn = Projector(8, 16, 4, num_layers=2, last_bn=True)
    assert isinstance(with_bn[-1], nn.BatchNorm1d) and not with_bn[-1].affine
    assert with_bn(torch.randn(5, 8)).shape == (5, 4)


def test_predictor_layout() -> None:
    pred = Predictor(32, 8)
    assert [type(m) for m in pred] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert pred(torch.randn(4, 32)).shape == (4, 32)
    assert Predictor(32, 8, 6)(torch.randn(4, 32)).shape == (4, 6)


def test_errors() -> None:
    with pytest.raises(ValueError, match="num_layers must be an int >= 1, got 0"):
        Projector(8, num_layers=0)
    with pytest.raises(ValueError, match="in_dim must be a positive int, got -3"):
        Projector(-3)
    with pytest.raises(ValueError, match="hidden_dim"):
        Predictor(8, 0)
