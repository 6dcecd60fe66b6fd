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
from timm_gated_ssl.recipe.optim import build_optimizer, build_scheduler

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


def _expected(step: int, total: int, warmup: int, *, peak: float = PEAK, min_lr: float = MIN_LR) -> float:
    if step < warmup:
        return peak * step / warmup
    return min_lr + 0.5 * (peak - min_lr) * (1 + math.cos(math.pi * (step - warmup) / (total - 1 - warmup)))


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


def test_gate_lr_scale_trains_the_gates_at_that_multiple_of_the_schedule() -> None:
    """Every update moves a gate weight by ``scale * rate * grad`` and any other weight by
    ``rate * grad`` (SGD without momentum or decay), ``rate`` the hand-computed schedule."""
    import timm

    import timm_gated_ssl
    from timm_gated_ssl.budget import ComputeLoss

    torch.manual_seed(0)
    model = timm.create_model("gated_resnet18_cifar", layers=(1, 1, 1, 1), budget=0.3).train()
    config = PretrainConfig(optimizer="sgd", momentum=0.0, weight_decay=0.0, gate_lr_scale=10.0)
    peak, min_lr = 0.004, 0.0001  # small enough that the gates stay trainable at 10x
    optimizer = build_optimizer(model, config, lr=peak)
    total, warmup = 6, 2
    scheduler = build_scheduler(optimizer, total_updates=total, warmup_updates=warmup, min_lr=min_lr)
    gate = next(timm_gated_ssl.iter_gates(model))[1].net.reduce.weight
    conv = model.conv1.weight
    for step in range(total):
        rate = _expected(step, total, warmup, peak=peak, min_lr=min_lr)
        scales = {g["name"]: g["lr"] / rate for g in optimizer.param_groups} if rate else {}
        assert scales in ({}, pytest.approx({"decay": 1.0, "gates": 10.0, "gate_norms": 10.0, "no_decay": 1.0}))
        images = torch.randn(4, 3, 16, 16)
        with timm_gated_ssl.gate_mode(model, "gated"):
            loss = model(images).square().mean() + ComputeLoss()(model, images)
        optimizer.zero_grad()
        loss.backward()
        before = {"gate": gate.detach().clone(), "conv": conv.detach().clone()}
        grads = {"gate": gate.grad.clone(), "conv": conv.grad.clone()}
        optimizer.step()
        scheduler.step_update(step + 1)
        for name, param, scale in (("gate", gate, 10), ("conv", conv, 1)):
            rounding = 2 * torch.finfo(torch.float32).eps * before[name].abs().max().item()  # of param + update
            torch.testing.assert_close(param.detach() - before[name], -scale * rate * grads[name],
                                       rtol=1e-3, atol=rounding)
        assert grads["gate"].abs().sum() > 0  # the gates were trained, not idle


def test_gate_lr_scale_is_refused_without_gates_or_at_zero() -> None:
    with pytest.raises(ConfigError, match=r"vanilla run \(gating: false\) has no gates.*got gate_lr_scale=2.0"):
        PretrainConfig(gating=False, gate_lr_scale=2.0)
    with pytest.raises(ConfigError, match=r"gate_lr_scale"):
        PretrainConfig(gate_lr_scale=0.0)
