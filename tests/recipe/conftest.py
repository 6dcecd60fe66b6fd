"""Tiny pretraining runs: 16 px digits, a narrow gated ResNet, a handful of steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from tests.helpers import load_script
from timm_gated_ssl.recipe import PretrainConfig

ROOT = Path(__file__).parents[2]
TINY = [
    "--dataset", "digits", "--image_size", "16", "--batch_size", "16", "--epochs", "2",
    "--model_kwargs", "{channels: [8, 16, 32, 64]}", "--projector_hidden_dim", "32",
    "--projector_out_dim", "32", "--warmup_epochs", "0.5", "--log_every", "1",
    "--knn_max_bank", "200", "--train_subset", "64", "--lr", "0.05",
]


def load_shipped_config(path: Path) -> PretrainConfig:
    """A shipped pretraining config; the post-hoc ones (``posthoc_*``) need the encoder to gate,
    which the user names on the command line (a placeholder here: loading does not read it)."""
    return PretrainConfig.load(path, ["--init_from", "encoder.safetensors"] if path.stem.startswith("posthoc_") else [])


def load_pretrain_module() -> Any:
    return load_script("recipes/pretrain.py")


@pytest.fixture(scope="session")
def pretrain() -> Any:
    return load_pretrain_module()


def run(pretrain: Any, output_dir: Path, *extra: str) -> dict[str, Any]:
    """Run the recipe in-process and return its metrics.json."""
    pretrain.main(["--cpu", "--no_progress", "--output_dir", str(output_dir), *TINY, *extra])
    return json.loads((output_dir / "metrics.json").read_text())


def weights(output_dir: Path) -> dict[str, Any]:
    return load_file(str(output_dir / "model.safetensors"))
