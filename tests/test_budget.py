"""Budget losses (compute and bound) and the optimizer parameter groups."""

from __future__ import annotations

import math

import pytest
import timm
import torch

import timm_gated_ssl  # noqa: F401
from timm_gated_ssl import InvalidBudgetError, gate_masks, gate_mode, iter_gates
from timm_gated_ssl.budget import BoundLoss, BudgetLoss, ComputeLoss, gated_param_groups
from timm_gated_ssl.compute import cost_table, gated_macs


def tiny(budget: float = 0.3) -> torch.nn.Module:
    return timm.create_model("gated_resnet18_cifar", layers=(1, 1, 1, 1), budget=budget)


def test_paper_defaults() -> None:
    assert ComputeLoss().weight == 5.0
    bound = BoundLoss()
    assert (bound.weight, bound.alpha, bound.decay) == (1.0, 0.02, 10.0)
    assert (bound.schedule, bound.centre) == ("progress", "sqrt")
    with pytest.raises(InvalidBudgetError):
        ComputeLoss(budget=1.5)


def test_compute_loss_value_and_gradient() -> None:
    model = tiny(0.3).train()
    images = torch.randn(4, 3, 32, 32)
    with gate_mode(model, "gated"):
        model(images)
    loss = ComputeLoss()(model, images)  # budget from the model's gates
    ratio = gated_macs(model, images).mean() / cost_table(model, images).dense
    torch.testing.assert_close(loss, (5 * (ratio - 0.3) ** 2).float())
    assert loss.dtype == torch.float32
    loss.backward()
    for _, gate in iter_gates(model):
        assert gate.net.expand.weight.grad is not None and gate.net.expand.weight.grad.abs().sum() > 0


def test_compute_loss_needs_a_gated_forward() -> None:
    model = tiny()
    with pytest.raises(RuntimeError, match="gated mode"):
        ComputeLoss()(model, (3, 32, 32))


def test_bound_loss_hand_values() -> None:
    model = tiny(0.25)
    loss = BoundLoss(schedule="epoch")
    assert loss.bounds(0.25, epoch=0) == (0.5, 0.5)
    lower, upper = loss.bounds(0.25, epoch=100)
    assert lower == pytest.approx(0.5 * math.exp(-2)) and upper == pytest.approx(1 - 0.5 * math.exp(-2))
    low = torch.zeros(2, 8)
    low[:, :2] = 1  # density 0.25
    high = torch.ones(2, 8)
    high[:, :2] = 0  # density 0.75
    masks = {"a": (low,), "b": (high,)}
    # epoch 0: bounds [0.5, 0.5]: each term is a mean over the two widths of one squared violation
    torch.testing.assert_close(loss(model, epoch=0, masks=masks), torch.tensor(0.0625 / 2 + 0.0625 / 2))
    inside = {"a": (torch.full((2, 8), 0.0).index_fill_(1, torch.arange(4), 1.0),)}
    assert loss(model, epoch=0, masks=inside) == 0
    assert loss(model, epoch=1000, masks=masks) == 0  # bounds relaxed to about [0, 1]


@pytest.mark.parametrize("progress", [0.0, 0.1, 0.5, 1.0])
def test_progress_schedule_values(progress: float) -> None:
    """p = exp(-decay * progress): 1 at the start, e^-10 at the end of any run."""
    loss = BoundLoss(decay=10.0)
    p = math.exp(-10.0 * progress)
    assert loss.relaxation(progress=progress) == pytest.approx(p)
    assert loss.bounds(0.36, progress=progress) == pytest.approx((0.6 * p, 1 - p + 0.6 * p))
    assert BoundLoss(decay=3.0).relaxation(progress=progress) == pytest.approx(math.exp(-3.0 * progress))


def test_progress_schedule_equals_paper_schedule_over_500_epochs() -> None:
    """decay 10 over a 500-epoch run is the paper's alpha 0.02 per epoch, at every step."""
    progress, epoch = BoundLoss(schedule="progress"), BoundLoss(schedule="epoch")
    steps_per_epoch, epochs = 97, 500
    for step in (0, 1, 96, 97, 4850, 24_000, 48_499, 48_500):
        a = progress.bounds(0.3, progress=step / (epochs * steps_per_epoch))
        b = epoch.bounds(0.3, epoch=step / steps_per_epoch)
        assert a == pytest.approx(b, rel=1e-12)


def test_linear_centre() -> None:
    loss = BoundLoss(centre="linear")
    assert loss.bounds(0.3, progress=0.0) == pytest.approx((0.3, 0.3))
    assert BoundLoss().bounds(0.3, progress=0.0) == pytest.approx((math.sqrt(0.3), math.sqrt(0.3)))
    p = math.exp(-5.0)
    assert loss.bounds(0.3, progress=0.5) == pytest.approx((0.3 * p, 1 - p + 0.3 * p))


def test_bound_schedule_errors() -> None:
    with pytest.raises(ValueError, match="needs progress="):
        BoundLoss().relaxation(epoch=3)
    with pytest.raises(ValueError, match="needs epoch="):
        BoundLoss(schedule="epoch").relaxation(progress=0.5)
    with pytest.raises(ValueError, match=r"progress must be in \[0, 1\]"):
        BoundLoss().relaxation(progress=1.5)
    with pytest.raises(ValueError, match="valid: progress, epoch"):
        BoundLoss(schedule="steps")
    with pytest.raises(ValueError, match="valid: sqrt, linear"):
        BoundLoss(centre="square")
    with pytest.raises(ValueError, match="decay and alpha must be >= 0"):
        BoundLoss(decay=-1.0)


