"""``freeze_dense``: post-hoc gating with the trained encoder's dense mode frozen as the teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import save_file

import timm_gated_ssl
from tests.helpers import randomize_norms
from tests.recipe.conftest import run, weights
from timm_gated_ssl.budget import BudgetLoss, gated_param_groups
from timm_gated_ssl.errors import ConfigError
from timm_gated_ssl.recipe import DualSSLModel, PretrainConfig
from timm_gated_ssl.recipe.freeze import freeze_dense_path, gated_only, shared_norms
from timm_gated_ssl.ssl import FeatureDistillLoss, build_ssl_objective

CHANNELS = [8, 16, 32, 64]
NO_EVAL = ("--eval_split", "null", "--eval_train_split", "null")


def _gated(**kwargs: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("gated_resnet18_cifar", channels=CHANNELS, num_classes=0, budget=0.5, **kwargs)
    return randomize_norms(model)


def _dual(backbone: torch.nn.Module, **kwargs: Any) -> DualSSLModel:
    objective = build_ssl_objective("vicreg", in_dim=backbone.num_features, hidden_dim=32, out_dim=32)
    return DualSSLModel(backbone, objective, gating=True, budget_loss=BudgetLoss(0.5), freeze_dense=True, **kwargs)


def test_only_parameters_under_a_gate_are_gated_only() -> None:
    assert gated_only("layer1.0.dyn_gate.net.fc1.weight") and gated_only("layer1.0.dyn_gate.norms.bn1.weight")
    assert not gated_only("layer1.0.bn1.weight") and not gated_only("dyn_gatex.weight")
    backbone = _gated()
    total = sum(p.numel() for p in backbone.parameters())
    gate_params = sum(p.numel() for _, g in timm_gated_ssl.iter_gates(backbone) for p in g.parameters())
    assert freeze_dense_path(backbone) == total - gate_params  # everything but the gates (and their norms)
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable and all(".dyn_gate." in n for n in trainable)
    assert any(".dyn_gate.norms." in n for n in trainable)  # the gated-mode norm copies train
    with pytest.raises(ValueError, match="needs a gated backbone"):
        freeze_dense_path(timm.create_model("resnet18_cifar", channels=CHANNELS, num_classes=0))


@pytest.mark.parametrize("pairing", ["asymmetric", "symmetric"])
def test_training_leaves_the_dense_mode_bit_identical(pairing: str) -> None:
    backbone = _gated()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        dense_out = backbone.eval()(x)
    model = _dual(backbone, pairing=pairing, distill=FeatureDistillLoss(0.1))
    model.train()
    names = {id(m): n for n, m in backbone.named_modules()}
    shared = [names[id(m)] for m in shared_norms(backbone)]  # both modes use these: the stem and shortcuts
    assert shared == ["bn1", *(f"layer{i}.0.downsample.1" for i in range(1, 5))]
    assert not backbone.bn1.training and backbone.layer1[0].bn1.training  # block norms: batch stats when gated
    optimizer = torch.optim.SGD(gated_param_groups(model), lr=0.5, momentum=0.9)
    torch.manual_seed(1)
    for step in range(3):
        out = model(torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16), progress=step / 3)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    after = backbone.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".dyn_gate." in k for k in changed)  # only gates and gated norms moved
    assert any(".dyn_gate.net." in k for k in changed) and any(".dyn_gate.norms." in k and "running_mean" in k
                                                               for k in changed)
    with torch.no_grad():
        torch.testing.assert_close(backbone.eval()(x), dense_out, rtol=0, atol=0)


def test_a_frozen_dense_mode_is_refused_where_it_cannot_work() -> None:
    objective = build_ssl_objective("vicreg", in_dim=64, hidden_dim=32, out_dim=32)
    with pytest.raises(ValueError, match="freeze_dense=True needs gating=True"):
        DualSSLModel(timm.create_model("resnet18_cifar", channels=CHANNELS, num_classes=0), objective,
                     gating=False, freeze_dense=True)
    with pytest.raises(ConfigError, match=r"needs gating: true and init_from .*; got init_from=None$"):
        PretrainConfig(freeze_dense=True)
    with pytest.raises(ConfigError, match=r"got gating=False$"):
        PretrainConfig(freeze_dense=True, init_from="enc.safetensors", gating=False)


def test_dense_only_steps_of_a_frozen_model_train_only_the_heads() -> None:
    backbone = _gated()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = _dual(backbone, pairing="anchored")
    model.train()
    projector = [p.clone() for p in model.objective.parameters()]
    out = model(torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16), gating_active=False)  # a dense warm-up step
    out.loss.backward()
    torch.optim.SGD(gated_param_groups(model), lr=0.5).step()
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in before.items())  # the backbone is untouched
    assert any(not torch.equal(a, b) for a, b in zip(projector, model.objective.parameters()))


def test_the_recipe_keeps_the_init_as_the_dense_mode_and_resumes(pretrain: Any, tmp_path: Path) -> None:
    torch.manual_seed(1)
    plain = randomize_norms(timm.create_model("resnet18_cifar", channels=CHANNELS, num_classes=0)).eval()
    init = tmp_path / "encoder.safetensors"
    save_file(plain.state_dict(), str(init))
    out = tmp_path / "frozen"
    metrics = run(pretrain, out, "--max_steps", "2", *NO_EVAL, "--init_from", str(init), "--freeze_dense", "true",
                  "--distill_weight", "0.1")
    assert metrics["steps"] == 2
    trained = weights(out)
    for key, value in plain.state_dict().items():  # the dense path is the init's, bit for bit
        assert torch.equal(trained[key], value), key
    copies = [k for k in trained if ".dyn_gate.norms." in k and k.endswith("running_mean")]
    dense = {k: k.replace(".dyn_gate.norms.", ".").replace("__", ".") for k in copies}
    assert copies and all(not torch.equal(trained[k], trained[dense[k]]) for k in copies)  # gated norms trained
    metrics = run(pretrain, out, "--max_steps", "3", *NO_EVAL, "--init_from", str(init), "--freeze_dense", "true",
                  "--distill_weight", "0.1", "--resume_from_checkpoint", "latest")
    assert metrics["steps"] == 3
    resumed = weights(out)
    assert all(torch.equal(resumed[k], v) for k, v in plain.state_dict().items())


@pytest.mark.parametrize("distill_only", [False, True], ids=["vicreg", "distill_only"])
def test_a_frozen_vit_keeps_its_dense_mode(distill_only: bool) -> None:
    torch.manual_seed(0)
    backbone = timm.create_model("gated_vit_tiny_patch4_32", num_classes=0, budget=0.5, depth=2)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = _dual(backbone, **({"distill": FeatureDistillLoss(), "ssl_weight": 0.0} if distill_only else {}))
    model.train()
    optimizer = torch.optim.SGD(gated_param_groups(model), lr=0.5)
    out = model(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), progress=0.0)
    out.loss.backward()
    optimizer.step()
    after = backbone.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(".dyn_gate.net." in k for k in changed) and any(".dyn_gate.norms." in k for k in changed)
    assert all(".dyn_gate." in k for k in changed)  # heads, MLP units and LayerNorms of the dense path kept


def test_a_frozen_teacher_with_distillation_alone_trains_only_the_gates() -> None:
    backbone = _gated()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = _dual(backbone, distill=FeatureDistillLoss(1.0), ssl_weight=0.0).train()
    groups = gated_param_groups(model)
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in backbone.parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(groups, lr=1e-2)
    for step in range(2):
        out = model(torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16), progress=step / 2)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    changed = {k for k, v in backbone.state_dict().items() if not torch.equal(before[k], v)}
    assert any(".dyn_gate.net." in k for k in changed) and all(".dyn_gate." in k for k in changed)


def test_distillation_alone_is_refused_where_it_cannot_work() -> None:
    init = dict(freeze_dense=True, init_from="enc.safetensors", ssl_weight=0.0)
    with pytest.raises(ConfigError, match=r"ssl_weight: 0 .*; got distill_weight=0.0$"):
        PretrainConfig(**init)
    with pytest.raises(ConfigError, match=r"got pairing='anchored', dense_warmup_epochs=0.3$"):
        PretrainConfig(**init, distill_weight=1.0, pairing="anchored", dense_warmup_epochs=0.3)
    PretrainConfig(**init, distill_weight=1.0)  # what the posthoc configs set
