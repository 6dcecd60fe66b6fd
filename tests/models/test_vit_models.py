"""Registered gated ViTs: timm's registry, model contract, save/load round trip."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from timm.models import save_for_hf

import timm_gated_ssl.models.vit  # noqa: F401  (registers the ViTs until the package imports it)
from timm_gated_ssl import (
    InvalidBudgetError,
    gate_config,
    gate_masks,
    gate_mode,
    has_gates,
    iter_gates,
)

GATED = {
    "gated_vit_tiny_patch16_224": (192, 3, 224),
    "gated_vit_small_patch16_224": (384, 6, 224),
    "gated_vit_base_patch16_224": (768, 12, 224),
    "gated_vit_tiny_patch4_32": (192, 3, 32),
}
TINY = {"depth": 2}


def test_registry_lists_models() -> None:
    assert set(GATED) <= set(timm.list_models("gated_vit*"))
    assert "vit_tiny_patch4_32" in timm.list_models("vit_*_32")


@pytest.mark.parametrize("name", list(GATED))
def test_architecture_and_gates(name: str) -> None:
    dim, heads, size = GATED[name]
    model = timm.create_model(name, **TINY)
    assert model.embed_dim == dim and model.blocks[0].attn.num_heads == heads
    assert model.pretrained_cfg["input_size"] == (3, size, size)
    gates = list(iter_gates(model))
    assert [n for n, _ in gates] == ["blocks.0", "blocks.1"]
    assert gates[0][1].widths == (heads, 4 * dim)
    assert model.blocks[0].attn.fused_attn


def test_contract() -> None:
    model = timm.create_model("gated_vit_tiny_patch4_32", budget=0.3, num_classes=7, **TINY)
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 7)
    features = model.forward_features(x)
    assert features.shape == (2, 65, 192)
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    intermediates = model.forward_intermediates(x, intermediates_only=True)
    assert [t.shape for t in intermediates] == [(2, 192, 8, 8)] * 2
    model.reset_classifier(0, global_pool="avg")
    with gate_mode(model, "gated"):
        assert model(x).shape == (2, 192)
    assert model.pretrained_cfg["architecture"] == "gated_vit_tiny_patch4_32"
    assert gate_config(model).budget == 0.3


def test_features_only_keeps_gates() -> None:
    model = timm.create_model("gated_vit_tiny_patch4_32", features_only=True, out_indices=(0, 1), **TINY)
    assert has_gates(model)
    with gate_mode(model, "gated"):
        shapes = [f.shape for f in model(torch.randn(2, 3, 32, 32))]
    assert shapes == [(2, 192, 8, 8)] * 2
    assert set(gate_masks(model)) == {"model.blocks.0", "model.blocks.1"}  # the getter wraps it


def test_plain_baseline_has_same_dense_keys() -> None:
    plain = timm.create_model("vit_tiny_patch4_32", **TINY)
    assert not has_gates(plain)
    gated = timm.create_model("gated_vit_tiny_patch4_32", **TINY)
    assert [k for k in gated.state_dict() if ".dyn_gate." not in k] == list(plain.state_dict())


def test_bad_budget_through_create_model() -> None:
    with pytest.raises(InvalidBudgetError, match="got 0"):
        timm.create_model("gated_vit_tiny_patch4_32", budget=0, **TINY)


@pytest.mark.parametrize("separate_bn", [True, False])
def test_save_load_round_trip_through_timm(tmp_path, separate_bn: bool) -> None:
    model = timm.create_model(
        "gated_vit_tiny_patch4_32", budget=0.2, separate_bn=separate_bn, tau=0.5, gate_reduction=8,
        calibrated_budgets={"0.2": 0.75}, num_classes=0, **TINY,
    ).eval()
    with torch.no_grad():
        for _, gate in iter_gates(model):
            gate.net.expand.weight.mul_(20.0)  # masks that differ per sample
            assert float(gate.logit_offset) == 0.75  # the calibrated budget's offset is applied
            for p in gate.norms.parameters():
                p.add_(0.1)
    save_for_hf(model, tmp_path)
    args = json.loads((tmp_path / "config.json").read_text())["model_args"]
    assert args["budget"] == 0.2 and args["separate_bn"] is separate_bn
    assert args["tau"] == 0.5 and args["gate_reduction"] == 8
    assert args["calibrated_budgets"] == {"0.2": 0.75}
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert type(loaded) is type(model)
    assert gate_config(loaded) == gate_config(model)
    assert loaded.calibrated_budgets == {"0.2": 0.75}
    assert all(float(g.logit_offset) == 0.75 for _, g in iter_gates(loaded))
    state = loaded.state_dict()
    assert list(state) == list(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value), key
    x = torch.randn(3, 3, 32, 32)
    with gate_mode(model, "gated"), gate_mode(loaded, "gated"):
        assert torch.equal(model(x), loaded(x))
    assert torch.equal(model(x), loaded(x))
