"""Linear evaluation of frozen features: a linear classifier trained on precomputed features.

The standard protocol of self-supervised learning (and the paper's headline metric, Krishna et al.,
BMVC 2023, Table 1): freeze the backbone, extract pooled features once (see
:func:`~timm_gated_ssl.eval.features.extract_features`), train one linear layer with cross-entropy
on the training features, report top-1 on the test features. Here the layer is trained with SGD
(momentum 0.9, Nesterov) and a cosine learning-rate schedule on standardised features (mean and std
from the training set), so a probe over 10k x 512 features takes seconds on a CPU. The paper
reports the mean of 5 runs: see :func:`linear_probe_repeated`.

Example:
    >>> result = linear_probe(train, test, num_classes=10)  # doctest: +SKIP
    >>> result.top1  # doctest: +SKIP
    87.2
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from timm_gated_ssl.eval.features import Features

__all__ = [
    "LinearProbeResult",
    "RepeatedLinearProbeResult",
    "linear_probe",
    "linear_probe_repeated",
]


@dataclass(frozen=True)
class LinearProbeResult:
    """Outcome of one linear probe.

    Attributes:
        top1: Test top-1 accuracy (%).
        top5: Test top-5 accuracy (%), or ``None`` when there are fewer than 5 classes.
        train_top1: Training-set top-1 accuracy (%) of the final classifier.
        epochs: Epochs trained.
        seed: Seed of the initialisation and of the batch order.
    """

    top1: float
    top5: float | None
    train_top1: float
    epochs: int
    seed: int


@dataclass(frozen=True)
class RepeatedLinearProbeResult:
    """Linear probes repeated over several seeds (the paper reports the mean of 5 runs).

    Attributes:
        top1_mean: Mean test top-1 (%) over the runs.
        top1_std: Sample standard deviation (ddof=1) of the test top-1; 0.0 for a single run.
        runs: The individual results, in seed order.
    """

    top1_mean: float
    top1_std: float
    runs: tuple[LinearProbeResult, ...]


def _check_positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_number(name: str, value: object, *, allow_zero: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):  # type: ignore[operator]
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _check_inputs(train: Features, test: Features, num_classes: int) -> None:
    _check_positive_int("num_classes", num_classes, minimum=2)
    if len(train) == 0:
        raise ValueError("the training features are empty; a linear probe needs samples")
    if len(test) == 0:
        raise ValueError("the test features are empty; nothing to evaluate")
    if train.dim != test.dim:
        raise ValueError(
            f"feature dimensions differ: train has D={train.dim}, test has D={test.dim}"
        )
    for name, bank in (("train", train), ("test", test)):
        lo, hi = int(bank.labels.min()), int(bank.labels.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{name} labels must lie in [0, {num_classes - 1}] (num_classes={num_classes}), "
                f"found values in [{lo}, {hi}]"
            )


@torch.no_grad()
def _topk_accuracy(logits: Tensor, labels: Tensor, k: int) -> float:
    top = logits.topk(k, dim=1).indices
    return 100.0 * int((top == labels[:, None]).any(dim=1).sum()) / int(labels.shape[0])


def linear_probe(
    train: Features,
    test: Features,
    *,
    num_classes: int,
    epochs: int = 100,
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    batch_size: int = 256,
    standardize: bool = True,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> LinearProbeResult:
    """Train a linear classifier on frozen training features and evaluate it on test features.

    Args:
        train: Training features and labels (e.g. 10k labelled images).
        test: Test features and labels.
        num_classes: Number of classes (>= 2); labels must lie in ``[0, num_classes)``.
        epochs: Passes over the training features (>= 1).
        lr: Peak SGD learning rate (> 0), annealed to 0 with a cosine schedule over all steps.
        weight_decay: L2 penalty on the weights (>= 0; the bias is not decayed).
        batch_size: Mini-batch size (>= 1).
        standardize: Shift and scale every feature by the training mean and std first.
        seed: Seeds the initialisation and batch order (the global RNG is left untouched).
        device: Where to train; defaults to the CPU.

    Returns:
        Test top-1 / top-5 and train top-1 in percent.

    Raises:
        ValueError: On empty banks, mismatched dimensions, labels outside ``[0, num_classes)`` or an
            out-of-range option.
        TypeError: If ``seed`` is not an integer.
    """
    _check_inputs(train, test, num_classes)
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    lr = _check_number("lr", lr, allow_zero=False)
    weight_decay = _check_number("weight_decay", weight_decay, allow_zero=True)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    dev = torch.device(device) if device is not None else torch.device("cpu")

    x_train = train.features.to(dev, torch.float32)
    x_test = test.features.to(dev, torch.float32)
    y_train = train.labels.to(dev, torch.long)
    y_test = test.labels.to(dev, torch.long)
    if standardize:
        mean = x_train.mean(dim=0, keepdim=True)
        std = x_train.std(dim=0, unbiased=False, keepdim=True).clamp_min(1e-6)
        x_train = (x_train - mean) / std
        x_test = (x_test - mean) / std

    gen = torch.Generator(device="cpu").manual_seed(seed)
    bound = 1.0 / math.sqrt(train.dim)  # nn.Linear's default initialisation range
    weight = ((torch.rand(num_classes, train.dim, generator=gen) * 2 - 1) * bound).to(dev)
    bias = ((torch.rand(num_classes, generator=gen) * 2 - 1) * bound).to(dev)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.SGD(
        [
            {"params": [weight], "weight_decay": weight_decay},
            {"params": [bias], "weight_decay": 0.0},
        ],
        lr=lr,
        momentum=0.9,
        nesterov=True,
    )
    n = len(train)
    steps_per_epoch = math.ceil(n / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=epochs * steps_per_epoch
    )
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen).to(dev)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                loss = F.cross_entropy(F.linear(x_train[idx], weight, bias), y_train[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()

    with torch.no_grad():
        test_logits = F.linear(x_test, weight, bias)
        train_logits = F.linear(x_train, weight, bias)
    return LinearProbeResult(
        top1=_topk_accuracy(test_logits, y_test, 1),
        top5=_topk_accuracy(test_logits, y_test, 5) if num_classes >= 5 else None,
        train_top1=_topk_accuracy(train_logits, y_train, 1),
        epochs=epochs,
        seed=seed,
    )


def linear_probe_repeated(
    train: Features,
    test: Features,
    *,
    num_classes: int,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    epochs: int = 100,
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    batch_size: int = 256,
    standardize: bool = True,
    device: torch.device | str | None = None,
) -> RepeatedLinearProbeResult:
    """Run :func:`linear_probe` once per seed and summarise the test top-1.

    Args:
        train: Training features and labels.
        test: Test features and labels.
        num_classes: Number of classes (>= 2).
        seeds: One probe per seed; at least one, no repeats.
        epochs: As :func:`linear_probe`.
        lr: As :func:`linear_probe`.
        weight_decay: As :func:`linear_probe`.
        batch_size: As :func:`linear_probe`.
        standardize: As :func:`linear_probe`.
        device: As :func:`linear_probe`.

    Returns:
        Mean and sample standard deviation of the test top-1, and every run.

    Raises:
        ValueError: If ``seeds`` is empty or repeats a seed, or as :func:`linear_probe`.
    """
    seeds = tuple(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one seed, got an empty sequence")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds!r}")
    runs = tuple(
        linear_probe(
            train,
            test,
            num_classes=num_classes,
            epochs=epochs,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            standardize=standardize,
            seed=seed,
            device=device,
        )
        for seed in seeds
    )
    tops = [run.top1 for run in runs]
    std = statistics.stdev(tops) if len(tops) > 1 else 0.0
    return RepeatedLinearProbeResult(top1_mean=statistics.fmean(tops), top1_std=std, runs=runs)
