"""The run's output directory: refusal to clobber, atomic training states and model export.

Layout of ``output_dir``::

    config.json, model.safetensors   timm checkpoint (``timm.create_model("local-dir:DIR")``)
    metrics.json, config.yaml        final metrics and the resolved configuration
    checkpoints/step_00000123/       Accelerate training states (``--resume_from_checkpoint``)

Everything is written to a temporary sibling first and moved into place with ``os.replace``, so a
run killed while saving leaves the previous checkpoint loadable.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from timm.models import save_for_hf
from torch import nn

CHECKPOINTS = "checkpoints"
_PREFIX = "step_"
RUN_FILES = ("config.json", "model.safetensors", "metrics.json", "config.yaml", CHECKPOINTS)


class OutputDirNotEmptyError(FileExistsError):
    """The output directory holds an earlier run."""


def prepare_output_dir(path: str | Path, *, overwrite: bool, resuming: bool) -> Path:
    """Create ``path``, refusing one that holds an earlier run unless overwriting or resuming."""
    path = Path(path)
    earlier = [name for name in RUN_FILES if (path / name).exists()]
    if earlier and not (overwrite or resuming):
        raise OutputDirNotEmptyError(
            f"{path} holds an earlier run ({', '.join(earlier)}); pass --overwrite to replace it or "
            "--resume_from_checkpoint latest to continue it"
        )
    if earlier and overwrite and not resuming:
        for name in earlier:
            target = path / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete training states, oldest first (temporary, half-written ones are ignored)."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))


def resolve_checkpoint(output_dir: str | Path, which: str) -> Path:
    """``"latest"`` -> the newest complete state in ``output_dir``; otherwise ``which`` as a path."""
    if which == "latest":
        states = list_checkpoints(output_dir)
        if not states:
            raise FileNotFoundError(f"no training state to resume from in {Path(output_dir) / CHECKPOINTS}")
        return states[-1]
    path = Path(which)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {which!r} is not a directory")
    return path


def save_training_state(accelerator: Accelerator, output_dir: str | Path, step: int, *, keep: int = 2) -> Path:
    """``accelerator.save_state`` into a temporary folder, then rename it into place (atomic).

    Every process must call this (each saves its own RNG state). Only the newest ``keep`` states
    are kept.
    """
    root = Path(output_dir) / CHECKPOINTS
    final = root / f"{_PREFIX}{step:08d}"
    staging = root / f".tmp_{_PREFIX}{step:08d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically."""
    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(payload, handle, indent=2)
    os.replace(handle.name, path)


def export_model(model: nn.Module, output_dir: str | Path, *, model_args: dict[str, Any] | None = None) -> None:
    """Save ``model`` in timm's format (``config.json`` + ``model.safetensors``), atomically."""
    output_dir = Path(output_dir)
    model = model.to(memory_format=torch.contiguous_format)  # safetensors stores dense tensors
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".export_") as staging:
        save_for_hf(model, staging, model_args=model_args, safe_serialization=True)
        for name in ("model.safetensors", "config.json"):  # weights first: config marks completion
            os.replace(Path(staging) / name, output_dir / name)
