"""``--init_from``: start co-training from the weights of an encoder the user already has.

A SPEC is anything timm loads with ``pretrained=True`` (a pretrained tag such as
``resnet18.a1_in1k``, ``hf-hub:ORG/NAME``, ``local-dir:DIR``), one of this library's checkpoint
folders (dense-only or co-trained), or a ``.safetensors`` / timm checkpoint file of the
architecture of ``--model``. The weights go into the dense path through the gated model's own
``pretrained_filter_fn`` (``models/dense_init.py``): the gated norm copies start as copies of
the dense norms and the gates start fresh, also when the init is co-trained (its gates are
reset, so every init starts the same way). A checkpoint of another architecture is refused with
one line naming the source and the first mismatching keys, before the output folder is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attach import GATE_ATTR, iter_gates
from ..attach.modes import UNTRAINED_ATTR
from ..errors import ConfigError
from ..models.dense_init import InitMismatchError, complete_state_dict

__all__ = ["WEIGHT_SUFFIXES", "build_backbone", "init_overlay"]

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_FOLDER_FILES = ("model.safetensors", "pytorch_model.bin")


def init_overlay(spec: str) -> dict[str, Any]:
    """The ``pretrained_cfg_overlay`` that points timm at ``spec``'s weights.

    Raises:
        ConfigError: ``spec`` is none of the accepted kinds (the message lists them).
    """
    import timm

    from ..hub.ids import check_repo_id

    if spec.startswith("hf-hub:"):
        repo, _, revision = spec[len("hf-hub:"):].partition("@")
        check_repo_id(repo)
        return {"hf_hub_id": repo + (f"@{revision}" if revision else ""), "url": None, "file": None}
    path = Path(spec.removeprefix("local-dir:")).expanduser()
    if path.is_file():
        if path.suffix not in WEIGHT_SUFFIXES:
            raise ConfigError(f"init_from {spec!r} is a file but not a weights file ({', '.join(WEIGHT_SUFFIXES)})")
        return {"file": str(path)}
    if path.is_dir():
        found = next((path / name for name in _FOLDER_FILES if (path / name).is_file()), None)
        if found is None:
            raise ConfigError(f"init_from {spec!r} is a folder without weights ({' or '.join(_FOLDER_FILES)}): "
                              "pass a checkpoint folder (config.json + model.safetensors) or a weights file")
        return {"file": str(found)}
    if spec.startswith(("local-dir:", ".", "/", "~")) or spec.endswith(WEIGHT_SUFFIXES):
        raise ConfigError(f"init_from {spec!r} does not exist (a file or folder was expected)")
    try:
        cfg = timm.models.get_pretrained_cfg(spec, allow_unregistered=True) if "." in spec else None
    except RuntimeError:  # a known architecture with an unknown tag
        cfg = None
    if cfg is None:
        raise ConfigError(
            f"init_from {spec!r} is not a timm pretrained tag (e.g. resnet18.a1_in1k; "
            "timm.list_pretrained() lists them), an hf-hub:ORG/NAME id, a local-dir:DIR or checkpoint "
            "folder, or a weights file"
        )
    return {"hf_hub_id": cfg.hf_hub_id, "hf_hub_filename": cfg.hf_hub_filename, "url": cfg.url, "file": None}


@torch.no_grad()
def _reset_gates(model: nn.Module, fresh: nn.Module) -> None:
    """Gates as ``fresh`` built them, gated norm copies equal to the dense norms (in place): the
    dense part of ``model``'s state completed as a dense checkpoint is (``complete_state_dict``)."""
    dense = {k: v for k, v in model.state_dict().items() if f".{GATE_ATTR}." not in k}
    model.load_state_dict(complete_state_dict(dense, fresh))


def build_backbone(model_name: str, model_args: dict[str, Any], *, init_from: str | None) -> nn.Module:
    """``timm.create_model(model_name, **model_args)``, with ``init_from``'s weights when given.

    Raises:
        ConfigError: ``init_from`` cannot be resolved, does not fit the architecture (first
            mismatching keys named), or cannot be downloaded (offline: one line saying so).
    """
    import timm

    from ..hub.errors import network_error

    if init_from is None:
        return timm.create_model(model_name, **model_args)
    overlay = init_overlay(init_from)
    try:
        model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **model_args)
    except InitMismatchError as error:
        raise ConfigError(f"init_from {init_from!r}: {error}") from None
    except Exception as error:
        translated = network_error(error, action=f"downloading init_from {init_from!r}")
        if translated is not None:
            raise ConfigError(str(translated)) from None
        if isinstance(error, (OSError, RuntimeError, ValueError, KeyError)):
            raise ConfigError(f"init_from {init_from!r} cannot be loaded into {model_name}: {error}") from None
        raise
    co_trained = getattr(model, UNTRAINED_ATTR, None) is None  # the filter filled no gates in
    if co_trained and next(iter_gates(model), None) is not None:
        _reset_gates(model, timm.create_model(model_name, **model_args))
    setattr(model, UNTRAINED_ATTR, None)  # the recipe is what trains them
    return model
