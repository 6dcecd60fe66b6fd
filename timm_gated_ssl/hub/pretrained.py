"""Pretrained tags, timm style (``gated_resnet18_cifar.vicreg_cifar10``), from ONE table.

:data:`PRETRAINED` lists every checkpoint that has really been published on the Hub: tag -> Hub id,
the ``model_args`` of its ``config.json`` (gate configuration, calibrated budgets), its budgets and
headline metrics. :func:`register_pretrained` applies entries to timm's registry, so that

- ``timm.list_models("gated_*", pretrained=True)`` lists the tags, and
- ``timm.create_model(tag, pretrained=True)`` downloads the weights from the entry's Hub repo.

Nothing has been published yet, so the shipped table is EMPTY: a tag must never point at a
repository that does not exist. To add one, push a checkpoint (:func:`~timm_gated_ssl.hub.push_to_hub`),
build its entry with :func:`entry_from_hub` and paste it into :data:`PRETRAINED` (see
``docs/hub.md``).

timm has no public API to add a tag to an already registered architecture, so this module writes
the same private registry tables that ``@register_model`` fills from a module's ``default_cfgs``
(``timm.models._registry``), and wraps the architecture's entry point so that a tagged
``create_model`` call gets the entry's ``model_args`` as defaults: timm only applies a checkpoint's
``model_args`` for ``hf-hub:`` names, and a gated checkpoint (separate norms, calibrated budgets,
``num_classes=0``) does not load into an architecture built with other arguments.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from timm.models import _registry
from timm.models._pretrained import PretrainedCfg

from .errors import UnknownArchitectureError

__all__ = [
    "PRETRAINED",
    "PretrainedEntry",
    "entry_from_hub",
    "register_pretrained",
    "registered_pretrained",
    "unregister_pretrained",
]


@dataclass(frozen=True)
class PretrainedEntry:
    """One published checkpoint.

    Attributes:
        name: ``architecture.tag``, e.g. ``"gated_resnet18_cifar.vicreg_cifar10"``.
        hf_hub_id: ``namespace/name`` of the Hub repository, optionally ``@revision``.
        model_args: ``model_args`` of the checkpoint's ``config.json`` (defaults of the tagged
            ``create_model``; explicit keyword arguments still win).
        budgets: Budgets ``t_d`` the checkpoint is calibrated for (``budget=`` picks one).
        metrics: Headline numbers, e.g. ``{"dense/linear_top1": 90.4, "gated-t0.3/linear_top1":
            90.3, "gated-t0.3/flops_reduction": 0.66}``.
        license: Licence of the weights.
        description: One line for the pretrained cfg's ``description``.
    """

    name: str
    hf_hub_id: str
    model_args: Mapping[str, Any] = field(default_factory=dict)
    budgets: tuple[float, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)
    license: str = "apache-2.0"
    description: str = ""

    @property
    def architecture(self) -> str:
        """Architecture part of :attr:`name`."""
        return _registry.split_model_name_tag(self.name)[0]

    @property
    def tag(self) -> str:
        """Tag part of :attr:`name`."""
        return _registry.split_model_name_tag(self.name)[1]


PRETRAINED: tuple[PretrainedEntry, ...] = ()
"""Published checkpoints. Empty until a checkpoint is really on the Hub (see ``docs/hub.md``)."""

_REGISTERED: dict[str, PretrainedEntry] = {}
_ORIGINAL_ENTRYPOINTS: dict[str, Callable[..., Any]] = {}


def _entrypoint_with_tag_args(arch: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an entry point so that ``create_model("arch.tag")`` uses the tag's ``model_args``."""

    @functools.wraps(fn)
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> Any:
        cfg = kwargs.get("pretrained_cfg")
        entry = _REGISTERED.get(f"{arch}.{cfg}") if isinstance(cfg, str) and cfg else None
        if entry is None:
            return fn(pretrained=pretrained, **kwargs)
        defaults = {k: v for k, v in entry.model_args.items() if k not in kwargs}
        model = fn(pretrained=pretrained, **defaults, **kwargs)
        # create_model records only the caller's kwargs: add the tag's, so a re-export keeps them
        model._model_args = {**getattr(model, "_model_args", {}), **defaults}
        return model

    return entrypoint


