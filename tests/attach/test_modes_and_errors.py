"""Mode switching, the mask record under gradient checkpointing, torch.compile, bad input."""

from __future__ import annotations

import pytest
import timm
import torch

from tests.helpers import randomize_norms
from timm_gated_ssl import (
    GatesAlreadyAttachedError,
    InvalidBudgetError,
    NoGatesError,
    UnsupportedModelError,
    attach_gates,
    detach_gates,
    gate_masks,
    gate_mode,
    get_gate_mode,
    iter_gates,
    set_gate_mode,
)


def _model(name: str = "resnet10t") -> torch.nn.Module:
    return attach_gates(randomize_norms(timm.create_model(name, num_classes=0)), budget=0.5)


def test_context_manager_restores_mode_even_on_error() -> None:
    model = _model()
    assert get_gate_mode(model) == "dense"
    with pytest.raises(RuntimeError, match="boom"), gate_mode(model, "gated"):
        assert get_gate_mode(model) == "gated"
        raise RuntimeError("boom")
    assert get_gate_mode(model) == "dense"


def test_norm_swap_is_undone_when_forward_fails() -> None:
    model = _model().eval()
    block = model.layer1[0]
    dense_weight = block.bn1.weight
    with gate_mode(model, "gated"), pytest.raises(RuntimeError):
        model(torch.randn(2, 5, 32, 32))  # wrong channel count: fails inside the stem
    with gate_mode(model, "gated"), pytest.raises(RuntimeError):
        block(torch.randn(2, 7, 8, 8))  # fails inside conv1, after the gate ran
    assert block.bn1.weight is dense_weight


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_masks_recorded_once_under_gradient_checkpointing(use_reentrant: bool) -> None:
    model = _model("resnet18").train()
    model.set_grad_checkpointing(True)
    set_gate_mode(model, "gated")
    x = torch.randn(2, 3, 32, 32, requires_grad=use_reentrant)
    calls = {"n": 0}
    gate = model.layer2[0].dyn_gate
    original = gate.compute_masks

    def counting(inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        calls["n"] += 1
        return original(inputs)

    gate.compute_masks = counting  # type: ignore[method-assign]
    from timm.models._manipulate import checkpoint_seq

    def features(inputs: torch.Tensor) -> torch.Tensor:
        inputs = model.maxpool(model.act1(model.bn1(model.conv1(inputs))))
        layers = [model.layer1, model.layer2, model.layer3, model.layer4]
        return checkpoint_seq(layers, inputs, flatten=True, use_reentrant=use_reentrant)

    out = features(x)
    recorded = gate_masks(model)["layer2.0"]
    out.sum().backward()
    assert calls["n"] == 2  # forward, then the replay during backward
    assert gate_masks(model)["layer2.0"] is recorded  # the replay did not record again
    assert gate.net.expand.weight.grad is not None


def test_torch_compile_traces_the_hooks_without_graph_breaks() -> None:
    model = _model().eval()
    x = torch.randn(2, 3, 32, 32)
    with gate_mode(model, "gated"):
        expected = model(x)
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(model)(x)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        compiled = torch.compile(model, backend="eager")
        assert torch.allclose(compiled(x), expected, atol=1e-5)
    assert torch.equal(compiled(x), model(x))  # dense again


@pytest.mark.parametrize("budget", [0, -0.1, 1.5, float("nan"), "0.3", None, True])
def test_bad_budget(budget: object) -> None:
    with pytest.raises(InvalidBudgetError, match=r"\(0, 1\]") as info:
        attach_gates(timm.create_model("resnet10t"), budget=budget)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError) and repr(budget)[:3] in str(info.value)


def test_budget_of_one_is_valid() -> None:
    attach_gates(timm.create_model("resnet10t"), budget=1)


def test_unsupported_model_lists_families() -> None:
    with pytest.raises(TypeError, match="BasicBlock, Bottleneck") as info:
        attach_gates(timm.create_model("efficientnet_b0"), budget=0.3)
    assert isinstance(info.value, UnsupportedModelError)
    assert "EfficientNet" in str(info.value)


def test_attach_twice() -> None:
    model = _model()
    with pytest.raises(GatesAlreadyAttachedError, match="detach_gates"):
        attach_gates(model, budget=0.3)


def test_unknown_mode_lists_modes() -> None:
    model = _model()
    with pytest.raises(ValueError, match="dense, gated"):
        set_gate_mode(model, "sparse")
    with pytest.raises(ValueError, match="'sparse'"), gate_mode(model, "sparse"):
        pass


def test_operations_without_gates() -> None:
    model = timm.create_model("resnet10t")
    for call in (lambda: set_gate_mode(model, "gated"), lambda: detach_gates(model),
                 lambda: gate_masks(model)):
        with pytest.raises(NoGatesError, match="attach_gates"):
            call()


def test_attach_keeps_device_dtype_and_training_flag() -> None:
    model = timm.create_model("resnet10t").to(torch.float64).eval()
    attach_gates(model, budget=0.5)
    for _, gate in iter_gates(model):
        assert gate.net.reduce.weight.dtype == torch.float64 and not gate.training
