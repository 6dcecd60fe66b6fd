"""Width gates: prefix masks per input, a differentiable level choice, calibration, MACs, save/load."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
import timm
import torch

import timm_gated_ssl
from tests.compact.common import sharpen_width_gates, spread_gates
from tests.compute.slicing import sliced_copy
from tests.compute.test_count_macs import flops_macs
from tests.helpers import randomize_norms
from timm_gated_ssl import (
    BoundLoss,
    ComputeLoss,
    attach_gates,
    calibrate_budget,
    count_macs,
    gate_config,
    gate_masks,
    gate_mode,
    iter_gates,
    set_budget,
)
from timm_gated_ssl.gates import GateConfig, WidthGate, level_sizes
from timm_gated_ssl.gates.width import straight_through_level


def _width_model(name: str = "resnet18", *, levels: int = 8, seed: int = 0, **kwargs: object) -> torch.nn.Module:
    """A width-gated timm ResNet (one block per stage) with random norms and gates whose level varies
    per input."""
    torch.manual_seed(seed)
    kwargs.setdefault("layers", (1, 1, 1, 1))
    model = attach_gates(timm.create_model(name, num_classes=0, **kwargs), budget=0.3, gate_type="width",
                         levels=levels)
    randomize_norms(model, seed=seed)
    sharpen_width_gates(model, seed=seed)
    model.eval()
    spread_gates(model, _images(32, seed=seed + 1))
    return model


def _images(batch: int, *, size: int = 32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=gen) * (torch.rand(batch, 1, 1, 1, generator=gen) * 2 + 0.2)


def _prefix_lengths(mask: torch.Tensor) -> torch.Tensor:
    """Length of each row's prefix; asserts the row is exactly ``[1] * s + [0] * (C - s)``."""
    lengths = mask.sum(dim=1).long()
    expected = (torch.arange(mask.shape[1])[None, :] < lengths[:, None]).to(mask.dtype)
    assert torch.equal(mask, expected), "a width-gate mask is not a 0/1 prefix"
    return lengths


def test_level_sizes() -> None:
    assert level_sizes(64, 8) == (8, 16, 24, 32, 40, 48, 56, 64)
    assert level_sizes(10, 4) == (3, 5, 8, 10)  # ceil(10 k / 4)
    assert level_sizes(128, 8, groups=32) == tuple(16 * k for k in range(1, 9))  # whole groups of 4
    assert level_sizes(64, 3, groups=32) == (22, 44, 64)  # ceil(32 k / 3) groups of 2
    with pytest.raises(ValueError, match="2..4"):
        level_sizes(4, 5)
    with pytest.raises(ValueError, match="2..32"):
        level_sizes(128, 64, groups=32)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnext50_32x4d"])
@pytest.mark.parametrize("training", [True, False])
def test_masks_are_prefixes_at_the_levels(name: str, training: bool) -> None:
    model = _width_model(name).train(training)
    with torch.no_grad(), gate_mode(model, "gated"):
        model(_images(16))
    distinct = 0
    for block, masks in gate_masks(model).items():
        gate = model.get_submodule(block).dyn_gate
        assert isinstance(gate, WidthGate) and len(masks) == len(gate.widths)
        lengths = [_prefix_lengths(m) for m in masks]
        # one level per image and block, shared by its gated widths
        index = [torch.tensor([sizes.index(int(s)) for s in ls]) for ls, sizes in zip(lengths, gate.sizes)]
        assert all(torch.equal(index[0], i) for i in index)
        distinct = max(distinct, int(index[0].unique().numel()))
    assert distinct > 1  # the level really depends on the input


def test_level_choice_is_differentiable_in_training_and_deterministic_in_eval() -> None:
    model = _width_model("resnet18").train()
    x = _images(8)
    with gate_mode(model, "gated"):
        out = model(x)
    masks = gate_masks(model)
    width = sum(m.sum() for ms in masks.values() for m in ms)
    (out.square().mean() + 1e-3 * width).backward()
    for _, gate in iter_gates(model):
        grad = gate.net.expand.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0

    # training samples levels (Gumbel noise): repeated forwards differ somewhere
    with torch.no_grad(), gate_mode(model, "gated"):
        draws = []
        for _ in range(3):
            model(x)
            draws.append(torch.cat([m for ms in gate_masks(model).values() for m in ms], 1))
    assert any(not torch.equal(draws[0], d) for d in draws[1:])

    # eval: deterministic, the argmax of the gate network's scores
    model.eval()
    with torch.no_grad(), gate_mode(model, "gated"):
        model(x)
        first = {k: tuple(m.clone() for m in v) for k, v in gate_masks(model).items()}
        model(x)
    for name, gate in iter_gates(model):
        assert all(torch.equal(a, b) for a, b in zip(first[name], gate.masks))
        lengths = _prefix_lengths(gate.masks[0])
        assert set(lengths.tolist()) <= set(gate.sizes[0])


