"""Weighted k-NN against a naive per-sample loop and hand-worked cases."""

from __future__ import annotations

import math

import pytest
import torch

from timm_gated_ssl.eval.features import Features
from timm_gated_ssl.eval.knn import knn_accuracy, knn_predict

from .conftest import random_features


def naive_knn(train: Features, test: Features, k: int, t: float, c: int) -> list[int]:
    """Independent reference: one test sample at a time, Python loops, float64."""
    preds = []
    bank = [(x.double() / x.double().norm(), int(y)) for x, y in zip(train.features, train.labels)]
    for q in test.features:
        q = q.double() / q.double().norm()
        sims = sorted(((float(q @ x), y) for x, y in bank), key=lambda s: -s[0])[:k]
        votes = [0.0] * c
        for sim, y in sims:
            votes[y] += math.exp(sim / t)
        preds.append(max(range(c), key=lambda i: (votes[i], -i)))
    return preds


@pytest.mark.parametrize("k", [1, 5, 20])
@pytest.mark.parametrize("chunk_size", [7, 256])
def test_matches_naive_loop(k: int, chunk_size: int) -> None:
    train = random_features(120, 16, 4, seed=0)
    test = random_features(40, 16, 4, seed=1)
    ours = knn_predict(train, test, k=k, chunk_size=chunk_size, num_classes=4)
    assert ours.tolist() == naive_knn(train, test, k, 0.07, 4)
    expected = 100.0 * sum(p == y for p, y in zip(ours.tolist(), test.labels.tolist())) / 40
    assert knn_accuracy(train, test, k=k, chunk_size=chunk_size) == pytest.approx(expected)


def test_k1_is_cosine_nearest_neighbour() -> None:
    # Euclidean nearest neighbour of q=[1, 0] is [0.5, 0.5] (class 1), but by cosine the nearest
    # is [10, 1] (class 0): the classifier must use cosine similarity.
    train = Features(torch.tensor([[10.0, 1.0], [0.5, 0.5], [-1.0, 0.0]]), torch.tensor([0, 1, 2]))
    test = Features(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-3.0, 0.1]]), torch.tensor([0, 1, 2]))
    assert knn_predict(train, test, k=1).tolist() == [0, 1, 2]
    assert knn_accuracy(train, test, k=1) == 100.0


def test_weighted_vote_hand_worked() -> None:
    # Query [1, 0]; neighbours: one class-0 sample at cos 1, two class-1 samples at cos 0.8.
    # Unweighted majority would say class 1; exp(1/T) > 2 exp(0.8/T) for T = 0.07 says class 0,
    # while with a large T (nearly uniform weights) class 1 wins.
    train = Features(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.8, -0.6]]), torch.tensor([0, 1, 1]))
    test = Features(torch.tensor([[2.0, 0.0]]), torch.tensor([0]))
    assert knn_predict(train, test, k=3, temperature=0.07).tolist() == [0]
    assert knn_predict(train, test, k=3, temperature=10.0).tolist() == [1]


def test_num_classes_larger_than_seen_is_fine() -> None:
    train = random_features(30, 4, 3, seed=2)
    test = random_features(10, 4, 3, seed=3)
    assert (
        knn_predict(train, test, k=3, num_classes=10).tolist()
        == knn_predict(train, test, k=3).tolist()
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, r"k must be an integer in \[1, 10\]"),
        ({"k": 11}, r"k must be an integer in \[1, 10\].*got 11"),
        ({"temperature": 0.0}, "temperature must be"),
        ({"chunk_size": 0}, "chunk_size must be"),
        ({"num_classes": 2}, "num_classes must be an integer >= 3"),
    ],
)
def test_bad_options(kwargs: dict, match: str) -> None:
    train = Features(torch.randn(10, 4), torch.tensor([0, 1, 2] * 3 + [0]))
    test = Features(torch.randn(3, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=match):
        knn_accuracy(train, test, **{"k": 3, **kwargs})


def test_bad_banks() -> None:
    train = Features(torch.randn(5, 4), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="D=4.*D=3"):
        knn_accuracy(train, Features(torch.randn(2, 3), torch.zeros(2, dtype=torch.long)), k=1)
    empty = Features(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="training .*bank is empty"):
        knn_accuracy(empty, train, k=1)
    with pytest.raises(ValueError, match="test bank is empty"):
        knn_accuracy(train, empty, k=1)
    unlabeled = Features(torch.randn(2, 4), torch.full((2,), -1))
    with pytest.raises(ValueError, match="labels must be class indices >= 0"):
        knn_accuracy(train, unlabeled, k=1)
