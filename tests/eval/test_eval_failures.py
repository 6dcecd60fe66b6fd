"""On the evaluation side: a truncated checkpoint and a missing split
are named in one line, before any long pass; paths are checked first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from PIL import Image
from timm.models import save_for_hf

import timm_gated_ssl  # noqa: F401
from tests.helpers import load_script, one_error_line, snapshot
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


@pytest.mark.parametrize(("max_train", "knn_k", "message"), [
    (1, 20, (r"max_train=1 leaves 1 labelled image\(s\) .* fewer than the 10 classes or knn_k=20 neighbours: "
            r"pass --max_train 20 or more \(or a smaller --knn_k\)")),
    (5, 3, r"max_train=5 leaves 5 labelled image\(s\) .*: pass --max_train 10 or more$"),
])
def test_a_bank_smaller_than_the_classes_or_k_is_refused(checkpoint: Path, tmp_path: Path, max_train: int,
                                                         knn_k: int, message: str) -> None:
    """A 1-image bank gave a valid-looking results.json; it is refused before any pass, naming the option."""
    out = tmp_path / "eval"
    with pytest.raises(ValueError, match=message):
        evaluate_checkpoint(checkpoint, **{**FAST, "max_train": max_train, "knn_k": knn_k}, output_dir=out)
    assert not out.exists()


def _evaluate_recipe() -> Any:
    return load_script("recipes/evaluate.py")


def test_the_recipe_refuses_a_one_image_bank(checkpoint: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code = _evaluate_recipe().cli(["--checkpoint", str(checkpoint), "--dataset", "digits", "--image_size", "16",
                                    "--max_train", "1", "--cpu", "--no_progress",
                                    "--output_dir", str(tmp_path / "eval")])
    line = one_error_line(code, capsys.readouterr().err)
    assert "max_train=1 leaves 1 labelled image(s)" in line and "--max_train 20 or more" in line
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("where", ["same", "parent"])
def test_export_dir_never_replaces_the_checkpoint(checkpoint: Path, tmp_path: Path, where: str) -> None:
    import shutil

    copy = Path(shutil.copytree(checkpoint, tmp_path / "parent" / "ckpt"))
    before = snapshot(tmp_path)
    export_dir = copy if where == "same" else copy.parent
    with pytest.raises(ConfigError, match=f"export_dir {export_dir} (is|contains) checkpoint {copy}"):
        evaluate_checkpoint(copy, **FAST, budgets=(0.5,), export_dir=export_dir)
    assert snapshot(tmp_path) == before