def test_straight_through_level_estimator() -> None:
    torch.manual_seed(0)
    scores = torch.randn(64, 5, requires_grad=True)
    onehot = straight_through_level(scores, tau=2 / 3, stochastic=True)
    assert torch.equal(onehot.sum(1), torch.ones(64)) and set(onehot.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(onehot.argmax(1), scores.argmax(1))  # the Gumbel noise moves some choices
    (onehot * torch.arange(5.0)).sum().backward()  # gradient of the softmax reaches the scores
    assert scores.grad is not None and scores.grad.abs().sum() > 0
    # noise scale 0: the deterministic choice, still differentiable
    quiet = straight_through_level(scores, tau=2 / 3, stochastic=True, noise_scale=0.0)
    assert torch.equal(quiet.argmax(1), scores.argmax(1)) and quiet.requires_grad
    det = straight_through_level(scores, tau=2 / 3, stochastic=False)
    assert torch.equal(det.argmax(1), scores.argmax(1)) and not det.requires_grad


def test_budget_losses_reach_the_width_gates() -> None:
    model = _width_model("resnet18").train()
    x = _images(8)
    with gate_mode(model, "gated"):
        model(x)
    loss = ComputeLoss(0.3)(model, x) + BoundLoss(0.3)(model, progress=0.0)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert all(g.net.expand.weight.grad is not None and g.net.expand.weight.grad.abs().sum() > 0
               for _, g in iter_gates(model))


def test_offset_is_a_price_per_width_and_moves_levels_monotonically() -> None:
    model = _width_model("resnet18")
    x = _images(16)
    block_inputs: dict[str, torch.Tensor] = {}
    handles = [model.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: block_inputs.__setitem__(n, a[0]))
               for n, _ in iter_gates(model)]
    with torch.no_grad(), gate_mode(model, "gated"):
        model(x)
    for handle in handles:
        handle.remove()

    offsets = [-float("inf"), -20.0, -2.0, -0.5, 0.0, 0.5, 2.0, 20.0, float("inf")]
    for name, gate in iter_gates(model):
        h = block_inputs[name]
        seen = []
        for offset in offsets:
            gate.logit_offset.fill_(offset)
            with torch.no_grad():
                seen.append(gate.compute_masks(h)[0].sum(1))
            # the choice is argmax_k(a_k - offset * k / L), computed here from the gate network alone
            if abs(offset) < float("inf"):
                with torch.no_grad():
                    scores = gate.net(h.mean(dim=(2, 3))) - offset * torch.arange(1, 9) / 8
                expected = torch.tensor([gate.sizes[0][k] for k in scores.argmax(1)], dtype=seen[-1].dtype)
                assert torch.equal(seen[-1], expected)
        for lower, higher in itertools.pairwise(seen):  # a higher price never widens an input's choice
            assert (higher <= lower).all()
        assert (seen[0] == gate.widths[0]).all() and (seen[-1] == gate.sizes[0][0]).all()
        assert len({tuple(s.tolist()) for s in seen}) > 3  # the offsets in between move levels


def test_calibration_and_set_budget_with_width_gates() -> None:
    model = _width_model("resnet18")
    loader = [_images(16, seed=s) for s in (3, 4)]
    for target in (0.3, 0.5):
        result = calibrate_budget(model, loader, target, tol=0.03)
        assert abs(result.mac_fraction - target) <= 0.03
    set_budget(model, 0.3)
    assert abs(float(count_macs(model, torch.cat(loader)).ratio.mean()) - 0.3) <= 0.03


def test_macs_equal_a_physically_sliced_copy_per_input() -> None:
    model = _width_model("resnet50")
    x = _images(4)
    counted = count_macs(model, x)
    with torch.no_grad(), gate_mode(model, "gated"):
        model(x)
    masks = gate_masks(model)
    for i in range(x.shape[0]):
        sliced = sliced_copy(model, {n: tuple(m[i] for m in ms) for n, ms in masks.items()})
        assert flops_macs(sliced, x[i : i + 1]) == counted.gated[i]


def test_bad_gate_type_and_levels_are_refused_with_the_valid_values() -> None:
    with pytest.raises(ValueError, match="channel, width"):
        attach_gates(timm.create_model("resnet18"), budget=0.3, gate_type="slim")
    with pytest.raises(ValueError, match=">= 2"):
        timm.create_model("gated_resnet18", budget=0.3, gate_type="width", gate_levels=1)
    with pytest.raises(ValueError, match="2..64"):
        attach_gates(timm.create_model("resnet18"), budget=0.3, gate_type="width", levels=65)
    with pytest.raises(ValueError, match="valid gate types"):
        GateConfig(gate_type="Width")
    resnet = timm.create_model("resnet18")
    with pytest.raises(ValueError, match=r"block 'layer1\.0': gate_levels=65 .*64 channels.* 2\.\.64"):
        attach_gates(resnet, budget=0.3, gate_type="width", levels=65)
    assert not timm_gated_ssl.has_gates(resnet)  # nothing half-attached
    # (ViTs take width gates too, bounded by their heads: tests/gates/test_vit_width.py)


def test_gate_type_round_trips_through_local_dir(tmp_path: Path) -> None:
    model = timm.create_model("gated_resnet18_cifar", budget=0.3, gate_type="width", gate_levels=4, num_classes=0,
                              layers=(1, 1, 1, 1))
    randomize_norms(model)
    model.eval()
    calibrate_budget(model, [_images(16, size=8)], 0.4, tol=0.05)
    timm.models.save_for_hf(model, tmp_path)
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    # the operating point saved is the calibrated budget (calibrate_budget records it)
    assert gate_config(loaded) == dataclasses.replace(gate_config(model), budget=0.4)
    assert gate_config(loaded).gate_type == "width" and gate_config(loaded).levels == 4
    assert all(isinstance(g, WidthGate) and g.levels == 4 for _, g in iter_gates(loaded))
    assert timm_gated_ssl.calibrated_budgets(loaded) == timm_gated_ssl.calibrated_budgets(model)
    x = _images(4, size=8)
    with torch.no_grad(), gate_mode(model, "gated"), gate_mode(loaded, "gated"):
        assert torch.equal(model(x), loaded(x))
