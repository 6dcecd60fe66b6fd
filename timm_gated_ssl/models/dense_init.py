"""Dense weights into a gated model: what ``pretrained=True`` and ``--init_from`` load.

A gated model's state dict is its timm architecture's plus the gates (``*.dyn_gate.net.*``, the
offset) and, with ``separate_bn``, the gated-mode norm copies (``*.dyn_gate.norms.*``). A plain
timm checkpoint (timm's ImageNet weights, a user's own SSL encoder) has none of these, so
:func:`complete_state_dict` (the ``pretrained_filter_fn`` of every gated model) fills them in:

* the gated norm copies start as copies of the checkpoint's dense norms (the pretrained
  statistics are the best start of the gated mode too);
* the gates start as the model built them (fresh: their training is the job of
  ``recipes/pretrain.py --init_from``), and the model is marked so that switching it to gated mode
  warns once that its gates are untrained (``attach.modes.warn_if_untrained``).

A checkpoint that already has gates (a co-trained one of this library) loads as it is. Keys or
shapes that do not fit are refused with one line naming the source and the first mismatches,
instead of torch's list of every key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..attach import GATE_ATTR
from ..attach.modes import UNTRAINED_ATTR, warn_if_untrained
from ..errors import GatingError

__all__ = ["UNTRAINED_ATTR", "InitMismatchError", "complete_state_dict", "dense_cfg", "warn_if_untrained"]

_SHOWN = 5


class InitMismatchError(GatingError, ValueError):
    """Pretrained weights do not fit the architecture (another depth, width or stem)."""


def _source(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    for key in ("file", "hf_hub_id", "url"):
        if cfg.get(key):
            return str(cfg[key])
    return "the pretrained weights"


def _classifier_keys(model: nn.Module) -> tuple[str, ...]:
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    return tuple(f"{name}." for name in ((names,) if isinstance(names, str) else names))


def complete_state_dict(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``state_dict`` completed with ``model``'s gates and gated norm copies (see the module doc).

    Raises:
        InitMismatchError: Keys missing or unexpected, or shapes that differ (the classifier's
            excepted: timm drops or resizes it for ``num_classes``), naming the first ones.
    """
    out = dict(state_dict)
    own = model.state_dict()
    has_gates = any(f".{GATE_ATTR}." in key for key in out)
    filled = False
    if not has_gates:
        for key, value in own.items():
            if f".{GATE_ATTR}." not in key or key in out:
                continue
            block, _, rest = key.partition(f".{GATE_ATTR}.")
            if rest.startswith("norms."):  # norms.<path with "__">.<tensor> <- <block>.<path>.<tensor>
                name, _, tensor = rest[len("norms."):].partition(".")
                dense = f"{block}.{name.replace('__', '.')}.{tensor}"
                out[key] = out[dense].clone() if dense in out else value
            else:
                out[key] = value
            filled = True
    head = _classifier_keys(model)
    missing = [k for k in own if k not in out and not k.startswith(head)]
    unexpected = [k for k in out if k not in own and not k.startswith(head)]
    shapes = [f"{k} {tuple(out[k].shape)} vs {tuple(own[k].shape)}" for k in own  # the model's order
              if k in out and not k.startswith(head) and out[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{what} {', '.join(keys[:_SHOWN])}" + (f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")
                 for what, keys in (("shape mismatch:", shapes), ("missing:", missing), ("unexpected:", unexpected))
                 if keys]
        arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture", type(model).__name__)
        raise InitMismatchError(
            f"{_source(model)} does not fit {arch}: {'; '.join(parts)}. Pass weights of the same "
            "architecture (depth, widths, stem: a CIFAR-stem model takes no ImageNet weights)"
        )
    if filled:
        setattr(model, UNTRAINED_ATTR, _source(model))
    return out


def chain_filter(first: Callable[..., Any] | None) -> Callable[[Mapping[str, torch.Tensor], nn.Module], dict]:
    """A ``pretrained_filter_fn``: timm's family filter ``first`` (e.g. the ViT one), then
    :func:`complete_state_dict`."""

    def filter_fn(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        return complete_state_dict(first(state_dict, model) if first is not None else state_dict, model)

    return filter_fn


def dense_cfg(arch: str, **overrides: Any) -> dict[str, Any]:
    """The pretrained config of timm's default weights of the plain ``arch`` (where they are, their
    input size and normalisation), to load into the gated ``gated_<arch>``."""
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None:
        return dict(overrides)
    keep = ("url", "hf_hub_id", "hf_hub_filename", "num_classes", "input_size", "pool_size", "crop_pct",
            "crop_mode", "interpolation", "mean", "std", "first_conv", "classifier", "license",
            "fixed_input_size", "test_input_size", "test_crop_pct")
    values = {k: v for k, v in cfg.to_dict().items() if k in keep and v is not None}
    return {**values, **overrides}
