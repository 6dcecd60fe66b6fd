"""Shared fixtures of the evaluation tests: tiny, seeded, CPU-only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from timm_gated_ssl.eval.features import Features


def random_features(n: int, dim: int, num_classes: int, *, seed: int) -> Features:
    """Gaussian features with mild class structure, so accuracies are neither 0 nor 100."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(1234))
    labels = torch.randint(0, num_classes, (n,), generator=g)
    feats = 0.5 * centers[labels] + torch.randn(n, dim, generator=g)
    return Features(features=feats, labels=labels)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny ops run ~30x faster on one thread than on two contended ones on shared CPUs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
