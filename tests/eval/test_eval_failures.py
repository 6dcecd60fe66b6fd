"""Issue 13, defects 5 and 15 on the evaluation side: a truncated checkpoint and a missing split
are named in one line, before any long pass; paths are checked first."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from timm.models import save_for_hf

import timm_gated_ssl  # noqa: F401
from timm_gated_ssl.errors import ConfigError, UnknownSplitError
from timm_gated_ssl.eval import evaluate_checkpoint
from timm_gated_ssl.hub import CheckpointError

FAST = {"dataset": "digits", "image_size": 16, "max_train": 40, "linear_epochs": 1, "linear_seeds": (0,),
        "batch_size": 64, "progress": False}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = timm.create_model("gated_resnet18_cifar", channels=(8, 16, 32, 64), num_classes=0, budget=0.5)
    folder = tmp_path_factory.mktemp("ckpt") / "gated"
    save_for_hf(model, folder, safe_serialization=True)
    return folder


def test_truncated_weights_name_the_file(checkpoint: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes((checkpoint / "config.json").read_bytes())
    data = (checkpoint / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=rf"{broken / 'model.safetensors'} is damaged or truncated"):
        evaluate_checkpoint(broken, **FAST)


def test_missing_test_split_names_the_flag(checkpoint: Path, tmp_path: Path) -> None:
    data = tmp_path / "folder" / "train"
    for label in ("a", "b"):
        (data / label).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), (i * 50, 0, 0)).save(data / label / f"{i}.png")
    with pytest.raises(UnknownSplitError, match=r"test_split='test': image folder .* has no split 'test'; "
                                                r"it has: train.*--test_split"):
        evaluate_checkpoint(checkpoint, **{**FAST, "dataset": str(data.parent)})


def test_output_paths_are_checked_before_the_work(checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="output_dir .* exists and is not a folder"):
        evaluate_checkpoint(checkpoint, output_dir=tmp_path / "file", **FAST)
    with pytest.raises(ValueError, match="image_size must be an integer >= 1"):
        evaluate_checkpoint(checkpoint, **{**FAST, "image_size": 0})
    with pytest.raises(ValueError, match="data_dir .* is not an existing folder"):
        evaluate_checkpoint(checkpoint, data_dir=tmp_path / "nope", **FAST)
