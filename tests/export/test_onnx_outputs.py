"""``recipes/export_onnx.py`` and ``export_onnx`` never write over a file the user has: an existing
file is replaced only when it is an earlier export of ours and ``--overwrite`` is given; a failed
export leaves the earlier files intact and no temporaries. Each case runs the script as a user
would and checks the exit status, the single ``error:`` line and the md5 of every file before."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from timm.models import save_for_hf

import timm_gated_ssl  # noqa: F401
from tests.helpers import load_script, one_error_line, snapshot
from timm_gated_ssl import export_onnx
from timm_gated_ssl.errors import OutputExistsError
from timm_gated_ssl.export.onnx import is_our_export

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def recipe() -> Any:
    return load_script("recipes/export_onnx.py")


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = timm.create_model("gated_resnet18_cifar", channels=[8, 16, 32, 64], num_classes=0)
    save_for_hf(model, tmp_path / "ckpt", safe_serialization=True, model_args={"channels": [8, 16, 32, 64]})
    return tmp_path / "ckpt"


def _export(recipe: Any, capsys: pytest.CaptureFixture[str], checkpoint: Path, output: Path | str,
            *extra: str) -> tuple[int, str]:
    code = recipe.cli(["--checkpoint", str(checkpoint), "--output", str(output), "--image_size", "16", *extra])
    return code, capsys.readouterr().err


# ------------------------------------------------------------------ 2: never into the checkpoint's files
@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_the_checkpoints_own_files_are_never_replaced(recipe: Any, checkpoint: Path, name: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(checkpoint)
    for flags in ((), ("--overwrite",)):
        err = one_error_line(*_export(recipe, capsys, checkpoint, checkpoint / name, *flags))
        assert f"{checkpoint / name} exists and is not an ONNX export of timm_gated_ssl" in err
    assert snapshot(checkpoint) == before
    assert sorted(p.name for p in checkpoint.iterdir()) == ["config.json", "model.safetensors"]


# ------------------------------------------------------------------ 3: an earlier export needs --overwrite
def test_an_earlier_export_is_replaced_only_with_overwrite(recipe: Any, checkpoint: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "exist.onnx"
    code, _ = _export(recipe, capsys, checkpoint, out)
    assert code == 0 and is_our_export(out) and out.with_name("exist.onnx.data").is_file()
    before = snapshot(tmp_path / "exist.onnx", tmp_path / "exist.onnx.data")
    err = one_error_line(*_export(recipe, capsys, checkpoint, out, "--mode", "gated"))
    assert "exists (an earlier export); pass --overwrite" in err
    assert snapshot(tmp_path / "exist.onnx", tmp_path / "exist.onnx.data") == before
    code, _ = _export(recipe, capsys, checkpoint, out, "--mode", "gated", "--overwrite")
    assert code == 0 and is_our_export(out)
    assert snapshot(out)[str(out)] != before[str(out)]  # the gated graph replaced the dense one


def test_a_foreign_onnx_file_or_data_file_is_never_replaced(recipe: Any, checkpoint: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "theirs.onnx"
    torch.onnx.export(timm.create_model("resnet18", num_classes=0).eval(), (torch.randn(1, 3, 16, 16),),
                      str(foreign), dynamo=True, verbose=False)
    assert not is_our_export(foreign)
    stray = tmp_path / "new.onnx.data"
    stray.write_bytes(b"someone's data")
    before = snapshot(tmp_path)
    err = one_error_line(*_export(recipe, capsys, checkpoint, foreign, "--overwrite"))
    assert "is not an ONNX export of timm_gated_ssl" in err
    err = one_error_line(*_export(recipe, capsys, checkpoint, tmp_path / "new.onnx", "--overwrite"))
    assert f"its external-data file {stray} exists" in err
    assert snapshot(tmp_path) == before
    with pytest.raises(OutputExistsError):  # the library function refuses the same way
        export_onnx(timm.create_model("resnet18", num_classes=0), foreign, input_size=(3, 16, 16), overwrite=True)


# ------------------------------------------------------------------ 11, 15: bad values name their flag
@pytest.mark.parametrize(("flags", "message"), [
    (["--image_size", "0"], "--image_size must be >= 1"),
    (["--static", "--dataset", "digits", "--static_images", "0"], "--static_images must be >= 1"),
    (["--budget", "1.5"], r"--budget must be in (0, 1]"),
    (["--static"], "--static needs --dataset"),
    (["--fixed_budget", "0"], r"--fixed_budget must be in (0, 1]"),
    (["--fixed_budget", "0.3"], "--fixed_budget needs --dataset"),
    (["--fixed_budget", "0.3", "--static", "--dataset", "digits"], "cannot be combined with --static"),
    (["--fixed_budget", "0.3", "--budget", "0.3", "--dataset", "digits"], "cannot be combined with --budget"),
    (["--norm_batches", "2"], "--norm_batches must be >= 0 and needs --fixed_budget"),
])
def test_bad_values_are_refused_naming_the_flag(recipe: Any, checkpoint: Path, tmp_path: Path, flags: list[str],
                                                message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = recipe.cli(["--checkpoint", str(checkpoint), "--output", str(tmp_path / "m.onnx"), *flags])
    assert message in one_error_line(code, capsys.readouterr().err)
    assert not (tmp_path / "m.onnx").exists()


# ------------------------------------------------------------------ 14, 15: the file system refuses
def test_a_folder_as_output_is_refused_and_nothing_is_left(recipe: Any, checkpoint: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    err = one_error_line(*_export(recipe, capsys, checkpoint, folder))
    assert f"--output {folder} is a folder" in err
    assert list(folder.iterdir()) == [] and not list(tmp_path.glob(".tmp_*"))


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_unwritable_folder_names_the_cause(recipe: Any, checkpoint: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    err = one_error_line(*_export(recipe, capsys, checkpoint, "/proc/m.onnx"))
    assert "the folder of --output m.onnx: /proc cannot be written: /proc refuses new files" in err
    assert "tmp" not in err


def test_a_full_disk_keeps_the_earlier_export_and_leaves_no_temporary(
    recipe: Any, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "m.onnx"
    assert _export(recipe, capsys, checkpoint, out)[0] == 0
    before = snapshot(tmp_path)

    def full_disk(self: Any, destination: Any, **kwargs: Any) -> None:
        Path(destination).write_bytes(b"half a graph")  # the writer got this far
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.onnx.ONNXProgram, "save", full_disk)
    err = one_error_line(*_export(recipe, capsys, checkpoint, out, "--overwrite", "--mode", "gated"))
    assert "No space left on device" in err
    assert snapshot(tmp_path) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp_")]
