"""Per-mode norms: the gated pass uses and updates only its copies; shared stem and downsample."""

from __future__ import annotations

import copy

import timm
import torch

from tests.helpers import randomize_norms
from timm_gated_ssl import attach_gates, gate_mode, iter_gates


def _norm_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_gated_pass_updates_only_gated_norms() -> None:
    model = attach_gates(randomize_norms(timm.create_model("resnet18", num_classes=0)), budget=0.3)
    model.train()
    block = model.layer2[0]
    dense_bn1, gated_bn1 = _norm_state(block.bn1), _norm_state(block.dyn_gate.norms["bn1"])
    assert all(torch.equal(dense_bn1[k], gated_bn1[k]) for k in dense_bn1)  # copies at attach
    downsample = _norm_state(block.downsample[1])
    with gate_mode(model, "gated"):
        model(torch.randn(4, 3, 32, 32))
    assert all(torch.equal(dense_bn1[k], v) for k, v in block.bn1.state_dict().items())
    assert not torch.equal(gated_bn1["running_mean"], block.dyn_gate.norms["bn1"].running_mean)
    # Shared downsample BN: updated by the gated pass too.
    assert not torch.equal(downsample["running_mean"], block.downsample[1].running_mean)


def test_gated_eval_uses_gated_statistics() -> None:
    model = attach_gates(randomize_norms(timm.create_model("resnet18", num_classes=0)), budget=0.3)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with gate_mode(model, "gated"):
        before = model(x)
        for _, gate in iter_gates(model):
            gate.norms["bn2"].running_mean.add_(1.0)
        after = model(x)
    assert not torch.equal(before, after)


def test_shared_bn_option_has_no_copies() -> None:
    model = attach_gates(timm.create_model("resnet18", num_classes=0), budget=0.3, separate_bn=False)
    assert all(len(g.norms) == 0 for _, g in iter_gates(model))


def test_gated_gradients_reach_gated_norm_copies_only() -> None:
    model = attach_gates(randomize_norms(timm.create_model("resnet10t", num_classes=0)), budget=0.5)
    model.train()
    with gate_mode(model, "gated"):
        model(torch.randn(4, 3, 32, 32)).sum().backward()
    block = model.layer1[0]
    assert block.bn1.weight.grad is None
    assert block.dyn_gate.norms["bn1"].weight.grad is not None
    assert block.conv1.weight.grad is not None  # conv weights are shared by the modes


def test_deepcopy_is_independent() -> None:
    model = attach_gates(randomize_norms(timm.create_model("resnet10t", num_classes=0)), budget=0.5)
    model.eval()
    twin = copy.deepcopy(model)
    x = torch.randn(2, 3, 32, 32)
    with gate_mode(model, "gated"):
        expected = model(x)
    with gate_mode(twin, "gated"):
        assert torch.equal(twin(x), expected)
        # The copy's hooks belong to the copy: the original stays dense.
        assert torch.equal(model(x), model(x))
        assert all(g.mode == "dense" for _, g in iter_gates(model))
    for (_, a), (_, b) in zip(iter_gates(model), iter_gates(twin)):
        assert a is not b and a.net.reduce.weight is not b.net.reduce.weight