def register_pretrained(entries: Iterable[PretrainedEntry] = PRETRAINED) -> list[str]:
    """Add pretrained tags to timm's registry; returns the registered names.

    Call after the architectures are registered (``import timm_gated_ssl`` does both).

    Raises:
        ValueError: If a name has no ``.tag`` part.
        UnknownArchitectureError: If the architecture is not registered in timm.
    """
    names = []
    for entry in entries:
        arch, tag = entry.architecture, entry.tag
        if not tag:
            raise ValueError(f"pretrained name {entry.name!r} needs a tag: 'architecture.tag'")
        if not _registry.is_model(arch):
            raise UnknownArchitectureError(
                f"cannot register {entry.name!r}: architecture {arch!r} is not registered in timm "
                "(import timm_gated_ssl registers the gated models)")
        default = _registry._model_default_cfgs.get(arch)
        base = default.cfgs[default.tags[0]] if default is not None else PretrainedCfg()
        num_classes = entry.model_args.get("num_classes", base.num_classes)
        cfg = replace(base, hf_hub_id=entry.hf_hub_id, url=None, file=None, source=None,
                      architecture=arch, tag=tag, license=entry.license, num_classes=num_classes,
                      description=entry.description or base.description)
        _registry._model_pretrained_cfgs[entry.name] = cfg
        _registry._model_has_pretrained.add(entry.name)
        tagged = _registry._model_with_tags[arch]
        if entry.name not in tagged:
            tagged.append(entry.name)
        if default is not None:
            default.cfgs[tag] = cfg
            if tag not in default.tags:
                default.tags.append(tag)
        if arch not in _ORIGINAL_ENTRYPOINTS:
            _ORIGINAL_ENTRYPOINTS[arch] = _registry._model_entrypoints[arch]
            _registry._model_entrypoints[arch] = _entrypoint_with_tag_args(
                arch, _ORIGINAL_ENTRYPOINTS[arch])
        _REGISTERED[entry.name] = entry
        names.append(entry.name)
    return names


def unregister_pretrained(name: str) -> None:
    """Remove a tag added by :func:`register_pretrained` (used by tests); unknown names are ignored."""
    entry = _REGISTERED.pop(name, None)
    if entry is None:
        return
    arch, tag = entry.architecture, entry.tag
    _registry._model_pretrained_cfgs.pop(name, None)
    _registry._model_has_pretrained.discard(name)
    if name in _registry._model_with_tags.get(arch, []):
        _registry._model_with_tags[arch].remove(name)
    default = _registry._model_default_cfgs.get(arch)
    if default is not None and tag in default.tags:
        default.tags.remove(tag)
        default.cfgs.pop(tag, None)
    if arch in _ORIGINAL_ENTRYPOINTS and not any(e.architecture == arch for e in _REGISTERED.values()):
        _registry._model_entrypoints[arch] = _ORIGINAL_ENTRYPOINTS.pop(arch)


def registered_pretrained() -> dict[str, PretrainedEntry]:
    """The entries currently applied to timm's registry, by name."""
    return dict(_REGISTERED)


def entry_from_hub(name: str, hf_hub_id: str, *, description: str = "",
                   token: str | None = None) -> PretrainedEntry:
    """Build the table entry of a pushed checkpoint from its ``config.json`` and ``results.json``.

    Args:
        name: ``architecture.tag`` to publish it as; the architecture must match ``config.json``.
        hf_hub_id: ``namespace/name[@revision]`` of the pushed repository.
        description: One line for the pretrained cfg.
        token: Token for a private repository.

    Raises:
        ValueError: If the architecture of ``name`` is not the checkpoint's.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    repo_id, _, revision = hf_hub_id.partition("@")
    from huggingface_hub.errors import HfHubHTTPError

    from .errors import network_error
    from .load import _translate

    try:
        config_file = hf_hub_download(repo_id, "config.json", revision=revision or None, token=token)
    except HfHubHTTPError as err:
        raise _translate(err, hf_hub_id) from None
    except Exception as err:
        translated = network_error(err, action=f"downloading {hf_hub_id}")
        if translated is None:
            raise
        raise translated from None
    config = json.loads(Path(config_file).read_text())
    arch = _registry.split_model_name_tag(name)[0]
    if config.get("architecture") != arch:
        raise ValueError(f"{hf_hub_id} holds a {config.get('architecture')!r}, not a {arch!r}")
    model_args = dict(config.get("model_args") or {})
    metrics: dict[str, float] = {}
    try:
        results = json.loads(Path(hf_hub_download(repo_id, "results.json",
                                                  revision=revision or None, token=token)).read_text())
    except EntryNotFoundError:
        results = {}
    for item in results.get("entries", []):
        label = item["mode"] if item.get("budget") is None else f"{item['mode']}-t{item['budget']:g}"
        for key in ("linear_top1", "knn_top1", "mac_fraction", "flops_reduction"):
            if item.get(key) is not None:
                metrics[f"{label}/{key}"] = float(item[key])
    calibrated = model_args.get("calibrated_budgets") or {}
    budgets = tuple(sorted(float(b) for b in calibrated)) or (
        (float(model_args["budget"]),) if "budget" in model_args else ())
    return PretrainedEntry(name=name, hf_hub_id=hf_hub_id, model_args=model_args, budgets=budgets,
                           metrics=metrics, description=description)
