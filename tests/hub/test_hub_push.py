"""timm_gated_ssl.hub.push end to end against the loopback Hub: push, load back with timm, re-push,
and the errors for bad input, a bad token and an invisible repository."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import ModelCard
from timm.models import save_for_hf

import timm_gated_ssl
from timm_gated_ssl.hub import (
    CheckpointError,
    HubAuthError,
    HubRepoNotFoundError,
    InvalidRepoIdError,
    MissingTokenError,
    push_to_hub,
)

REPO = "loopback-user/gated-r18-cifar10"


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_push_model_then_load_with_timm(hub, gated_model, results_dict) -> None:
    result = push_to_hub(gated_model, REPO, results=results_dict)
    assert result.repo_id == REPO and result.repo_url == f"{hub.url}/{REPO}"
    assert result.commit_oid == hub.head(REPO) and result.commit_oid in result.commit_url
    assert set(result.files) == {"README.md", "config.json", "model.safetensors", "results.json"}
    assert hub.commit_count(REPO) == 2  # creation + ONE commit for the folder

    loaded = timm.create_model(f"hf-hub:{REPO}", pretrained=True).eval()
    assert type(loaded) is type(gated_model)
    _assert_same_weights(gated_model, loaded)
    assert timm_gated_ssl.gate_config(loaded) == timm_gated_ssl.gate_config(gated_model)
    assert loaded.calibrated_budgets == gated_model.calibrated_budgets
    x = torch.randn(2, 3, 32, 32)
    for mode in ("dense", "gated"):
        with timm_gated_ssl.gate_mode(gated_model, mode), timm_gated_ssl.gate_mode(loaded, mode):
            assert torch.equal(gated_model(x), loaded(x))

    picked = timm.create_model(f"hf-hub:{REPO}", pretrained=True, budget=0.5)
    assert timm_gated_ssl.gate_config(picked).budget == 0.5
    assert picked.calibrated_budgets == {"0.3": 0.25, "0.5": -0.5}

    card = ModelCard.load(REPO)
    assert card.data.library_name == "timm"
    linear = {r.metric_config: r.metric_value for r in card.data.eval_results
              if r.metric_name.startswith("Linear-probe")}
    assert linear == {"dense-t0.3": 90.38, "gated-t0.3": 90.27, "gated-t0.5": 90.40}


def test_second_push_replaces_weights_and_card(hub, gated_model, results_dict, tmp_path) -> None:
    first_dir = tmp_path / "first"
    save_for_hf(gated_model, first_dir, safe_serialization=True)
    (first_dir / "tradeoff.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    first = push_to_hub(first_dir, REPO, results=results_dict)
    assert "tradeoff.png" in first.files
    assert "](tradeoff.png)" in hub.file_content(REPO, "README.md").decode()

    with torch.no_grad():
        for p in gated_model.parameters():
            p.add_(1.0)
    second = push_to_hub(gated_model, REPO, commit_message="Retrained")
    assert second.commit_oid != first.commit_oid and hub.commit_count(REPO) == 3
    assert second.deleted == ("results.json", "tradeoff.png")  # stale files of the first push
    card = ModelCard.load(REPO)
    assert card.data.eval_results is None and "tradeoff" not in card.text  # card replaced
    loaded = timm.create_model(f"hf-hub:{REPO}", pretrained=True)
    _assert_same_weights(gated_model, loaded)


def test_checkpoint_without_weights_fails_before_any_request(hub, tmp_path) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text('{"architecture": "gated_resnet18_cifar"}')
    before = len(hub.requests)
    with pytest.raises(CheckpointError, match="no weights"):
        push_to_hub(ckpt, REPO)
    with pytest.raises(CheckpointError, match="does not exist"):
        push_to_hub(tmp_path / "missing", REPO)
    assert len(hub.requests) == before and not hub.repos


@pytest.mark.parametrize("repo_id", ["no-namespace", "a/b/c", "/name", "ns/", "ns/bad--name", ""])
def test_bad_repo_id(hub, gated_model, repo_id: str) -> None:
    with pytest.raises(InvalidRepoIdError, match="namespace/name|invalid repo_id"):
        push_to_hub(gated_model, repo_id)
    assert issubclass(InvalidRepoIdError, ValueError)


def test_no_token(hub, gated_model, monkeypatch) -> None:
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(MissingTokenError, match="HF_TOKEN") as info:
        push_to_hub(gated_model, REPO)
    assert "login" in str(info.value) and not hub.requests


def _checkpoint(model: torch.nn.Module, folder: Path) -> dict[str, str]:
    save_for_hf(model, folder, safe_serialization=True)
    return _snapshot(folder)


def test_bad_token_is_401_and_leaves_files(hub, gated_model, tmp_path) -> None:
    ckpt = tmp_path / "ckpt"
    before = _checkpoint(gated_model, ckpt)
    with pytest.raises(HubAuthError, match="401") as info:
        push_to_hub(ckpt, REPO, token="hf_not_a_valid_token")
    assert "HF_TOKEN" in str(info.value) and info.value.__cause__ is None
    assert _snapshot(ckpt) == before and not hub.repos


def test_invisible_repo_is_404_and_leaves_files(hub, gated_model, tmp_path) -> None:
    hub.seed_repo("other-user/private-model", private=True)
    ckpt = tmp_path / "ckpt"
    before = _checkpoint(gated_model, ckpt)
    with pytest.raises(HubRepoNotFoundError, match="404"):
        push_to_hub(ckpt, "other-user/private-model")
    assert _snapshot(ckpt) == before
    assert hub.commit_count("other-user/private-model") == 2  # seed commit only


def test_load_unknown_repo_is_404(hub) -> None:
    from timm_gated_ssl.hub import load_from_hub

    with pytest.raises(HubRepoNotFoundError, match="not found"):
        load_from_hub("loopback-user/does-not-exist")
