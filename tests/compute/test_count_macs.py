"""count_macs: dense counts against torch's FlopCounterMode, gated counts against a physically
sliced copy, the paper's totals, and the differentiable training path."""

from __future__ import annotations

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import timm_gated_ssl
from tests.compute.slicing import sliced_copy
from tests.helpers import randomize_norms
from timm_gated_ssl import attach_gates, gate_masks, gate_mode, iter_gates
from timm_gated_ssl.compute import MacCount, cost_table, count_macs, gated_macs

# (timm name, create kwargs, image size): basic/bottleneck, deep stems, avg-down, grouped + SE,
# ECA (conv1d), blur anti-aliasing, the CIFAR stem
ARCHS = [
    ("resnet10t", {}, 64),
    ("resnet26d", {}, 32),
    ("seresnext26d_32x4d", {}, 32),
    ("ecaresnet26t", {}, 32),
    ("resnetblur18", {}, 32),
    ("resnet18_cifar", {"cifar_stem_padding": 2}, 32),
]


def flops_macs(model: torch.nn.Module, images: torch.Tensor) -> int:
    """Total MACs per image according to torch (which counts 2 FLOPs per MAC)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(images)
    total = counter.get_total_flops()
    assert total % (2 * images.shape[0]) == 0
    return total // (2 * images.shape[0])


def force_random_masks(model: torch.nn.Module, batch: int, seed: int = 0) -> None:
    """Replace every gate's decision by fixed random masks (a different density per block)."""
    gen = torch.Generator().manual_seed(seed)
    for _, gate in iter_gates(model):
        density = 0.2 + 0.6 * torch.rand((), generator=gen)
        masks = []
        for width in gate.widths:
            m = (torch.rand(batch, width, generator=gen) < density).float()
            m[:, 0] = 1.0  # never an empty width
            masks.append(m)
        gate.compute_masks = lambda x, masks=tuple(masks): masks


@pytest.mark.parametrize("name,kwargs,size", ARCHS, ids=[a[0] for a in ARCHS])
def test_dense_matches_flop_counter(name: str, kwargs: dict, size: int) -> None:
    model = timm.create_model(name, **kwargs).eval()
    images = torch.randn(2, 3, size, size)
    expected = flops_macs(model, images)
    fc = model.get_classifier()
    linear = fc.in_features * fc.out_features
    assert count_macs(model, images).dense == expected - linear
    assert count_macs(model, images, include_linear=True).dense == expected
    # attaching gates changes nothing in dense mode; gated mode adds exactly the gates' cost
    attach_gates(model, budget=0.5)
    result = count_macs(model, images)
    assert result.dense == expected - linear
    with gate_mode(model, "gated"):
        assert flops_macs(model, images) - linear == result.dense + result.gate_macs
    assert result.gate_macs == sum(g.net.macs for _, g in iter_gates(model))


@pytest.mark.parametrize("name,kwargs,size", ARCHS, ids=[a[0] for a in ARCHS])
def test_gated_matches_sliced_copy(name: str, kwargs: dict, size: int) -> None:
    model = randomize_norms(attach_gates(timm.create_model(name, **kwargs), budget=0.5)).eval()
    batch = 2
    images = torch.randn(batch, 3, size, size)
    force_random_masks(model, batch)
    result = count_macs(model, images)
    with gate_mode(model, "gated"), torch.no_grad():
        gated_out = model(images)
    masks = gate_masks(model)
    for i in range(batch):
        one = {name: tuple(m[i] for m in ms) for name, ms in masks.items()}
        sliced = sliced_copy(model, one).eval()
        assert flops_macs(sliced, images[i:i + 1]) - model.get_classifier().weight.numel() == result.gated[i]
        with torch.no_grad():
            torch.testing.assert_close(sliced(images[i:i + 1]), gated_out[i:i + 1], rtol=1e-4, atol=1e-4)
    assert (result.gated < result.dense).all()
    torch.testing.assert_close(result.ratio, result.gated / result.dense)


