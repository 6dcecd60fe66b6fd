"""The default gate type of every entry point and config, as the v0.2 evidence decided
(docs/results.md, "v0.2"): channel gates stay the default until width gates are shown at least
as good on every paired seed at every budget; the width config is the one that says so."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm

import timm_gated_ssl
from tests.recipe.conftest import load_shipped_config
from timm_gated_ssl.recipe import PretrainConfig

ROOT = Path(__file__).parents[2]
# pretraining configs (fine-tuning configs take the gates of their checkpoint)
CONFIGS = sorted(p for p in (ROOT / "recipes" / "configs").glob("*.yaml") if not p.stem.startswith("finetune"))


@pytest.mark.parametrize("name", ["gated_resnet18", "gated_resnet18_cifar", "gated_resnet50"])
def test_gated_models_default_to_channel_gates(name: str) -> None:
    model = timm.create_model(name, num_classes=0)
    assert timm_gated_ssl.gate_config(model).gate_type == "channel"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_recipe_configs_name_their_gate_type_only_when_it_is_not_the_default(path: Path) -> None:
    config = load_shipped_config(path)
    expected = "width" if "_width_" in path.stem else None
    assert config.model_kwargs.get("gate_type") == expected
    assert PretrainConfig().model_kwargs.get("gate_type") is None  # the model's default: channel