def test_budget_loss_combines_both() -> None:
    model = tiny(0.3).train()
    images = torch.randn(4, 3, 32, 32)
    with gate_mode(model, "gated"):
        model(images)
    out = BudgetLoss()(model, images, progress=0.05)
    masks = gate_masks(model)
    torch.testing.assert_close(out.compute, ComputeLoss()(model, images, masks))
    torch.testing.assert_close(out.bound, BoundLoss()(model, progress=0.05, masks=masks))
    paper = BudgetLoss(bound_schedule="epoch", alpha=0.5, bound_centre="linear")(model, images, epoch=3)
    torch.testing.assert_close(
        paper.bound, BoundLoss(schedule="epoch", alpha=0.5, centre="linear")(model, epoch=3, masks=masks)
    )
    torch.testing.assert_close(out.loss, out.compute + out.bound)
    assert not out.mac_ratio.requires_grad


@pytest.mark.parametrize("target", [0.2, 0.8])
def test_budget_loss_alone_moves_ratio_toward_target(target: float) -> None:
    """A few steps on the budget loss alone move the training-mode MAC ratio (what the loss
    sees: stochastic gates) toward t_d. The deterministic eval ratio can overshoot: that is
    what calibrate_budget corrects."""
    torch.manual_seed(0)
    model = tiny(target).train()
    images = torch.randn(4, 3, 16, 16)
    gate_params = [p for _, g in iter_gates(model) for p in g.parameters()]
    optimizer = torch.optim.Adam(gate_params, lr=0.02)
    loss_fn = BudgetLoss()
    ratios = []
    for _ in range(7):
        with gate_mode(model, "gated"):
            model(images)
        out = loss_fn(model, images, progress=0.0)
        ratios.append(out.mac_ratio.item())
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    before, after = ratios[0], sum(ratios[-2:]) / 2
    assert abs(after - target) < abs(before - target) - 0.1, ratios


def test_param_groups() -> None:
    model = tiny()
    groups = gated_param_groups(model, weight_decay=1e-4)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"decay", "gates", "no_decay"}
    ids = {n: {id(p) for p in g["params"]} for n, g in by_name.items()}
    gate = next(iter_gates(model))[1]
    assert id(gate.net.reduce.weight) in ids["gates"] and id(gate.net.expand.weight) in ids["gates"]
    assert id(gate.net.norm.weight) in ids["no_decay"]
    assert id(model.conv1.weight) in ids["decay"] and id(model.bn1.weight) in ids["no_decay"]
    assert id(model.fc.bias) in ids["no_decay"] and id(model.fc.weight) in ids["decay"]
    assert by_name["decay"]["weight_decay"] == 1e-4
    assert by_name["gates"]["weight_decay"] == 0 and by_name["no_decay"]["weight_decay"] == 0
    assert by_name["no_decay"]["lars_exclude"] is True
    assert sum(len(v) for v in ids.values()) == len(list(model.parameters()))
    torch.optim.SGD(groups, lr=0.1)  # accepted by torch optimizers
    model.conv1.weight.requires_grad_(False)
    skipped = gated_param_groups(model, no_weight_decay=["fc."])
    flat = {id(p) for g in skipped for p in g["params"]}
    assert id(model.conv1.weight) not in flat
    assert id(model.fc.weight) in {id(p) for g in skipped if g["name"] == "no_decay" for p in g["params"]}


def test_gate_lr_scale_puts_every_gate_parameter_in_a_scaled_group() -> None:
    model = tiny()
    plain = {g["name"]: g for g in gated_param_groups(model)}
    assert set(plain) == {"decay", "gates", "no_decay"} and all("lr_scale" not in g for g in plain.values())
    groups = {g["name"]: g for g in gated_param_groups(model, weight_decay=1e-4, gate_lr_scale=5.0)}
    assert set(groups) == {"decay", "gates", "gate_norms", "no_decay"}
    ids = {n: {id(p) for p in g["params"]} for n, g in groups.items()}
    nets = {id(p) for _, g in iter_gates(model) for p in g.net.parameters()}
    copies = {id(p) for _, g in iter_gates(model) for p in g.norms.parameters()}  # the gated mode's BN
    assert copies and ids["gates"] | ids["gate_norms"] == nets
    assert ids["gates"] == {id(p) for _, g in iter_gates(model) for p in g.parameters() if p.ndim > 1}
    assert not nets & (ids["decay"] | ids["no_decay"]) and copies <= ids["no_decay"]
    assert groups["gates"]["lr_scale"] == groups["gate_norms"]["lr_scale"] == 5.0
    assert "lr_scale" not in groups["decay"] and "lr_scale" not in groups["no_decay"]
    # The gates' norms keep the settings they had in "no_decay"; the other groups are unchanged.
    assert (groups["gate_norms"]["weight_decay"], groups["gate_norms"]["lars_exclude"]) == (0.0, True)
    assert ids["decay"] == {id(p) for p in plain["decay"]["params"]}
    assert ids["no_decay"] | ids["gate_norms"] == {id(p) for p in plain["no_decay"]["params"]}
    assert sum(len(v) for v in ids.values()) == len(list(model.parameters()))


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_gate_lr_scale_must_be_positive(scale: float) -> None:
    with pytest.raises(ValueError, match=r"gate_lr_scale must be > 0"):
        gated_param_groups(tiny(), gate_lr_scale=scale)
