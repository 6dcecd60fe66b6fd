"""What makes a saved training state trustworthy: a manifest, checked before every resume.

``accelerator.load_state`` is lenient where an exact resume cannot be: a damaged
``random_states_0.pkl`` is skipped with an info-level log line (the run then continues with other
gate noise and augmentations), a missing rank's file likewise, and nothing stops a resume with
other hyperparameters from rewriting the run's ``config.yaml``. So every state this recipe saves
carries ``manifest.json``:

* the size and SHA-256 of every file, so any truncation or bit flip is found before loading;
* the number of processes that saved it (each saved its own RNG state);
* the run's configuration, so a resume that changes a field that defines the run (the budget,
  the batch size, the schedule, the data, ...) is refused, listing the changes. Fields that only
  steer monitoring, logging or where things are (the config class's ``RESUMABLE``) may change.

Both training recipes use it: :func:`check_resume` takes any
:class:`~timm_gated_ssl.recipe.config_base.RecipeConfig`.

A state without a manifest (cut off while saving, or not saved by these recipes) is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from ..errors import TrainingStateError
from ..files import atomic_write_json
from .config import PretrainConfig
from .config_base import RecipeConfig

__all__ = [
    "MANIFEST",
    "RESUMABLE_FIELDS",
    "changed_fields",
    "check_resume",
    "is_training_state",
    "read_manifest",
    "verify_state",
    "write_manifest",
]

MANIFEST = "manifest.json"
RESUMABLE_FIELDS = PretrainConfig.RESUMABLE
"""The pretraining recipe's resumable fields (each config class declares its own ``RESUMABLE``)."""
_RNG = "random_states_{}.pkl"
_FORMAT = 1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(state_dir: str | Path, *, step: int, world_size: int,
                   config: dict[str, Any] | None = None) -> Path:
    """Record the files of ``state_dir`` (size, SHA-256), the process count and the config."""
    state_dir = Path(state_dir)
    files = {
        p.relative_to(state_dir).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(state_dir.rglob("*")) if p.is_file() and p.name != MANIFEST
    }
    payload = {"format": _FORMAT, "step": int(step), "world_size": int(world_size),
               "config": config, "files": files}
    return atomic_write_json(state_dir / MANIFEST, payload)


def is_training_state(path: str | Path) -> bool:
    """Whether ``path`` looks like an Accelerate training state (with or without a manifest)."""
    path = Path(path)
    return (path / MANIFEST).is_file() or (path / _RNG.format(0)).is_file()


def read_manifest(state_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of a state, ``None`` when it has none."""
    path = Path(state_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TrainingStateError(f"{path} is damaged ({err}); {_older_hint(Path(state_dir))}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise TrainingStateError(f"{path} is not a training-state manifest; {_older_hint(Path(state_dir))}")
    return manifest


def _older_hint(state_dir: Path) -> str:
    others = sorted(p.name for p in state_dir.parent.glob("step_*") if p != state_dir and p.is_dir())
    if others:
        return (f"an exact resume from it is impossible: resume from an older state with "
                f"--resume_from_checkpoint {state_dir.parent / others[-1]}, or start over with --overwrite")
    return "an exact resume from it is impossible: start over with --overwrite"


def verify_state(state_dir: str | Path, *, world_size: int) -> dict[str, Any]:
    """Check that ``state_dir`` is complete and intact and was saved by ``world_size`` processes.

    Returns:
        Its manifest.

    Raises:
        TrainingStateError: The manifest is missing (the state was cut off while saving, or not
            saved by these recipes), a file is missing, truncated or changed since it was saved,
            or the state was saved by another number of processes.
    """
    state_dir = Path(state_dir)
    manifest = read_manifest(state_dir)
    if manifest is None:
        raise TrainingStateError(
            f"training state {state_dir} has no {MANIFEST}: it was not saved by timm_gated_ssl's "
            f"recipes (which write it last), so it cannot be checked; {_older_hint(state_dir)}"
        )
    for name, record in manifest["files"].items():
        path = state_dir / name
        problem = None
        if not path.is_file():
            problem = "is missing"
        elif path.stat().st_size != record.get("size"):
            problem = f"has {path.stat().st_size} bytes instead of the {record.get('size')} saved"
        elif _sha256(path) != record.get("sha256"):
            problem = "does not match the checksum recorded when it was saved"
        if problem:
            raise TrainingStateError(
                f"training state {state_dir} is damaged: {name} {problem}; {_older_hint(state_dir)}"
            )
    saved_ranks = int(manifest.get("world_size", 0))
    if saved_ranks != world_size:
        raise TrainingStateError(
            f"training state {state_dir} was saved by {saved_ranks} process(es), and this run has "
            f"{world_size}: each process resumes its own RNG and data shard, so an exact resume "
            f"needs --num_processes {saved_ranks}"
        )
    return manifest


def changed_fields(saved: dict[str, Any], current: dict[str, Any], defaults: dict[str, Any], *,
                   resumable: frozenset[str] = RESUMABLE_FIELDS) -> dict[str, tuple[Any, Any]]:
    """Run-defining fields whose value differs: ``{field: (saved, current)}``.

    A field the saved config lacks (added to the recipe later) counts as its default.
    """
    changes = {}
    for name, value in current.items():
        if name in resumable:
            continue
        before = saved.get(name, defaults.get(name))
        if before != value and not (isinstance(before, (int, float)) and isinstance(value, (int, float))
                                    and not isinstance(before, bool) and float(before) == float(value)):
            changes[name] = (before, value)
    return changes


def check_resume(state_dir: str | Path, config: RecipeConfig, *, world_size: int,
                 run_config: str | Path | None = None) -> None:
    """Everything a resume needs, checked before anything is loaded or written.

    Args:
        state_dir: The training state.
        config: The resumed run's config (``PretrainConfig``, ``FinetuneConfig``).
        world_size: Processes of the resumed run.
        run_config: The run's ``config.yaml``, the record for a state saved without a manifest.

    Raises:
        TrainingStateError: The state is damaged or incomplete, from another process count, or
            the config changes fields that define the run (all of them are listed).
    """
    manifest = verify_state(state_dir, world_size=world_size)
    saved = (manifest or {}).get("config")
    if saved is None and run_config is not None and Path(run_config).is_file():
        try:
            saved = yaml.safe_load(Path(run_config).read_text())
        except (OSError, yaml.YAMLError):
            saved = None
    if not isinstance(saved, dict):
        return
    changes = changed_fields(saved, config.to_dict(), config.defaults(), resumable=config.RESUMABLE)
    if changes:
        listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())
        raise TrainingStateError(
            f"resuming {state_dir} with changed hyperparameters that define the run: {listed}. The "
            "weights were trained with the saved values: drop these overrides to continue the run, "
            "or start a new run in another --output_dir. Fields a resume may change: "
            f"{', '.join(sorted(config.RESUMABLE))}"
        )
