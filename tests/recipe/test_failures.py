"""Bad input, damaged files and interrupted runs fail early, clearly, and
never lose or misrecord anything."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from PIL import Image

from tests.recipe.conftest import ROOT, TINY, run, weights
from timm_gated_ssl.errors import ConfigError, DataError, TrainingStateError, UnknownSplitError
from timm_gated_ssl.recipe import DualSSLModel, NonFiniteLossError, OutputDirNotEmptyError
from timm_gated_ssl.recipe.outputs import list_checkpoints
from timm_gated_ssl.recipe.state_files import MANIFEST

NO_EVAL = ("--eval_split", "null", "--eval_train_split", "null")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One finished 2-step run, written under umask 0o002 (group-writable outputs)."""
    from tests.recipe.conftest import load_pretrain_module

    out = tmp_path_factory.mktemp("finished") / "run"
    old = os.umask(0o002)
    try:
        run(load_pretrain_module(), out, "--max_steps", "2", *NO_EVAL)
    finally:
        os.umask(old)
    yield out


@pytest.fixture
def copy_of(finished_run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(finished_run, target)
    return target


def _image_folder(root: Path, *, splits: tuple[str, ...] = ("train",), per_class: int = 8,
                  bad: str | None = None) -> Path:
    for split in splits:
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                value = (i * 29 + (80 if label == "b" else 0)) % 255
                Image.new("RGB", (20, 20), (value, 255 - value, 64)).save(folder / f"{i}.png")
    if bad is not None:
        (root / bad).write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return root


# ------------------------------------------------------------------ 2: bad model, before any output
def test_unreachable_budget_is_refused_before_the_output_dir_exists(pretrain: Any, tmp_path: Path) -> None:
    """Width gates with 2 levels cannot go below half of every block: t_d 0.3 is refused, naming
    the floor (the test of mac_floor checks its value) and the smallest budget that trains."""
    from timm_gated_ssl import mac_floor
    from timm_gated_ssl.recipe.validate import check_budget_reachable

    kwargs = "{channels: [8, 16, 32, 64], gate_type: width, gate_levels: 2}"
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=r"budget 0.3 is unreachable at 16 px: with width gates at their "
                                          r"narrowest level \(2 levels: 1/2 of the channels\), the model still "
                                          r"uses 0\.5\d+ of the dense MACs .*--budget 0\.[56]\d? or more, or raise "
                                          r"gate_levels above 2"):
        run(pretrain, out, "--max_steps", "1", *NO_EVAL, "--model_kwargs", kwargs, "--budget", "0.3")
    assert not out.exists()
    import timm

    backbone = timm.create_model("gated_resnet18_cifar", budget=0.3, channels=[8, 16, 32, 64], gate_type="width",
                                 gate_levels=2)
    floor = mac_floor(backbone, (3, 16, 16))
    check_budget_reachable(backbone, floor, image_size=16)  # the floor itself trains
    channel = timm.create_model("gated_resnet18_cifar", budget=0.3, channels=[8, 16, 32, 64])
    with pytest.raises(ConfigError, match=r"every channel gate off"):
        check_budget_reachable(channel, 0.01, image_size=16)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("--model", "gated_resnet19"), r"'gated_resnet19' is not registered in timm; close names: .*gated_resnet18"),
        (("--model", "convnext_atto"), r"'convnext_atto' has no gates: gating: true needs a gated architecture.*gating: false"),
        (("--model_kwargs", "{foo: 1}"), r"does not accept model_kwargs \{'foo': 1\}.*foo"),
        (("--model", "gated_resnet18_cifar", "--gating", "false"), r"needs a plain model.*'resnet18_cifar'"),
    ],
)
def test_bad_model_is_refused_before_the_output_dir_exists(pretrain: Any, tmp_path: Path,
                                                            args: tuple[str, ...], match: str) -> None:
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=match):
        run(pretrain, out, "--max_steps", "1", *NO_EVAL, *args)
    assert not out.exists()


