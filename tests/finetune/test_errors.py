"""Bad inputs give one clear ``error:`` line (exit status 2) before any training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import timm
from PIL import Image
from timm.models import save_for_hf

from tests.finetune.conftest import FINETUNE_TINY


def _cli(finetune: Any, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = finetune.cli([*FINETUNE_TINY, *args])
    err = capsys.readouterr().err.strip()
    # The last line is the error (datasets may draw a progress bar above it), and the only one.
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and err.endswith(lines[0]) and "Traceback" not in err
    return lines[0]


def test_unknown_checkpoint(finetune: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _cli(finetune, capsys, "--checkpoint", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "o"))
    assert "is not a directory" in err
    assert not (tmp_path / "o").exists()  # refused before the output folder is made


def test_checkpoint_without_gates(finetune: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain"
    save_for_hf(timm.create_model("resnet18_cifar", channels=[8, 16, 32, 64], num_classes=0), plain,
                safe_serialization=True)
    err = _cli(finetune, capsys, "--checkpoint", str(plain), "--output_dir", str(tmp_path / "o"), "--mode", "full")
    assert "has no gates" in err and "--mode linear" in err
    assert not (tmp_path / "o").exists()


def test_labels_missing(finetune: Any, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(folder / f"{i}.png")
    err = _cli(finetune, capsys, "--checkpoint", str(tiny_checkpoint), "--output_dir", str(tmp_path / "o"),
               "--dataset", str(folder))
    assert "no labels" in err
    assert not (tmp_path / "o").exists()


def test_num_classes_mismatch(finetune: Any, tiny_checkpoint: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    err = _cli(finetune, capsys, "--checkpoint", str(tiny_checkpoint), "--output_dir", str(tmp_path / "o"),
               "--num_classes", "5")
    assert "num_classes=5" in err and "10 classes" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_unwritable_output_dir(finetune: Any, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _cli(finetune, capsys, "--checkpoint", str(tiny_checkpoint), "--output_dir", "/proc/timm_gated_ssl_ft")
    assert "--output_dir /proc/timm_gated_ssl_ft cannot be written" in err


@pytest.mark.parametrize("flag, value", [("--budget", "1.5"), ("--budgets", "[0.3, 0]")])
def test_budget_out_of_range(finetune: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             flag: str, value: str) -> None:
    err = _cli(finetune, capsys, "--checkpoint", "x", "--output_dir", str(tmp_path / "o"), flag, value)
    assert "(0, 1]" in err


def test_unknown_key_and_missing_dataset(finetune: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "valid keys" in _cli(finetune, capsys, "--checkpoint", "x", "--output_dir", str(tmp_path), "--lr_x", "1")
    code = finetune.cli(["--checkpoint", "x", "--output_dir", str(tmp_path)])
    assert code == 2 and "--dataset is required" in capsys.readouterr().err


def test_budget_needs_mode_full(finetune: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _cli(finetune, capsys, "--checkpoint", "x", "--output_dir", str(tmp_path), "--budget", "0.3")
    assert "mode full" in err and "use budgets" in err