@pytest.mark.parametrize(
    "name,kwargs,size,expected",
    [
        ("resnet18", {}, 224, 1_813_561_344),
        ("resnet18", {}, 96, 333_103_104),
        ("resnet18_cifar", {"cifar_stem_padding": 2}, 32, 703_560_448),
        ("resnet18_cifar", {}, 32, 555_417_600),
        ("gated_resnet18_cifar", {"cifar_stem_padding": 2}, 32, 703_560_448),
    ],
)
def test_paper_dense_totals(name: str, kwargs: dict, size: int, expected: int) -> None:
    model = timm.create_model(name, **kwargs)
    assert cost_table(model, (3, size, size)).dense == expected


def test_paper_basic_block_formula() -> None:
    """A gated 3x3 BasicBlock costs 9 * H * W * |m|_1 * (C_in + C_out) (stride 1 blocks)."""
    model = timm.create_model("gated_resnet18_cifar").eval()
    images = torch.randn(3, 3, 32, 32)
    result = count_macs(model, images)
    masks = gate_masks(model)  # restored: count_macs does not leave its masks behind
    assert masks == {}
    with gate_mode(model, "gated"), torch.no_grad():
        model(images)
    masks = gate_masks(model)
    block = result.blocks["layer1.1"]
    active = masks["layer1.1"][0].sum(dim=1).double()
    torch.testing.assert_close(block.gated, 9 * 32 * 32 * active * (64 + 64))
    assert block.dense == 2 * 9 * 32 * 32 * 64 * 64


def test_model_without_gates_and_result_type() -> None:
    model = timm.create_model("resnet10t")
    result = count_macs(model, torch.randn(2, 3, 32, 32))
    assert isinstance(result, MacCount)
    assert result.gate_macs == 0 and result.blocks == {}
    assert torch.equal(result.gated, torch.full((2,), float(result.dense), dtype=torch.float64))
    assert result.mean_ratio == 1.0 and result.reduction == 0.0
    assert set(result.summary()) >= {"dense_macs", "gated_macs", "mac_fraction", "reduction"}


def test_count_macs_restores_state_and_stochastic_option() -> None:
    model = timm.create_model("gated_resnet18_cifar", layers=(1, 1, 1, 1)).train()
    bn = model.bn1
    stats = bn.running_mean.clone()
    images = torch.randn(4, 3, 32, 32)
    a, b = count_macs(model, images), count_macs(model, images)
    assert torch.equal(a.gated, b.gated)  # eval gates: deterministic
    draws = {tuple(count_macs(model, images, stochastic=True).gated.tolist()) for _ in range(3)}
    assert len(draws) > 1
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(bn.running_mean, stats)
    assert timm_gated_ssl.get_gate_mode(model) == "dense"


def test_gated_macs_matches_count_and_is_differentiable() -> None:
    model = timm.create_model("gated_resnet18_cifar", layers=(1, 1, 1, 1)).eval()
    images = torch.randn(3, 3, 32, 32)
    with gate_mode(model, "gated"), torch.no_grad():
        model(images)
    torch.testing.assert_close(gated_macs(model, images), count_macs(model, images).gated)
    # the count is multilinear in the masks: its gradient is the cost of switching one channel on
    masks = {k: tuple(m.clone().requires_grad_(True) for m in v) for k, v in gate_masks(model).items()}
    total = gated_macs(model, images, masks)
    total.sum().backward()
    name, (mask,) = next(iter(masks.items()))
    flipped = {k: tuple(m.detach().clone() for m in v) for k, v in masks.items()}
    flipped[name][0][0, 5] = 1.0 - flipped[name][0][0, 5]
    delta = gated_macs(model, images, flipped)[0] - total[0].detach()
    sign = 1.0 if mask[0, 5] == 0 else -1.0
    torch.testing.assert_close(delta, sign * mask.grad[0, 5].double())


def test_cost_table_is_cached_per_input_size() -> None:
    model = timm.create_model("gated_resnet18_cifar", layers=(1, 1, 1, 1))
    calls = []
    model.conv1.register_forward_hook(lambda *a: calls.append(1))
    t32 = cost_table(model, (3, 32, 32))
    assert cost_table(model, torch.zeros(5, 3, 32, 32)) is t32 and len(calls) == 1
    t64 = cost_table(model, (3, 64, 64))
    assert t64 is not t32 and len(calls) == 2
    assert cost_table(model, (3, 32, 32), include_linear=True).dense == t32.dense + 512 * 10