def test_output_dir_that_is_a_file(pretrain: Any, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        run(pretrain, tmp_path / "f", "--max_steps", "1", *NO_EVAL)


# ------------------------------------------- 3 + 13: a run that failed before its first saved state
def test_failed_first_run_is_not_an_earlier_run(pretrain: Any, tmp_path: Path, monkeypatch) -> None:
    original = DualSSLModel.forward

    def poisoned(self, *a, **kw):
        out = original(self, *a, **kw)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(DualSSLModel, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match="no training state had been saved yet") as info:
        run(pretrain, tmp_path, "--max_steps", "2", *NO_EVAL)
    assert "last saved training state" not in str(info.value)
    assert (tmp_path / "config.yaml").exists() and not list_checkpoints(tmp_path)
    monkeypatch.setattr(DualSSLModel, "forward", original)
    with pytest.raises(TrainingStateError, match="start the run without --resume_from_checkpoint"):
        run(pretrain, tmp_path, "--max_steps", "2", *NO_EVAL, "--resume_from_checkpoint", "latest")
    metrics = run(pretrain, tmp_path, "--max_steps", "2", *NO_EVAL)  # the corrected rerun is accepted
    assert metrics["steps"] == 2


def test_exported_run_without_state_is_refused_without_resume_hint(copy_of: Path, pretrain: Any) -> None:
    shutil.rmtree(copy_of / "checkpoints")
    with pytest.raises(OutputDirNotEmptyError, match="no training state to resume from") as info:
        run(pretrain, copy_of, "--max_steps", "2", *NO_EVAL)
    assert "--resume_from_checkpoint latest" not in str(info.value)


def test_overwrite_and_resume_together_are_refused(copy_of: Path, pretrain: Any) -> None:
    with pytest.raises(ConfigError, match="pass one"):
        run(pretrain, copy_of, "--max_steps", "2", *NO_EVAL, "--overwrite", "--resume_from_checkpoint", "latest")


# ------------------------------------------------------------------------ 4 + 15: image folders
def test_corrupt_image_is_named_before_training(pretrain: Any, tmp_path: Path) -> None:
    data = _image_folder(tmp_path / "data", bad="train/a/broken.png")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"1 of 17 images cannot be decoded: .*train/a/broken\.png") as info:
        pretrain.main(["--cpu", "--no_progress", "--output_dir", str(out), *TINY, "--dataset", str(data),
                       "--train_subset", "17", "--max_steps", "1", *NO_EVAL])
    assert "\n" not in str(info.value)
    assert not out.exists()  # nothing was trained or written


def test_folder_without_test_split_names_the_option(pretrain: Any, tmp_path: Path) -> None:
    data = _image_folder(tmp_path / "data")
    out = tmp_path / "out"
    with pytest.raises(UnknownSplitError, match=rf"eval_split='test': image folder {data} has no split "
                                                r"'test'; it has: train.*eval_split: null") :
        pretrain.main(["--cpu", "--no_progress", "--output_dir", str(out), *TINY, "--dataset", str(data),
                       "--train_subset", "16", "--max_steps", "1"])
    assert not out.exists()
    with pytest.raises(UnknownSplitError, match=r"train_split='training'.*it has: train"):
        pretrain.main(["--cpu", "--no_progress", "--output_dir", str(out), *TINY, "--dataset", str(data),
                       "--train_split", "training", "--max_steps", "1", *NO_EVAL])


def test_folder_without_images(pretrain: Any, tmp_path: Path) -> None:
    empty = tmp_path / "empty" / "a"
    empty.mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=rf"image folder {empty.parent} holds no images"):
        pretrain.main(["--cpu", "--no_progress", "--output_dir", str(tmp_path / "out"), *TINY,
                       "--dataset", str(empty.parent), "--max_steps", "1", *NO_EVAL])


