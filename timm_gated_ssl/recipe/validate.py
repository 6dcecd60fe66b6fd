"""Checks of a pretraining config, run before anything is built or written.

Reading the file and checking each field on its own are the config's (:mod:`.config_base`: strict
YAML, range table, finite floats). What is checked here needs more than the values, each failing
with a :class:`~timm_gated_ssl.errors.ConfigError` of one line that names the field, the bad value
and what is valid:

* :func:`check_environment` checks what the values point at (called by ``recipes/pretrain.py``
  before the output folder is touched): the model is registered in timm, accepts the keyword
  arguments and has gates exactly when ``gating`` is on (built on the ``meta`` device, so it costs
  no memory), and ``data_dir`` is an existing folder.
* :func:`check_budget_reachable` checks, once the data fixes the image size and the backbone is
  built, that the budget is above the smallest MAC fraction the model can run at (width gates
  with few levels cannot go below their narrowest level), so no run trains towards a budget it
  can never reach.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .config import AUGMENTATIONS
from .config_base import parse_value, read_yaml

if TYPE_CHECKING:
    import torch

    from .config import PretrainConfig

__all__ = [
    "AUGMENTATIONS", "check_budget_reachable", "check_environment", "check_fields", "check_model",
    "parse_value", "read_yaml",
]


def check_fields(config: PretrainConfig) -> None:
    """Check every field's value on its own: :meth:`RecipeConfig.check_fields` (kept for callers of
    earlier versions; ``PretrainConfig`` runs it when built).

    Raises:
        ConfigError: Naming the first bad field, its value and the valid range or choices.
    """
    config.check_fields()


# ------------------------------------------------------------------------------ environment
def _close_names(name: str, *, limit: int = 5) -> list[str]:
    import timm

    return difflib.get_close_matches(name, timm.list_models(), n=limit, cutoff=0.6)


def check_model(config: PretrainConfig) -> None:
    """The model exists, takes ``model_kwargs`` and has gates exactly when ``gating`` is on.

    The model is built on the ``meta`` device (no memory, no weights initialised for real).

    Raises:
        ConfigError: Listing close registered names, the gated architectures, or the argument
            the model refused.
    """
    import timm
    import torch

    from ..attach import has_gates

    name = config.model
    if not timm.is_model(name):
        close = _close_names(name)
        hint = f"; close names: {', '.join(close)}" if close else ""
        gated = ", ".join(timm.list_models("gated_*"))
        raise ConfigError(f"model {name!r} is not registered in timm{hint}. Gated models: {gated}")
    gated_models = timm.list_models("gated_*")

    def build(kwargs: dict[str, Any]) -> torch.nn.Module:
        with torch.device("meta"):
            return timm.create_model(name, **kwargs)

    try:
        backbone = build(config.model_args())
    except TypeError as err:
        if config.gating:  # a plain architecture refuses budget=: say that, not which argument
            for args in (dict(config.model_kwargs, num_classes=0), {"num_classes": 0}):
                try:
                    plain = build(args)
                except TypeError:
                    continue
                if not has_gates(plain):
                    raise ConfigError(_not_gated(name, gated_models)) from None
                break
        raise ConfigError(
            f"model {name!r} does not accept model_kwargs {config.model_kwargs!r}: {err}"
        ) from None
    except (ValueError, RuntimeError, AssertionError, KeyError) as err:
        raise ConfigError(f"model {name!r} cannot be built with {config.model_args()!r}: {err}") from None
    if config.gating and not has_gates(backbone):
        raise ConfigError(_not_gated(name, gated_models))
    if config.gating and "gate_levels" in config.model_kwargs:
        from ..attach import gate_config

        gate_type = gate_config(backbone).gate_type
        if gate_type != "width":
            raise ConfigError(
                f"model_kwargs sets gate_levels={config.model_kwargs['gate_levels']!r}, but {name!r} "
                f"builds {gate_type} gates, which have no levels: add gate_type: width to model_kwargs "
                "for width gates, or drop gate_levels"
            )
    if not config.gating and has_gates(backbone):
        plain = name.removeprefix("gated_")
        raise ConfigError(
            f"gating: false trains the vanilla baseline and needs a plain model; {name!r} is gated"
            + (f": use {plain!r}" if timm.is_model(plain) else "")
        )


def _not_gated(name: str, gated_models: list[str]) -> str:
    close = difflib.get_close_matches(f"gated_{name}", gated_models, n=3, cutoff=0.5)
    hint = f" (close: {', '.join(close)})" if close else ""
    return (
        f"model {name!r} has no gates: gating: true needs a gated architecture{hint}; gated "
        f"models: {', '.join(gated_models)}. Set gating: false to train {name!r} as the vanilla "
        "baseline, or attach gates in code (timm_gated_ssl.attach_gates) for any timm ResNet or ViT"
    )


def check_environment(config: PretrainConfig) -> None:
    """Check what the config points at: the model (:func:`check_model`) and ``data_dir``.

    Raises:
        ConfigError: A field naming something that does not exist or cannot be used.
    """
    if config.data_dir is not None and not Path(config.data_dir).is_dir():
        raise ConfigError(f"data_dir {config.data_dir!r} is not an existing folder")
    if config.dataset.startswith((".", "/", "~")) and not Path(config.dataset).expanduser().is_dir():
        raise ConfigError(f"dataset {config.dataset!r} looks like a path but is not an existing folder")
    check_model(config)


def check_budget_reachable(backbone: torch.nn.Module, budget: float, *, image_size: int,
                           flag: str = "--budget") -> None:
    """The gated ``backbone`` can run at ``budget`` of its dense MACs at ``image_size``.

    The floor is :func:`~timm_gated_ssl.calibration.mac_floor` (every gate off; width gates at
    their narrowest level). Training towards a budget below it drives every gate to the floor and
    leaves a checkpoint that no calibration can bring to ``budget``.

    Args:
        flag: The option that set ``budget``, named in the error.

    Raises:
        ConfigError: ``budget`` below the floor, naming the floor and the smallest valid budget.
    """
    from ..attach import gate_config
    from ..calibration import mac_floor
    from ..compute.inputs import expected_input

    channels = expected_input(backbone)[0] or 3
    floor = mac_floor(backbone, (channels, image_size, image_size))
    if budget >= floor:
        return
    gates = gate_config(backbone)
    width = gates.gate_type == "width"
    how = (f"width gates at their narrowest level ({gates.levels} levels: 1/{gates.levels} of the channels)"
           if width else "every channel gate off")
    fix = f", or raise gate_levels above {gates.levels} for a narrower level" if width else ""
    raise ConfigError(
        f"budget {budget:g} is unreachable at {image_size} px: with {how}, the model still uses "
        f"{floor:.4f} of the dense MACs (stem, downsample and gates are never gated); pass {flag} "
        f"{math.ceil(floor * 100) / 100:g} or more{fix}"
    )
