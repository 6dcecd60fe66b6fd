"""timm_gated_ssl.hub.pretrained: the tag table applied to timm's registry, tested with an entry that
points at a repository pushed to the loopback Hub (the shipped table is empty)."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from huggingface_hub import CommitOperationAdd, HfApi

import timm_gated_ssl
from timm_gated_ssl.hub import (
    PRETRAINED,
    PretrainedEntry,
    UnknownArchitectureError,
    entry_from_hub,
    load_from_hub,
    push_to_hub,
    register_pretrained,
    unregister_pretrained,
)

TAG = "gated_resnet18_cifar.loopback_test"
REPO = "loopback-org/gated-r18-loopback"


def test_shipped_table_lists_only_published_checkpoints() -> None:
    """No co-trained checkpoint has been published yet, and no tag may point at a repository that
    does not exist: the only gated tags are timm's own dense weights of the plain architecture
    (``pretrained=True`` loads them into the dense path, docs/posthoc.md)."""
    assert PRETRAINED == ()
    tags = timm.list_pretrained("gated_*")
    assert sorted(tag.partition(".")[0] for tag in tags) == sorted(
        f"gated_{arch}" for arch in ("resnet18", "resnet34", "resnet50", "vit_tiny_patch16_224",
                                     "vit_small_patch16_224", "vit_base_patch16_224"))
    for tag in tags:
        plain = timm.models.get_pretrained_cfg(tag.partition(".")[0].removeprefix("gated_"))
        assert timm.models.get_pretrained_cfg(tag).hf_hub_id == plain.hf_hub_id, tag


@pytest.fixture
def registered(hub, gated_model, results_dict):
    push_to_hub(gated_model, REPO, results=results_dict)
    entry = entry_from_hub(TAG, REPO, description="loopback test entry")
    assert register_pretrained([entry]) == [TAG]
    yield entry
    unregister_pretrained(TAG)
    assert TAG not in timm.list_models("gated_*", pretrained=True)


def test_entry_from_hub_reads_config_and_results(registered: PretrainedEntry) -> None:
    assert registered.hf_hub_id == REPO and registered.architecture == "gated_resnet18_cifar"
    assert registered.budgets == (0.3, 0.5)
    assert registered.model_args["layers"] == [1, 1, 1, 1]
    assert registered.metrics["gated-t0.3/linear_top1"] == 90.27


def test_tag_is_listed_and_downloads(registered, gated_model) -> None:
    assert TAG in timm.list_models("gated_*", pretrained=True)
    assert timm.models.get_pretrained_cfg(TAG).hf_hub_id == REPO
    model = timm.create_model(TAG, pretrained=True).eval()
    assert model.state_dict().keys() == gated_model.state_dict().keys()
    for key, value in gated_model.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    assert timm_gated_ssl.gate_config(model) == timm_gated_ssl.gate_config(gated_model)
    assert model.calibrated_budgets == gated_model.calibrated_budgets
    # the plain architecture is untouched by the tag's model_args
    plain = timm.create_model("gated_resnet18_cifar")
    assert plain.calibrated_budgets == {} and len(plain.layer1) == 2
    assert timm_gated_ssl.gate_config(load_from_hub(TAG, budget=0.5)).budget == 0.5


def test_register_rejects_unknown_architecture_and_missing_tag() -> None:
    with pytest.raises(UnknownArchitectureError, match="import timm_gated_ssl"):
        register_pretrained([PretrainedEntry(name="gated_nonexistent.tag", hf_hub_id="a/b")])
    with pytest.raises(ValueError, match="needs a tag"):
        register_pretrained([PretrainedEntry(name="gated_resnet18_cifar", hf_hub_id="a/b")])


def test_unregistered_architecture_names_the_import(hub) -> None:
    config = {"architecture": "gated_resnet999_cifar", "num_classes": 0, "pretrained_cfg": {}}
    HfApi().create_repo("loopback-user/future-arch")
    HfApi().create_commit("loopback-user/future-arch", commit_message="add",
                          operations=[CommitOperationAdd("config.json", json.dumps(config).encode())])
    with pytest.raises(UnknownArchitectureError, match="import timm_gated_ssl") as info:
        load_from_hub("hf-hub:loopback-user/future-arch")
    assert "gated_resnet999_cifar" in str(info.value)
    assert isinstance(info.value, LookupError)
