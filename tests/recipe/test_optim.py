"""The recipes' learning-rate schedule against hand-computed values: linear warm-up from 0, the
peak at the end of the warm-up, a cosine that reaches ``min_lr`` on the last update."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.recipe.conftest import run
from timm_gated_ssl.errors import ConfigError
from timm_gated_ssl.recipe import PretrainConfig
from timm_gated_ssl.recipe.optim import build_scheduler

PEAK, MIN_LR = 0.4, 0.01


def _rates(total: int, warmup: int, min_lr: float = MIN_LR) -> list[float]:
    """The rate each update runs at, driven the way the recipes drive the scheduler."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=PEAK)
    scheduler = build_scheduler(optimizer, total_updates=total, warmup_updates=warmup, min_lr=min_lr)
    rates = []
    for step in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        scheduler.step_update(step + 1)
    return rates


def _expected(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return PEAK * step / warmup
    return MIN_LR + 0.5 * (PEAK - MIN_LR) * (1 + math.cos(math.pi * (step - warmup) / (total - 1 - warmup)))


@pytest.mark.parametrize(("total", "warmup"), [(350, 70), (120, 40), (10, 0), (5, 3)])
def test_warmup_peak_and_end_at_min_lr(total: int, warmup: int) -> None:
    rates = _rates(total, warmup)
    assert rates[0] == pytest.approx(0.0 if warmup else PEAK)
    assert rates[warmup] == pytest.approx(PEAK)
    assert rates[-1] == pytest.approx(MIN_LR)
    assert rates == pytest.approx([_expected(s, total, warmup) for s in range(total)])


def test_the_v0_1_schedule_stopped_short_and_this_one_does_not() -> None:
    # The numbers: 5 epochs with one of warm-up ended at 9.8 % of the peak (min_lr 0).
    total, warmup = 350, 70
    old_last = 0.5 * PEAK * (1 + math.cos(math.pi * (total - 1 - warmup) / total))
    assert old_last / PEAK == pytest.approx(0.098, abs=0.001)
    assert _rates(total, warmup, min_lr=0.0)[-1] == pytest.approx(0.0, abs=1e-12)


def test_impossible_warmup_is_refused() -> None:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=PEAK)
    with pytest.raises(ValueError, match="warmup_updates=10, total_updates=10"):
        build_scheduler(optimizer, total_updates=10, warmup_updates=10, min_lr=0.0)


def test_config_refuses_warmup_as_long_as_the_run() -> None:
    with pytest.raises(ConfigError, match=r"warmup_epochs \(5\) must be less than epochs \(5\)"):
        PretrainConfig(epochs=5, warmup_epochs=5)


def test_pretrain_records_final_lr(pretrain: Any, tmp_path: Path) -> None:
    # 64 images / batch 16 = 4 updates per epoch, 2 epochs, warm-up 0.5 epoch = 2 updates.
    metrics = run(pretrain, tmp_path, "--min_lr", "0.001")
    assert metrics["steps"] == 8
    assert metrics["final_lr"] == pytest.approx(0.001)
