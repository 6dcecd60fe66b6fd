"""Load a checkpoint: a timm model folder, a pretraining run's output folder, ``hf-hub:``, or a module.

Beside the Hub loader (:mod:`.load`): every recipe and benchmark loads its input model here, with
one-line errors naming the file (``CheckpointError``), and gets the pretraining run's
``config.yaml`` with it (image size, data) when the folder holds one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import yaml
from torch import nn

from ..errors import DamagedFileError
from ..files import check_safetensors
from .errors import CheckpointError
from .load import check_architecture

__all__ = ["WEIGHT_FILES", "LoadedCheckpoint", "load_checkpoint", "load_run"]

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""Weight files a timm checkpoint directory may hold (``save_for_hf`` writes the first)."""

@dataclass(frozen=True)
class LoadedCheckpoint:
    """A model to evaluate, with what the report says about it.

    Attributes:
        model: The encoder, float32, in eval mode.
        name: Its architecture (timm name).
        source: Where it came from (a folder, ``hf-hub:...`` or ``<module>``).
        pretrain_config: The pretraining run's ``config.yaml`` when the folder holds one, else {}.
    """

    model: nn.Module
    name: str
    source: str
    pretrain_config: dict[str, Any]


def load_checkpoint(checkpoint: str | os.PathLike[str] | nn.Module) -> nn.Module:
    """Load a timm checkpoint directory (``config.json`` + ``model.safetensors``) with clear errors.

    Args:
        checkpoint: A directory written by ``recipes/pretrain.py`` or ``timm.models.save_for_hf``,
            an ``"hf-hub:ORG/NAME"`` id, or a model (returned as is).

    Returns:
        The model, in float32 and eval mode (modules passed in are returned unchanged).

    Raises:
        CheckpointError: The directory does not exist, lacks ``config.json`` or the weights, or
            timm cannot load it.
        UnknownArchitectureError: ``config.json`` names an architecture timm does not know (the
            message names ``import timm_gated_ssl`` and the gated models it registers).
    """
    return load_run(checkpoint).model


def load_run(checkpoint: str | os.PathLike[str] | nn.Module) -> LoadedCheckpoint:
    """Load ``checkpoint`` (see :func:`load_checkpoint`) with its name, source and pretraining config."""
    if isinstance(checkpoint, nn.Module):
        cfg = getattr(checkpoint, "pretrained_cfg", None) or {}
        name = cfg.get("architecture") or type(checkpoint).__name__
        return LoadedCheckpoint(checkpoint, str(name), "<module>", {})
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(
            f"checkpoint must be a directory, an 'hf-hub:' id or an nn.Module, got "
            f"{type(checkpoint).__name__}"
        )
    text = os.fspath(checkpoint)
    if text.startswith("hf-hub:"):
        from .load import load_from_hub

        model = load_from_hub(text).float().eval()
        return LoadedCheckpoint(model, text[len("hf-hub:") :], text, {})
    path = Path(text)
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint {path} is not a directory; pass the output_dir of recipes/pretrain.py or a "
            "folder written by timm.models.save_for_hf (config.json + model.safetensors)"
        )
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointError(
            f"no config.json in {path}: not a timm checkpoint directory (recipes/pretrain.py writes "
            "config.json + model.safetensors when training ends; a folder under checkpoints/ is an "
            "Accelerate training state, not an export)"
        )
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise CheckpointError(
            f"no weights in {path}: expected one of {', '.join(WEIGHT_FILES)} next to config.json "
            "(was the export interrupted?)"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {config_path}: {err}") from None
    architecture = config.get("architecture") if isinstance(config, dict) else None
    if not isinstance(architecture, str) or not architecture:
        raise CheckpointError(f"{config_path} has no 'architecture' entry; not a timm config")
    check_architecture(architecture, source=str(config_path))
    if (path / WEIGHT_FILES[0]).is_file():
        try:
            check_safetensors(path / WEIGHT_FILES[0])
        except DamagedFileError as err:
            raise CheckpointError(str(err)) from None
    try:
        model = timm.create_model(f"local-dir:{path}", pretrained=True)
    except (RuntimeError, ValueError, KeyError, OSError) as err:
        raise CheckpointError(f"timm cannot load {path} ({architecture}): {err}") from None
    pretrain_config: dict[str, Any] = {}
    if (path / "config.yaml").is_file():
        try:
            loaded = yaml.safe_load((path / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            loaded = None
        pretrain_config = loaded if isinstance(loaded, dict) else {}
    return LoadedCheckpoint(model.float().eval(), architecture, str(path), pretrain_config)
