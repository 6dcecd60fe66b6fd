"""``--init_from``: the encoder a user already has goes into the dense path; gates start fresh."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
import yaml
from safetensors.torch import save_file
from timm.models import save_for_hf

import timm_gated_ssl
from tests.recipe.conftest import run
from timm_gated_ssl.errors import ConfigError
from timm_gated_ssl.recipe.init import build_backbone, init_overlay

CHANNELS = [8, 16, 32, 64]
NO_EVAL = ("--eval_split", "null", "--eval_train_split", "null")
ARGS = {"channels": CHANNELS, "num_classes": 0, "budget": 0.5, "separate_bn": True}


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """A 'pretrained' dense encoder (random weights, non-trivial norms) and its weights file."""
    from tests.helpers import randomize_norms

    torch.manual_seed(1)
    model = randomize_norms(timm.create_model("resnet18_cifar", channels=CHANNELS, num_classes=10)).eval()
    path = tmp_path_factory.mktemp("init") / "encoder.safetensors"
    save_file(model.state_dict(), str(path))
    return model, path


def _check_dense_init(gated: torch.nn.Module, plain: torch.nn.Module) -> None:
    gated.eval()
    x = torch.randn(3, 3, 16, 16)
    plain_features = plain.forward_head(plain.forward_features(x), pre_logits=True)
    torch.testing.assert_close(gated(x), plain_features, rtol=0, atol=0)  # dense output == the init's
    for name, gate in timm_gated_ssl.iter_gates(gated):
        block = gated.get_submodule(name)
        for key, norm in gate.norms.items():  # gated norms start as copies of the dense ones
            dense = block.get_submodule(key.replace("__", "."))
            assert all(torch.equal(a, b) for a, b in zip(norm.state_dict().values(), dense.state_dict().values()))


@pytest.mark.parametrize("kind", ["file", "folder", "local-dir"])
def test_each_local_spec_fills_the_dense_path(plain: tuple[torch.nn.Module, Path], tmp_path: Path, kind: str) -> None:
    model, path = plain
    spec = str(path)
    if kind != "file":
        save_for_hf(model, tmp_path / "ckpt", safe_serialization=True)
        spec = ("local-dir:" if kind == "local-dir" else "") + str(tmp_path / "ckpt")
    torch.manual_seed(0)
    gated = build_backbone("gated_resnet18_cifar", ARGS, init_from=spec)
    _check_dense_init(gated, model)
    torch.manual_seed(0)
    fresh = timm.create_model("gated_resnet18_cifar", **ARGS)
    for (_, a), (_, b) in zip(timm_gated_ssl.iter_gates(gated), timm_gated_ssl.iter_gates(fresh)):
        assert all(torch.equal(p, q) for p, q in zip(a.net.state_dict().values(), b.net.state_dict().values()))


def test_a_pretrained_tag_resolves_through_timms_cfg_and_offline_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert init_overlay("resnet18.a1_in1k")["hf_hub_id"] == "timm/resnet18.a1_in1k"
    assert init_overlay("hf-hub:my-org/encoder")["hf_hub_id"] == "my-org/encoder"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="init_from 'resnet18.a1_in1k'") as info:
        build_backbone("gated_resnet18", {"num_classes": 0, "budget": 0.5}, init_from="resnet18.a1_in1k")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("spec", "match"), [
    ("resnet18.no_such_tag", "is not a timm pretrained tag"),
    ("./missing.safetensors", "does not exist"),
    ("hf-hub:not a/repo", "repo_id"),
])
def test_unknown_specs_are_refused(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        init_overlay(spec)


def test_a_mismatched_init_is_refused_before_anything_is_written(pretrain: Any, tmp_path: Path) -> None:
    wide = tmp_path / "wide.safetensors"
    save_file(timm.create_model("resnet18_cifar", channels=[16, 32, 64, 128]).state_dict(), str(wide))
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=rf"init_from '{wide}': {wide} does not fit gated_resnet18_cifar: "
                                          r"shape mismatch: layer1.0.conv1.weight \(16, 64, 3, 3\) vs \(8, 64, 3, 3\)"):
        run(pretrain, out, "--max_steps", "1", *NO_EVAL, "--init_from", str(wide))
    assert not out.exists()


def test_a_post_hoc_run_records_its_init_trains_and_resumes(pretrain: Any, plain: tuple[torch.nn.Module, Path],
                                                            tmp_path: Path) -> None:
    _, path = plain
    init = tmp_path / "init.safetensors"
    init.write_bytes(path.read_bytes())
    out = tmp_path / "run"
    metrics = run(pretrain, out, "--max_steps", "2", *NO_EVAL, "--init_from", str(init))
    assert metrics["init_from"] == str(init) and metrics["steps"] == 2
    assert yaml.safe_load((out / "config.yaml").read_text())["init_from"] == str(init)
    assert json.loads((out / "config.json").read_text())["init_from"] == str(init)
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True)  # timm loads what the run exported
    assert timm_gated_ssl.has_gates(loaded)
    init.unlink()  # a resume takes its weights from the state, not from the init
    metrics = run(pretrain, out, "--max_steps", "3", *NO_EVAL, "--init_from", str(init),
                  "--resume_from_checkpoint", "latest")
    assert metrics["steps"] == 3


def test_co_trained_init_starts_with_fresh_gates(pretrain: Any, tmp_path: Path) -> None:
    out = tmp_path / "cotrained"
    run(pretrain, out, "--max_steps", "2", *NO_EVAL)
    trained = timm.create_model(f"local-dir:{out}", pretrained=True)
    torch.manual_seed(0)
    gated = build_backbone("gated_resnet18_cifar", ARGS, init_from=str(out))
    torch.manual_seed(0)
    timm.create_model("gated_resnet18_cifar", **ARGS)  # the fresh model build_backbone drew its gates from
    fresh = timm.create_model("gated_resnet18_cifar", **ARGS)
    state, expected = gated.state_dict(), fresh.state_dict()
    for key, value in trained.state_dict().items():
        if ".dyn_gate.net." in key:
            assert torch.equal(state[key], expected[key]) and not torch.equal(state[key], value), key
        elif ".dyn_gate." not in key:
            assert torch.equal(state[key], value), key


def test_pretrained_true_loads_dense_weights_and_warns_once_in_gated_mode(plain: tuple[torch.nn.Module, Path]) -> None:
    model, path = plain
    assert "gated_resnet50.a1_in1k" in timm.list_pretrained("gated_resnet50*")
    gated = timm.create_model("gated_resnet18_cifar", pretrained=True, channels=CHANNELS, num_classes=0,
                              pretrained_cfg_overlay={"file": str(path)})
    _check_dense_init(gated, model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            with timm_gated_ssl.gate_mode(gated, "gated"):
                gated(torch.randn(1, 3, 16, 16))
    messages = [str(w.message) for w in caught if "never trained" in str(w.message)]
    assert len(messages) == 1 and f"--init_from {path}" in messages[0]


def test_a_timm_vit_checkpoint_fills_the_dense_path_of_a_gated_vit(tmp_path: Path) -> None:
    torch.manual_seed(2)
    plain = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0).eval()
    with torch.no_grad():
        for module in plain.modules():  # non-trivial norms: a copy that ignored them would show
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    path = tmp_path / "vit.safetensors"
    save_file(plain.state_dict(), str(path))
    gated = build_backbone("gated_vit_tiny_patch16_224", {"img_size": 32, "num_classes": 0, "budget": 0.5},
                           init_from=str(path)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(gated(x), plain(x), rtol=0, atol=0)
    state = gated.state_dict()
    copies = [k for k in state if ".dyn_gate.norms." in k]
    assert copies  # the gated-mode norm copies start as the checkpoint's norms
    for key in copies:
        block, _, rest = key.partition(".dyn_gate.norms.")
        name, _, tensor = rest.partition(".")
        assert torch.equal(state[key], state[f"{block}.{name.replace('__', '.')}.{tensor}"]), key
