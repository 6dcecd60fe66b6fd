"""Checks of a pretraining config, run before anything is built or written.

Three layers, each failing with a :class:`~timm_gated_ssl.errors.ConfigError` of one line that
names the field, the bad value and what is valid:

* :func:`read_yaml` reads a config file: a malformed file is reported with its path, line and
  column; a duplicated key is refused (PyYAML would silently keep the last one).
* :func:`check_fields` checks every field's value on its own (called by
  ``PretrainConfig.__post_init__``): a range table for the known fields, and for every float field,
  known or added later, that it is finite (YAML reads ``.nan`` and ``.inf`` as floats).
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

import dataclasses
import difflib
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import ConfigError

if TYPE_CHECKING:
    import torch

    from .config import PretrainConfig

__all__ = [
    "AUGMENTATIONS", "check_budget_reachable", "check_environment", "check_fields", "check_model", "read_yaml",
]

AUGMENTATIONS = ("batched", "per_image")
"""Values of ``PretrainConfig.augmentation`` (see :mod:`timm_gated_ssl.data.batched_views`)."""

_INF = math.inf
# field -> (low, low inclusive, high, high inclusive); None values are allowed where the type is optional.
_RANGES: dict[str, tuple[float, bool, float, bool]] = {
    "projector_hidden_dim": (1, True, _INF, False),
    "projector_out_dim": (1, True, _INF, False),
    "budget_weight": (0, True, _INF, False),
    "bound_weight": (0, True, _INF, False),
    "bound_alpha": (0, True, _INF, False),
    "byol_momentum": (0, True, 1, False),
    "simclr_temperature": (0, False, _INF, False),
    "image_size": (1, True, _INF, False),
    "blur_prob_gated": (0, True, 1, True),
    "blur_prob_dense": (0, True, 1, True),
    "train_subset": (1, True, _INF, False),
    "num_workers": (0, True, _INF, False),
    "epochs": (1, True, _INF, False),
    # BatchNorm in training mode and every SSL loss here need two images per process.
    "batch_size": (2, True, _INF, False),
    "lr": (0, False, _INF, False),
    "weight_decay": (0, True, _INF, False),
    "momentum": (0, True, 1, False),
    "lars_trust": (0, False, _INF, False),
    "warmup_epochs": (0, True, _INF, False),
    "min_lr": (0, True, _INF, False),
    "max_steps": (1, True, _INF, False),
    "grad_accum_steps": (1, True, _INF, False),
    "log_every": (1, True, _INF, False),
    "knn_every": (0, True, _INF, False),
    "save_every": (0, True, _INF, False),
    "knn_k": (1, True, _INF, False),
    "knn_temperature": (0, False, _INF, False),
    "knn_max_bank": (1, True, _INF, False),
    "seed": (0, True, 2**32 - 1, True),  # numpy's seed range (accelerate.set_seed seeds numpy)
}
_NON_EMPTY = ("model", "dataset", "train_split", "eval_train_split", "eval_split", "data_dir", "hub_id")
# Set as their own fields: a model_kwargs entry would be silently overridden by model_args().
_RESERVED_KWARGS = ("num_classes", "budget", "separate_bn")


def _interval(low: float, low_inc: bool, high: float, high_inc: bool) -> str:
    if high == _INF:
        return f">= {low:g}" if low_inc else f"> {low:g}"
    return f"in {'[' if low_inc else '('}{low:g}, {high:g}{']' if high_inc else ')'}"


def _in_range(value: float, low: float, low_inc: bool, high: float, high_inc: bool) -> bool:
    above = value >= low if low_inc else value > low
    below = value <= high if high_inc else value < high
    return above and below


def check_fields(config: PretrainConfig) -> None:
    """Check every field's value on its own (types are checked when loading, see ``_coerce``).

    Raises:
        ConfigError: Naming the first bad field, its value and the valid range or choices.
    """
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{field.name} must be a finite number, got {value!r}")
        if field.name in _RANGES and value is not None and not isinstance(value, bool) \
                and isinstance(value, (int, float)):
            bounds = _RANGES[field.name]
            if not _in_range(value, *bounds):
                raise ConfigError(f"{field.name} must be {_interval(*bounds)}, got {value!r}")
        if field.name in _NON_EMPTY and isinstance(value, str) and not value.strip():
            raise ConfigError(f"{field.name} must be a non-empty string" +
                              (" or null" if field.name != "model" else "") + f", got {value!r}")
    if config.min_lr > config.lr:
        raise ConfigError(f"min_lr ({config.min_lr:g}) must be <= lr ({config.lr:g})")
    if (config.eval_split is None) != (config.eval_train_split is None):
        raise ConfigError(
            f"eval_split ({config.eval_split!r}) and eval_train_split ({config.eval_train_split!r}) "
            "are the k-NN monitor's query and bank splits: set both, or both to null to train "
            "without the monitor"
        )
    if config.knn_every and config.eval_split is None:
        raise ConfigError(f"knn_every={config.knn_every} needs the k-NN monitor's splits: set "
                          "eval_split and eval_train_split, or knn_every: 0")
    if config.hub_id is not None and config.hub_id.count("/") != 1:
        raise ConfigError(f"hub_id must be a Hub dataset id 'owner/name', got {config.hub_id!r}")
    bad_keys = [k for k in config.model_kwargs if not isinstance(k, str)]
    if bad_keys:
        raise ConfigError(f"model_kwargs keys must be argument names (strings), got {bad_keys!r}")
    reserved = [k for k in _RESERVED_KWARGS if k in config.model_kwargs]
    if reserved:
        raise ConfigError(
            f"model_kwargs may not set {', '.join(reserved)}: the recipe sets them (num_classes=0 "
            "for pooled features; budget and separate_bn are config fields of their own)"
        )
    augmentation = getattr(config, "augmentation", AUGMENTATIONS[0])
    if augmentation not in AUGMENTATIONS:
        raise ConfigError(f"unknown augmentation {augmentation!r}; valid: {', '.join(AUGMENTATIONS)}")


# ------------------------------------------------------------------------------ YAML files
class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice (first at line {seen[key].start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _yaml_error(source: str, err: yaml.YAMLError) -> ConfigError:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    where = f": line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    detail = f"{problem}" + (f" ({context})" if context else "")
    return ConfigError(f"{source}{where}: malformed YAML: {detail}")


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML config file into a dict (an empty file gives ``{}``).

    Raises:
        ConfigError: The file is missing, unreadable, not valid YAML (the message names the line
            and column), has a duplicated key, or is not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"--config {path} is a folder; pass a YAML file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    try:
        loaded = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        raise _yaml_error(str(path), err) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys to values, got a "
                          f"{type(loaded).__name__}")
    return loaded


def parse_value(option: str, raw: str) -> Any:
    """A command-line value as a YAML scalar or flow collection (``"0.3"``, ``"{a: 1}"``)."""
    try:
        return yaml.load(raw, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        raise _yaml_error(f"--{option} {raw!r}", err) from None


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


def check_budget_reachable(backbone: torch.nn.Module, budget: float, *, image_size: int) -> None:
    """The gated ``backbone`` can run at ``budget`` of its dense MACs at ``image_size``.

    The floor is :func:`~timm_gated_ssl.calibration.mac_floor` (every gate off; width gates at
    their narrowest level). Training towards a budget below it drives every gate to the floor and
    leaves a checkpoint that no calibration can bring to ``budget``.

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
        f"{floor:.4f} of the dense MACs (stem, downsample and gates are never gated); pass --budget "
        f"{math.ceil(floor * 100) / 100:g} or more{fix}"
    )
