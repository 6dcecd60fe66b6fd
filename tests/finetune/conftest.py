"""A tiny co-trained checkpoint (16 px digits, a narrow gated ResNet-18) and the finetune recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import load_script
from tests.recipe.conftest import TINY, load_pretrain_module

# A few steps on 64 images: seconds per run on 2 cores. The narrow 16 px model's MAC fraction moves
# in steps of about 0.02, so calibration gets a tolerance of 0.03.
FINETUNE_TINY = ["--cpu", "--no_progress", "--dataset", "digits", "--train_subset", "64",
                 "--batch_size", "32", "--epochs", "1", "--log_every", "1", "--calibration_tol", "0.03"]


def load_finetune_module() -> Any:
    return load_script("recipes/finetune.py")


@pytest.fixture(scope="session")
def finetune() -> Any:
    return load_finetune_module()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gated checkpoint pretrained for 6 steps at t_d 0.5 (the quickstart's output, shrunk)."""
    out = tmp_path_factory.mktemp("pretrained")
    load_pretrain_module().main(["--cpu", "--no_progress", "--output_dir", str(out), *TINY,
                                 "--budget", "0.5", "--max_steps", "6", "--eval_split", "null",
                                 "--eval_train_split", "null"])
    return out


def run_finetune(finetune: Any, checkpoint: Path, output_dir: Path, *extra: str) -> dict[str, Any]:
    """Run the recipe in-process and return its metrics.json."""
    finetune.main(["--checkpoint", str(checkpoint), "--output_dir", str(output_dir), *FINETUNE_TINY, *extra])
    return json.loads((output_dir / "metrics.json").read_text())
