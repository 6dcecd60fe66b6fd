"""Registered gated ResNets: timm's registry, model contract, save/load round trip."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from timm.models import save_for_hf

import timm_gated_ssl  # noqa: F401
from tests.helpers import randomize_norms
from timm_gated_ssl import InvalidBudgetError, gate_config, gate_mode, has_gates, iter_gates

GATED = ["gated_resnet18", "gated_resnet34", "gated_resnet50", "gated_resnet18_cifar",
         "gated_resnet34_cifar", "gated_resnet50_cifar"]
PLAIN = ["resnet18_cifar", "resnet34_cifar", "resnet50_cifar"]


def test_registry_lists_models() -> None:
    assert set(GATED) <= set(timm.list_models("gated_*"))
    assert set(PLAIN) <= set(timm.list_models("*_cifar"))


@pytest.mark.parametrize("name", ["gated_resnet18", "gated_resnet50_cifar"])
def test_contract(name: str) -> None:
    model = timm.create_model(name, budget=0.3, num_classes=7)
    size = 32 if name.endswith("cifar") else 64
    x = torch.randn(2, 3, size, size)
    assert model(x).shape == (2, 7)
    features = model.forward_features(x)
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    assert model.pretrained_cfg["architecture"] == name
    assert gate_config(model).budget == 0.3
    # zero_init_last kept: timm's default for the last BN of each residual branch.
    for block in model.layer1:
        last = block.bn3 if hasattr(block, "bn3") else block.bn2
        assert torch.count_nonzero(last.weight) == 0


def test_features_only_keeps_gates() -> None:
    model = timm.create_model("gated_resnet18_cifar", features_only=True, out_indices=(1, 4))
    assert model.feature_info.reduction() == [1, 8]
    assert has_gates(model)
    with gate_mode(model, "gated"):
        shapes = [f.shape for f in model(torch.randn(2, 3, 32, 32))]
    assert shapes == [(2, 64, 32, 32), (2, 512, 4, 4)]


def test_plain_baseline_matches_gated_dense_stem() -> None:
    plain = timm.create_model("resnet18_cifar")
    assert not has_gates(plain)
    assert plain.conv1.kernel_size == (3, 3) and plain.conv1.stride == (1, 1)
    assert isinstance(plain.maxpool, torch.nn.Identity)
    gated = timm.create_model("gated_resnet18_cifar")
    dense_keys = [k for k in gated.state_dict() if ".dyn_gate." not in k]
    assert dense_keys == list(plain.state_dict())


def test_cifar_stem_padding_option() -> None:
    model = timm.create_model("gated_resnet18_cifar", cifar_stem_padding=2, num_classes=0)
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape[-1] == 5  # 34 -> 17 -> 9 -> 5
    with pytest.raises(ValueError, match="cifar_stem_padding"):
        timm.create_model("gated_resnet18_cifar", cifar_stem_padding=3)


def test_cifar_stem_rejects_deep_stems() -> None:
    from timm_gated_ssl.models.cifar_stem import apply_cifar_stem

    with pytest.raises(TypeError, match="Sequential stem"):
        apply_cifar_stem(timm.create_model("resnet10t"))


def test_bad_budget_through_create_model() -> None:
    with pytest.raises(InvalidBudgetError, match="got 1.5"):
        timm.create_model("gated_resnet18", budget=1.5)


def test_save_load_round_trip_through_timm(tmp_path) -> None:
    model = timm.create_model("gated_resnet18_cifar", budget=0.2, separate_bn=True, num_classes=0)
    randomize_norms(model).eval()
    save_for_hf(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == "gated_resnet18_cifar"
    assert config["model_args"]["budget"] == 0.2 and config["model_args"]["separate_bn"] is True
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert gate_config(loaded) == gate_config(model)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.randn(2, 3, 32, 32)
    with gate_mode(model, "gated"), gate_mode(loaded, "gated"):
        assert torch.equal(model(x), loaded(x))
    assert len(list(iter_gates(loaded))) == 8


def test_budget_kwarg_picks_a_calibrated_budget_after_loading(tmp_path) -> None:
    from timm_gated_ssl import calibrate_budget, count_macs, set_budget

    model = timm.create_model("gated_resnet18_cifar", channels=[8, 16, 32, 64], num_classes=0).eval()
    images = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    reached = {b: calibrate_budget(model, [images], b, tol=0.03).mac_fraction for b in (0.3, 0.5)}
    save_for_hf(model, tmp_path)  # the weights hold the offset of the last calibration (0.5)
    for budget in (0.3, 0.5):
        loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True, budget=budget).eval()
        assert abs(count_macs(loaded, images).mean_ratio - reached[budget]) < 1e-9
    # Without budget=, a checkpoint reloads at the operating point it was saved at.
    set_budget(model, 0.3)
    save_for_hf(model, tmp_path / "at03")
    loaded = timm.create_model(f"local-dir:{tmp_path / 'at03'}", pretrained=True).eval()
    assert abs(count_macs(loaded, images).mean_ratio - reached[0.3]) < 1e-9
