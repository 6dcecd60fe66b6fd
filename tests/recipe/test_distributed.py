"""Two gloo processes on CPU through ``accelerate launch``: world size 2, replicas in sync."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.recipe.conftest import ROOT, TINY


@pytest.mark.slow
def test_two_process_run(tmp_path: Path) -> None:
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    out = tmp_path / "run"
    args = [str(ROOT / "recipes" / "pretrain.py"), "--no_progress", "--output_dir", str(out), *TINY,
            "--max_steps", "3", "--eval_split", "null", "--eval_train_split", "null", "--save_every", "1"]
    result = subprocess.run(launcher + args, check=False, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["ranks_in_sync"] is True  # both ranks ended with identical weights
    # 64 images / (16 x 2 processes) = 2 steps per epoch: step 3 is in epoch 2.
    assert metrics["steps"] == 3 and metrics["epochs"] == 1.5
    state = max((out / "checkpoints").iterdir())
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in state.iterdir()}
    exported = load_file(str(out / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in exported.values() if v.is_floating_point())
