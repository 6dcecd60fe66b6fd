"""timm_gated_ssl.files: atomic writes with the umask's permissions, damaged-file detection."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from timm_gated_ssl.errors import ConfigError, DamagedFileError
from timm_gated_ssl.files import (
    atomic_write_json,
    check_output_dir,
    check_safetensors,
    honour_umask,
    remove_stale_temporaries,
    staging_dir,
)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_write_honours_the_umask(tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        path = atomic_write_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary left


def test_safetensors_permissions_fixed(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with staging_dir(tmp_path, name="x_") as staging:
            save_file({"w": torch.zeros(2)}, str(staging / "w.safetensors"))
            assert (staging / "w.safetensors").stat().st_mode & 0o777 == 0o600  # what safetensors does
            honour_umask(staging)
            assert (staging / "w.safetensors").stat().st_mode & 0o777 == 0o644
            assert staging.stat().st_mode & 0o777 == 0o755
    finally:
        os.umask(old)
    assert not list(tmp_path.iterdir())  # the staging folder is removed


def test_check_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.arange(100.0)}, str(path))
    assert check_safetensors(path) == ["w"]
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(DamagedFileError, match=rf"{path} is damaged or truncated"):
        check_safetensors(path)
    with pytest.raises(DamagedFileError, match="does not exist"):
        check_safetensors(tmp_path / "missing.safetensors")


def test_remove_stale_temporaries(tmp_path: Path) -> None:
    (tmp_path / ".tmp_a").mkdir()
    (tmp_path / ".tmp_b.json.x").write_text("{")
    (tmp_path / "keep.json").write_text("{}")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".tmp_a", ".tmp_b.json.x"]
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"]


def test_check_output_dir_accepts_new_and_existing_folders_and_leaves_nothing(tmp_path: Path) -> None:
    assert check_output_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert check_output_dir(tmp_path) == tmp_path
    assert list(tmp_path.iterdir()) == []  # the probe folder is gone, nothing was created


def test_check_output_dir_refuses_a_file_and_a_path_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=r"--out .*f exists and is not a folder"):
        check_output_dir(tmp_path / "f", name="--out")
    with pytest.raises(ConfigError, match=r"cannot be written: .*f is not a folder"):
        check_output_dir(tmp_path / "f" / "run")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_check_output_dir_refuses_a_file_system_that_takes_no_new_folders() -> None:
    # os.access says yes to root here; making a folder fails, and so must the check.
    with pytest.raises(ConfigError, match=r"--output_dir /proc/timm_gated_ssl_run cannot be written: /proc refuses"):
        check_output_dir("/proc/timm_gated_ssl_run", name="--output_dir")
