"""Linear probe against scikit-learn's LogisticRegression on the bundled digits data."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from timm_gated_ssl.eval.features import Features
from timm_gated_ssl.eval.linear_probe import linear_probe, linear_probe_repeated

from .conftest import random_features


@pytest.fixture(scope="module")
def digits() -> tuple[Features, Features, float]:
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    reference = LogisticRegression(max_iter=5000).fit(x_tr, y_tr)  # raw pixels, independent
    sk_top1 = 100.0 * reference.score(x_te, y_te)
    train = Features(torch.tensor(x_tr, dtype=torch.float32), torch.tensor(y_tr))
    test = Features(torch.tensor(x_te, dtype=torch.float32), torch.tensor(y_te))
    return train, test, sk_top1


def test_matches_sklearn_logistic_regression(digits: tuple[Features, Features, float]) -> None:
    train, test, sk_top1 = digits
    assert sk_top1 > 93.0  # sanity of the reference itself
    result = linear_probe(train, test, num_classes=10, epochs=50)
    assert abs(result.top1 - sk_top1) < 2.5, (result.top1, sk_top1)
    assert result.train_top1 >= result.top1 - 1.0
    assert result.top5 is not None and result.top5 >= result.top1
    assert result.epochs == 50 and result.seed == 0


def test_without_standardization_still_linear(digits: tuple[Features, Features, float]) -> None:
    train, test, sk_top1 = digits
    result = linear_probe(train, test, num_classes=10, epochs=50, lr=1e-3, standardize=False)
    assert abs(result.top1 - sk_top1) < 3.0, (result.top1, sk_top1)


def test_seeded_and_leaves_global_rng_alone() -> None:
    train = random_features(200, 8, 3, seed=0)
    test = random_features(100, 8, 3, seed=1)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = linear_probe(train, test, num_classes=3, epochs=3, seed=7)
    after = torch.rand(1)
    b = linear_probe(train, test, num_classes=3, epochs=3, seed=7)
    assert a == b
    assert torch.equal(before, after)
    assert a.top5 is None  # fewer than 5 classes


def test_repeated_mean_and_std() -> None:
    train = random_features(200, 8, 3, seed=0)
    test = random_features(100, 8, 3, seed=1)
    rep = linear_probe_repeated(train, test, num_classes=3, seeds=(0, 1, 2), epochs=3, lr=0.5)
    tops = torch.tensor([r.top1 for r in rep.runs], dtype=torch.float64)
    assert [r.seed for r in rep.runs] == [0, 1, 2]
    assert rep.top1_mean == pytest.approx(float(tops.mean()))
    assert rep.top1_std == pytest.approx(float(tops.std(unbiased=True)))
    single = linear_probe_repeated(train, test, num_classes=3, seeds=[4], epochs=1)
    assert single.top1_std == 0.0 and single.top1_mean == single.runs[0].top1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 1}, "num_classes must be an integer >= 2"),
        ({"num_classes": 2}, r"labels must lie in \[0, 1\].*\[0, 2\]"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"lr": -1.0}, "lr must be a finite number > 0"),
        ({"weight_decay": float("nan")}, "weight_decay must be a finite number >= 0"),
        ({"batch_size": 0}, "batch_size must be"),
    ],
)
def test_bad_options(kwargs: dict, match: str) -> None:
    train = random_features(20, 4, 3, seed=0)
    options = {"num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        linear_probe(train, train, **options)


def test_bad_inputs() -> None:
    train = random_features(20, 4, 3, seed=0)
    with pytest.raises(ValueError, match="D=4.*D=5"):
        linear_probe(train, random_features(5, 5, 3, seed=1), num_classes=3)
    empty = Features(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="training features are empty"):
        linear_probe(empty, train, num_classes=3)
    with pytest.raises(ValueError, match="seeds must name at least one"):
        linear_probe_repeated(train, train, num_classes=3, seeds=())
    with pytest.raises(ValueError, match="seeds must be distinct"):
        linear_probe_repeated(train, train, num_classes=3, seeds=(1, 1))
