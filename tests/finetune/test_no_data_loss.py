"""Nothing a user has is ever overwritten by ``recipes/finetune.py``, and every check runs before
any write: each case runs the script as a user would and checks the exit status, the single
``error:`` line and the md5 of every file that existed before."""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import timm
import yaml
from PIL import Image
from timm.models import save_for_hf

from tests.finetune.conftest import FINETUNE_TINY
from tests.helpers import one_error_line, snapshot
from timm_gated_ssl.finetune import FinetuneConfig

STOP = ["--max_steps", "2"]


def _cli(finetune: Any, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = finetune.cli([*FINETUNE_TINY, *args])
    return one_error_line(code, capsys.readouterr().err)


@pytest.fixture
def checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """A copy of the pretrained checkpoint, so a failing test cannot damage the shared one."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "pretrained"))


@pytest.fixture(scope="module")
def finished(finetune: Any, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-step linear run with a saved training state, written under umask 022."""
    out = tmp_path_factory.mktemp("finetuned") / "run"
    old = os.umask(0o022)
    try:
        assert finetune.cli([*FINETUNE_TINY, "--checkpoint", str(tiny_checkpoint), "--output_dir", str(out),
                             *STOP]) == 0
    finally:
        os.umask(old)
    return out


@pytest.fixture
def run_copy(finished: Path, tmp_path: Path) -> Iterator[Path]:
    yield Path(shutil.copytree(finished, tmp_path / "run"))


# ------------------------------------------------------------- 1: output folder and checkpoint overlap
@pytest.mark.parametrize("where", ["same", "inside", "contains"])
def test_output_dir_overlapping_the_checkpoint_is_refused_whatever_the_flags(
    finetune: Any, checkpoint: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    before = snapshot(checkpoint.parent)
    output = {"same": checkpoint, "inside": checkpoint / "linear", "contains": checkpoint.parent}[where]
    how = {"same": "is", "inside": "is inside", "contains": "contains"}[where]
    err = _cli(finetune, capsys, "--checkpoint", str(checkpoint), "--output_dir", str(output), "--overwrite")
    assert f"--output_dir {output} {how} --checkpoint {checkpoint}" in err
    assert snapshot(checkpoint.parent) == before
    assert not (checkpoint / "linear").exists()


def test_another_spelling_of_the_checkpoint_folder_is_refused(
    finetune: Any, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link = checkpoint.parent / "link"
    link.symlink_to(checkpoint, target_is_directory=True)
    before = snapshot(checkpoint)
    err = _cli(finetune, capsys, "--checkpoint", str(checkpoint), "--output_dir", str(link / ".." / "link"),
               "--overwrite")
    assert " is --checkpoint " in err
    assert snapshot(checkpoint) == before


# ------------------------------------------------------------- 4-6: resume checks before any write
def test_refused_resume_rewrites_nothing(finetune: Any, tiny_checkpoint: Path, run_copy: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(run_copy)
    err = _cli(finetune, capsys, "--checkpoint", str(tiny_checkpoint), "--output_dir", str(run_copy), *STOP,
               "--resume_from_checkpoint", str(run_copy / "checkpoints" / "step_00000099"), "--lr", "0.7")
    assert "step_00000099" in err and "is not a folder" in err
    assert snapshot(run_copy) == before
    assert yaml.safe_load((run_copy / "config.yaml").read_text())["lr"] == 0.1


@pytest.mark.parametrize("change", [["--batch_size", "16"], ["--lr", "0.7"]])
def test_resume_with_changed_run_fields_is_refused(finetune: Any, tiny_checkpoint: Path, run_copy: Path,
                                                   capsys: pytest.CaptureFixture[str], change: list[str]) -> None:
    before = snapshot(run_copy)
    err = _cli(finetune, capsys, "--checkpoint", str(tiny_checkpoint), "--output_dir", str(run_copy), *STOP,
               "--resume_from_checkpoint", "latest", *change)
    field = change[0][2:]
    assert "changed hyperparameters that define the run" in err and f"{field} " in err
    assert "max_steps" in err  # the fields a resume may change are listed
    assert snapshot(run_copy) == before


def test_resume_from_a_damaged_state_is_refused(finetune: Any, tiny_checkpoint: Path, run_copy: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (state,) = sorted((run_copy / "checkpoints").iterdir())[-1:]
    rng = state / "random_states_0.pkl"
    rng.write_bytes(rng.read_bytes()[:-7] + b"garbage")
    before = snapshot(run_copy)
    err = _cli(finetune, capsys, "--checkpoint", str(tiny_checkpoint), "--output_dir", str(run_copy), *STOP,
               "--resume_from_checkpoint", "latest")
    assert "random_states_0.pkl does not match the checksum" in err
    assert snapshot(run_copy) == before


def test_overwrite_and_resume_together_are_refused(finetune: Any, tiny_checkpoint: Path, run_copy: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(run_copy)
    err = _cli(finetune, capsys, "--checkpoint", str(tiny_checkpoint), "--output_dir", str(run_copy), *STOP,
               "--resume_from_checkpoint", "latest", "--overwrite")
    assert "pass one" in err
    assert snapshot(run_copy) == before


# ------------------------------------------------------------- 7, 13, 17: one config loader for both recipes
@pytest.mark.parametrize(("text", "match"), [
    ("epochs: 1\nepochs: 3\n", r"c\.yaml: line 2, column 1: malformed YAML: key 'epochs' is given twice"),
    ("epochs: 1\nbudgets: [0.3\n", r"c\.yaml: line \d+, column \d+: malformed YAML"),
])
def test_bad_config_files_are_named_with_line_and_column(finetune: Any, tmp_path: Path, text: str, match: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(text)
    err = _cli(finetune, capsys, "--checkpoint", "x", "--output_dir", str(tmp_path / "o"), "--config", str(config))
    assert re.search(match, err), err
    assert not (tmp_path / "o").exists()


def test_every_float_that_python_reads_is_accepted() -> None:
    config = FinetuneConfig.load(None, ["--lr", "1e-3", "--min_lr", "5E-6", "--budgets", "[3e-1, 0.5]"])
    assert (config.lr, config.min_lr, config.budgets) == (1e-3, 5e-6, [0.3, 0.5])


# ------------------------------------------------------------- 8: outputs honour the umask
def test_every_output_file_is_0644_under_umask_022(finished: Path) -> None:
    files = [p for p in finished.rglob("*") if p.is_file()]
    assert (finished / "heads.safetensors") in files
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert set(modes.values()) == {0o644}, modes
    assert not [p for p in finished.rglob(".tmp_*")]


# ------------------------------------------------------------- 12: labels checked before training
def test_a_negative_label_names_the_row_and_the_file(finetune: Any, tiny_checkpoint: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "images"
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        for i in range(48):
            Image.new("RGB", (16, 16), (i * 5, 100, 200 - i * 4)).save(root / split / f"{i}.png")
        (root / split / "metadata.csv").write_text(
            "file_name,label\n" + "\n".join(f"{i}.png,{-1 if (split, i) == ('train', 5) else i % 2}"
                                            for i in range(48)) + "\n")
    err = _cli(finetune, capsys, "--checkpoint", str(tiny_checkpoint), "--output_dir", str(tmp_path / "o"),
               "--dataset", str(root), "--train_subset", "32")
    assert "label -1 in column 'label' at row 5" in err and str(root / "train" / "5.png") in err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------- 16: the NaN message tells the truth
def test_nan_with_nothing_saved_says_so(finetune: Any, tiny_checkpoint: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from timm_gated_ssl.finetune import LinearHeads

    original = LinearHeads.forward

    def poisoned(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(LinearHeads, "forward", poisoned)
    err = _cli(finetune, capsys, "--checkpoint", str(tiny_checkpoint), "--output_dir", str(tmp_path / "o"))
    assert "the loss became nan at step 1" in err
    assert "no training state had been saved yet" in err and "is kept" not in err


# ------------------------------------------------------------- 18: an unreachable budget, before any state
@pytest.fixture(scope="module")
def width_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Width gates with 2 levels: no input can go below half of every gated width."""
    folder = tmp_path_factory.mktemp("width") / "ckpt"
    model = timm.create_model("gated_resnet18_cifar", channels=[8, 16, 32, 64], num_classes=0, budget=0.7,
                              gate_type="width", gate_levels=2)
    save_for_hf(model, folder, safe_serialization=True,
                model_args={"channels": [8, 16, 32, 64], "budget": 0.7, "gate_type": "width", "gate_levels": 2})
    return folder


@pytest.mark.parametrize("args, flag", [(["--mode", "full", "--budget", "0.3"], "--budget"),
                                        (["--budgets", "[0.3]"], "--budgets")])
def test_unreachable_budget_is_refused_before_training(finetune: Any, width_checkpoint: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str], args: list[str],
                                                       flag: str) -> None:
    err = _cli(finetune, capsys, "--checkpoint", str(width_checkpoint), "--output_dir", str(tmp_path / "o"), *args)
    assert "budget 0.3 is unreachable at 32 px" in err and f"pass {flag} 0." in err  # digits: 32 px
    assert not (tmp_path / "o").exists()


def test_the_classifier_records_its_preprocessing(finished: Path) -> None:
    """``timm.data.resolve_data_config`` on the fine-tuned classifier gives the crop and statistics
    its heads were trained and evaluated with (16 px digits), not the architecture's defaults."""
    from timm_gated_ssl.data.datasets import DATASET_PRESETS

    model = timm.create_model(f"local-dir:{finished}", pretrained=True)
    config = timm.data.resolve_data_config({}, model=model)
    assert config["input_size"] == (3, 16, 16) and config["crop_pct"] == 1.0
    assert config["mean"] == pytest.approx(DATASET_PRESETS["digits"].mean)
