"""The run's output directory: refusal to clobber, atomic training states and model export.

Layout of ``output_dir``::

    config.json, model.safetensors   timm checkpoint (``timm.create_model("local-dir:DIR")``)
    metrics.json, config.yaml        final metrics and the resolved configuration
    checkpoints/step_00000123/       Accelerate training states (``--resume_from_checkpoint``),
                                     each with a manifest of checksums (``state_files.py``)

Everything is written to a temporary sibling first and moved into place with ``os.replace``, so a
run killed while saving leaves the previous checkpoint loadable; the next run in the folder removes
such leftovers. Outputs get the permissions of the umask (``timm_gated_ssl.files``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from timm.models import save_for_hf
from torch import nn

from .. import files
from ..errors import OutputExistsError, TrainingStateError
from ..files import TEMP_PREFIX, atomic_write_json, honour_umask, staging_dir
from .state import NonFiniteLossError
from .state_files import is_training_state, write_manifest

CHECKPOINTS = "checkpoints"
_PREFIX = "step_"
RUN_FILES = ("config.json", "model.safetensors", "metrics.json", "config.yaml", CHECKPOINTS)
_EXPORT_FILES = ("model.safetensors", "config.json")


class OutputDirNotEmptyError(OutputExistsError):
    """The output directory holds an earlier run."""


def remove_stale_temporaries(output_dir: str | Path) -> list[Path]:
    """Remove what a killed process left half-written in ``output_dir`` and its ``checkpoints/``:
    the temporary files and folders (``.tmp_*``) of :mod:`timm_gated_ssl.files`."""
    removed = []
    for folder in (Path(output_dir), Path(output_dir) / CHECKPOINTS):
        removed += files.remove_stale_temporaries(folder)
    return removed


def earlier_run(path: str | Path) -> list[str]:
    """What in ``path`` makes it an earlier run: a complete training state or an exported model.

    A folder holding only the ``config.yaml`` (or logs) of a run that failed before its first
    saved state is not an earlier run: there is nothing to resume and nothing to lose.
    """
    path = Path(path)
    found = [name for name in _EXPORT_FILES if (path / name).is_file()]
    if list_checkpoints(path):
        found.append(CHECKPOINTS)
    return found


def refuse_earlier_run(path: str | Path, *, overwrite: bool, resuming: bool) -> None:
    """Raise when ``path`` holds an earlier run that is neither overwritten nor resumed (read-only
    check: ``recipes/pretrain.py`` calls it before loading any data)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputDirNotEmptyError(f"--output_dir {path} is a file, not a folder")
    earlier = earlier_run(path)
    if earlier and not (overwrite or resuming):
        states = CHECKPOINTS in earlier
        raise OutputDirNotEmptyError(
            f"{path} holds an earlier run ({', '.join(earlier)}); pass --overwrite to replace it"
            + (" or --resume_from_checkpoint latest to continue it" if states else
               " (it has no training state to resume from)")
        )


def prepare_output_dir(path: str | Path, *, overwrite: bool, resuming: bool) -> Path:
    """Create ``path``, refusing one that holds an earlier run unless overwriting or resuming
    (:func:`refuse_earlier_run`). Stale temporaries of a killed run are removed
    (:func:`remove_stale_temporaries`)."""
    path = Path(path)
    refuse_earlier_run(path, overwrite=overwrite, resuming=resuming)
    if overwrite and not resuming:
        for name in RUN_FILES:
            target = path / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    path.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    return path


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete training states, oldest first (temporary, half-written ones are ignored)."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))


def resolve_checkpoint(output_dir: str | Path, which: str) -> Path:
    """``"latest"`` -> the newest complete state in ``output_dir``; otherwise ``which`` as a path.

    Raises:
        TrainingStateError: No state to resume from, or ``which`` is not a training state (a run
            folder is named as such, with the paths to pass instead).
    """
    if which == "latest":
        states = list_checkpoints(output_dir)
        if not states:
            raise TrainingStateError(
                f"no training state to resume from in {Path(output_dir) / CHECKPOINTS}: start the run "
                "without --resume_from_checkpoint"
            )
        return states[-1]
    path = Path(which)
    if not path.is_dir():
        raise TrainingStateError(f"--resume_from_checkpoint {which!r} is not a folder; use latest or "
                                 f"{Path(output_dir) / CHECKPOINTS}/step_N")
    if not is_training_state(path):
        states = list_checkpoints(path)
        if states or (path / "config.yaml").is_file() or (path / "config.json").is_file():
            listed = f" (it has {', '.join(p.name for p in states)})" if states else ""
            raise TrainingStateError(
                f"--resume_from_checkpoint {which}: a run folder, not a training state; use latest "
                f"(with --output_dir {path}) or {path / CHECKPOINTS}/step_N{listed}"
            )
        raise TrainingStateError(
            f"--resume_from_checkpoint {which}: not a training state (no manifest.json or "
            f"random_states_0.pkl); use latest or RUN_DIR/{CHECKPOINTS}/step_N"
        )
    return path


def save_training_state(
    accelerator: Accelerator, output_dir: str | Path, step: int, *, keep: int = 2,
    config: dict[str, Any] | None = None,
) -> Path:
    """``accelerator.save_state`` into a temporary folder, then rename it into place (atomic).

    Every process must call this (each saves its own RNG state). The state gets a manifest of
    checksums, the process count and ``config`` (checked by the next resume), and the umask's
    permissions. Only the newest ``keep`` states are kept.
    """
    root = Path(output_dir) / CHECKPOINTS
    final = root / f"{_PREFIX}{step:08d}"
    staging = root / f"{TEMP_PREFIX}{_PREFIX}{step:08d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_manifest(staging, step=step, world_size=accelerator.num_processes, config=config)
        honour_umask(staging)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def non_finite_loss_error(loss: float, *, where: str, output_dir: str | Path) -> NonFiniteLossError:
    """The error for a loss that became NaN or Inf at ``where`` (e.g. ``"step 3 (epoch 0)"``),
    saying truthfully which training state of ``output_dir`` is left to resume from, if any."""
    saved = list_checkpoints(output_dir)
    kept = (f"the last saved training state ({saved[-1]}) is kept" if saved else
            "no training state had been saved yet (save_every), so there is nothing to resume from")
    return NonFiniteLossError(f"the loss became {loss} at {where}; training stopped and {kept}. "
                              "Lower lr or use fp32 / bf16 instead of fp16.")


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically, with the umask's permissions."""
    atomic_write_json(path, payload)


def export_model(model: nn.Module, output_dir: str | Path, *, model_args: dict[str, Any] | None = None,
                 data_config: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> None:
    """Save ``model`` in timm's format (``config.json`` + ``model.safetensors``), atomically, with
    the umask's permissions (safetensors itself writes 0600). ``data_config`` (e.g.
    :func:`~timm_gated_ssl.data.views.eval_data_config`) records the input size and normalisation
    the encoder was trained with in ``config.json``'s ``pretrained_cfg``; ``extra`` adds top-level
    ``config.json`` entries that timm ignores when loading (e.g. ``init_from``)."""
    output_dir = Path(output_dir)
    model = model.to(memory_format=torch.contiguous_format)  # safetensors stores dense tensors
    with staging_dir(output_dir, name="export_") as staging:
        save_for_hf(model, staging, model_config=dict(extra or {}), model_args=model_args,
                    safe_serialization=True, data_config=data_config)
        honour_umask(staging)
        for name in _EXPORT_FILES:  # weights first: config marks completion
            os.replace(staging / name, output_dir / name)