def test_missing_data_dir(pretrain: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data_dir .* is not an existing folder"):
        run(pretrain, tmp_path / "out", "--data_dir", str(tmp_path / "nope"), "--max_steps", "1", *NO_EVAL)


# ---------------------------------------------------------------------- 5, 6, 7: damaged states
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_weights_in_state_are_refused(copy_of: Path, pretrain: Any) -> None:
    state = list_checkpoints(copy_of)[-1]
    _truncate(state / "model.safetensors")
    with pytest.raises(TrainingStateError, match=r"is damaged: model\.safetensors has \d+ bytes"):
        run(pretrain, copy_of, "--max_steps", "3", *NO_EVAL, "--resume_from_checkpoint", "latest")


def test_corrupt_rng_state_is_refused(copy_of: Path, pretrain: Any) -> None:
    state = list_checkpoints(copy_of)[-1]
    rng = state / "random_states_0.pkl"
    data = bytearray(rng.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    rng.write_bytes(bytes(data))
    with pytest.raises(TrainingStateError, match=r"is damaged: random_states_0\.pkl"):
        run(pretrain, copy_of, "--max_steps", "3", *NO_EVAL, "--resume_from_checkpoint", "latest")


def test_state_without_a_manifest_is_refused(copy_of: Path, pretrain: Any) -> None:
    """The recipes write the manifest last: a state without one cannot be checked, so it is refused."""
    state = list_checkpoints(copy_of)[-1]
    (state / MANIFEST).unlink()
    with pytest.raises(TrainingStateError, match=rf"{state} has no manifest\.json: it was not saved by "
                                                 r"timm_gated_ssl's recipes"):
        run(pretrain, copy_of, "--max_steps", "3", *NO_EVAL, "--resume_from_checkpoint", "latest")


def test_run_folder_is_not_a_training_state(copy_of: Path, pretrain: Any) -> None:
    with pytest.raises(TrainingStateError, match=r"a run folder, not a training state; use latest .*checkpoints/step_N"):
        run(pretrain, copy_of, "--max_steps", "3", *NO_EVAL, "--resume_from_checkpoint", str(copy_of))


def test_state_from_another_process_count(copy_of: Path, pretrain: Any) -> None:
    state = list_checkpoints(copy_of)[-1]
    manifest = json.loads((state / MANIFEST).read_text())
    manifest["world_size"] = 2
    (state / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(TrainingStateError, match=r"saved by 2 process\(es\).*--num_processes 2"):
        run(pretrain, copy_of, "--max_steps", "3", *NO_EVAL, "--resume_from_checkpoint", "latest")


# --------------------------------------------------------------------- 8: changed hyperparameters
def test_resume_with_changed_hyperparameters_is_refused(copy_of: Path, pretrain: Any) -> None:
    before = {name: (copy_of / name).read_bytes() for name in ("config.yaml", "config.json")}
    with pytest.raises(TrainingStateError, match=r"budget 0\.5 -> 0\.9, batch_size 16 -> 32") as info:
        run(pretrain, copy_of, "--max_steps", "3", *NO_EVAL, "--resume_from_checkpoint", "latest",
            "--budget", "0.9", "--batch_size", "32")
    assert "max_steps" in str(info.value)  # the message lists what a resume may change
    assert {name: (copy_of / name).read_bytes() for name in before} == before  # nothing rewritten
    assert yaml.safe_load((copy_of / "config.yaml").read_text())["budget"] == 0.5


def test_resume_may_change_monitoring_and_stop_fields(copy_of: Path, pretrain: Any) -> None:
    metrics = run(pretrain, copy_of, "--max_steps", "3", *NO_EVAL, "--resume_from_checkpoint", "latest",
                  "--log_every", "5")
    assert metrics["steps"] == 3


# ---------------------------------------- 10 + 11: resuming a finished run, stale temporaries
def test_resuming_a_finished_run_keeps_its_numbers_and_cleans_temporaries(
    copy_of: Path, finished_run: Path, pretrain: Any
) -> None:
    original = json.loads((finished_run / "metrics.json").read_text())
    stale = [copy_of / ".tmp_export_abc123", copy_of / ".tmp_metrics.json.x1", copy_of / "checkpoints" / ".tmp_step_00000009"]
    stale[0].mkdir()
    (stale[0] / "model.safetensors").write_bytes(b"\0" * 1000)
    stale[1].write_text("{")
    shutil.copytree(list_checkpoints(copy_of)[-1], stale[2])
    metrics = run(pretrain, copy_of, "--max_steps", "2", *NO_EVAL, "--resume_from_checkpoint", "latest")
    for key in ("steps", "images_per_s", "wall_time_s"):
        assert metrics[key] == original[key], key
    assert metrics["images_per_s"] > 1 and metrics["wall_time_s"] > 0.01
    assert not [p for p in stale if p.exists()]
    a, b = weights(finished_run), weights(copy_of)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ 12: permissions
def test_outputs_honour_the_umask(finished_run: Path) -> None:
    # Written under umask 0o002: every file 0664, every folder 0775 (tempfile and safetensors
    # alone would give 0600 / 0700).
    entries = [finished_run, *finished_run.rglob("*")]
    modes = {p.relative_to(finished_run).as_posix(): p.stat().st_mode & 0o777 for p in entries}
    for name in ("model.safetensors", "config.json", "metrics.json", "config.yaml"):
        assert modes[name] == 0o664, (name, oct(modes[name]))
    for name, mode in modes.items():
        is_dir = (finished_run / name).is_dir()
        assert mode == (0o775 if is_dir else 0o664), (name, oct(mode))


# ------------------------------------------------------------- the one-line error of the scripts
def _script(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300, check=False)


def test_pretrain_script_prints_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("epochs: 3\n  lr: 0.1\n")
    done = _script("recipes/pretrain.py", "--config", str(config), "--output_dir", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [f"error: {config}: line 2, column 5: malformed YAML: mapping values are not allowed here"]
    assert not (tmp_path / "out").exists()


def test_knn_k_larger_than_the_bank_is_refused_before_training(pretrain: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"knn_k=20 neighbours, but the k-NN bank .* holds 5 images"):
        run(pretrain, tmp_path / "out", "--max_steps", "1", "--knn_max_bank", "5")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ refused or accepted as a user types it
def test_gate_levels_with_channel_gates_is_refused_before_the_output_dir_exists(pretrain: Any, tmp_path: Path) -> None:
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=r"gate_levels=16, but 'gated_resnet18_cifar' builds channel gates"):
        run(pretrain, out, "--max_steps", "1", *NO_EVAL, "--model_kwargs", "{channels: [8, 16, 32, 64], gate_levels: 16}")
    assert not out.exists()


def test_an_exponent_only_learning_rate_trains(pretrain: Any, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run(pretrain, out, "--max_steps", "1", *NO_EVAL, "--lr", "1e-3")
    assert yaml.safe_load((out / "config.yaml").read_text())["lr"] == 1e-3
