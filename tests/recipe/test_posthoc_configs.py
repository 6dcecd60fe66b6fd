"""The post-hoc configs (``recipes/configs/posthoc_*.yaml``): what benchmarks/posthoc.py measured,
refused without the encoder to gate, and a working run from a tiny encoder."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import save_file

from tests.helpers import load_script, randomize_norms
from tests.recipe.conftest import ROOT, load_shipped_config, weights
from timm_gated_ssl.errors import ConfigError
from timm_gated_ssl.recipe import PretrainConfig

POSTHOC_CONFIGS = sorted((ROOT / "recipes" / "configs").glob("posthoc_*.yaml"))
INFRA = {"--overwrite", "--channels_last", "--no_progress"}


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("benchmarks/posthoc.py")


def _benchmark_config(bench: ModuleType, run: str) -> PretrainConfig:
    """The config the benchmark's run trains with, read back from its command line."""
    cmd = bench.train_command(run, Path("out"))
    args = cmd[cmd.index(str(ROOT / "recipes" / "pretrain.py")) + 1:]
    flags: list[str] = []
    skip = False
    for i, token in enumerate(args):
        if skip or token in INFRA:
            skip = False
            continue
        if token == "--output_dir":
            skip = True
            continue
        flags.append(token)
    return PretrainConfig.load(None, flags)


def test_there_is_one_config_per_measured_budget() -> None:
    assert [p.stem for p in POSTHOC_CONFIGS] == ["posthoc_width_td03", "posthoc_width_td05"]


@pytest.mark.parametrize("path", POSTHOC_CONFIGS, ids=lambda p: p.stem)
def test_each_config_is_the_measured_run(bench: ModuleType, path: Path) -> None:
    config = load_shipped_config(path)
    measured = _benchmark_config(bench, f"distill_width_td0.{path.stem[-1]}")
    trains = [f.name for f in dataclasses.fields(PretrainConfig)
              if f.name not in PretrainConfig.RESUMABLE and f.name != "init_from"]
    differ = {k: (getattr(config, k), getattr(measured, k)) for k in trains if getattr(config, k) != getattr(measured, k)}
    assert not differ
    assert (config.freeze_dense, config.ssl_weight, config.optimizer) == (True, 0.0, "adamw")


@pytest.mark.parametrize("path", POSTHOC_CONFIGS, ids=lambda p: p.stem)
def test_a_config_without_the_encoder_is_refused(path: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs gating: true and init_from .*; got init_from=None$"):
        PretrainConfig.load(path)


def test_the_config_trains_two_steps_and_keeps_the_init(pretrain: Any, tmp_path: Path) -> None:
    torch.manual_seed(2)
    plain = randomize_norms(timm.create_model("resnet18_cifar", channels=[8, 16, 32, 64], num_classes=0)).eval()
    init = tmp_path / "encoder.safetensors"
    save_file(plain.state_dict(), str(init))
    out = tmp_path / "posthoc"
    pretrain.main([
        "--cpu", "--no_progress", "--output_dir", str(out), "--config", str(POSTHOC_CONFIGS[0]),
        "--init_from", str(init), "--dataset", "digits", "--image_size", "16", "--batch_size", "16",
        "--train_subset", "64", "--max_steps", "2", "--eval_split", "null", "--eval_train_split", "null",
        "--model_kwargs", "{channels: [8, 16, 32, 64], gate_type: width, gate_levels: 8}",
    ])
    trained = weights(out)
    assert all(torch.equal(trained[k], v) for k, v in plain.state_dict().items())  # the dense mode is the init
    assert any(".dyn_gate.net." in k for k in trained)
