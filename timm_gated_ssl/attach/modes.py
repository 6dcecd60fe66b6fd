"""Dense and gated modes over the same weights, and the masks of the last gated forward."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..gates import GATE_MODES
from .api import require_gates

UNTRAINED_ATTR = "_untrained_gates"
"""Set on a model whose dense weights were loaded without gates (``models/dense_init.py``): the
source of those weights. Cleared once warned, or by a recipe that trains the gates."""


def warn_if_untrained(model: nn.Module) -> None:
    """Warn once when ``model`` goes into gated mode with gates that were never trained."""
    source = getattr(model, UNTRAINED_ATTR, None)
    if not source:
        return
    setattr(model, UNTRAINED_ATTR, None)
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture", "MODEL")
    warnings.warn(
        f"the gates of this {arch} were never trained: its weights are dense ones from {source}, so "
        "gated mode runs fresh gates (about half the MACs, whatever the budget) and loses accuracy. "
        f"Train them: accelerate launch recipes/pretrain.py --model {arch} --init_from {source} "
        "--budget B --dataset DATA --output_dir OUT (docs/posthoc.md)",
        UserWarning, stacklevel=3,
    )



def _check_mode(mode: object) -> str:
    if mode not in GATE_MODES:
        raise ValueError(f"unknown gate mode {mode!r}; valid modes are {', '.join(GATE_MODES)}")
    return str(mode)


def set_gate_mode(model: nn.Module, mode: str) -> nn.Module:
    """Switch every gate of ``model`` to ``mode`` and return the model.

    ``"dense"``: no gate runs and the model computes exactly what the ungated model computes.
    ``"gated"``: each gated block computes per-sample masks from its input (stochastic in
    ``train()``, deterministic in ``eval()``) and uses its gated norm copies.

    Raises:
        ValueError: ``mode`` is not one of ``"dense"``, ``"gated"``.
        NoGatesError: ``model`` has no gates.
    """
    mode = _check_mode(mode)
    for _, gate in require_gates(model):
        gate.mode = mode
    if mode == "gated":
        warn_if_untrained(model)
    return model


def set_gate_noise(model: nn.Module, scale: float) -> nn.Module:
    """Scale the logistic noise of every gate's training estimator and return the model.

    1 is the paper's estimator; 0 makes training-mode masks the deterministic inference masks
    (the straight-through gradient still flows). Inference (``eval()``) never draws noise.

    Raises:
        ValueError: ``scale`` is not in [0, 1].
        NoGatesError: ``model`` has no gates.
    """
    if not 0.0 <= scale <= 1.0:
        raise ValueError(f"gate noise scale must be in [0, 1], got {scale!r}")
    for _, gate in require_gates(model):
        gate.noise_scale = float(scale)
    return model


def get_gate_mode(model: nn.Module) -> str:
    """The mode of ``model``'s gates (they are always switched together)."""
    return require_gates(model)[0][1].mode


@contextmanager
def gate_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Run the body in ``mode``, then restore the previous mode (also on error).

    Example:
        >>> with gate_mode(model, "gated"):
        ...     z_gated = model(view1)
    """
    mode = _check_mode(mode)
    gates = require_gates(model)
    previous = [gate.mode for _, gate in gates]
    for _, gate in gates:
        gate.mode = mode
    if mode == "gated":
        warn_if_untrained(model)
    try:
        yield model
    finally:
        for (_, gate), old in zip(gates, previous):
            gate.mode = old


def gate_masks(model: nn.Module) -> dict[str, tuple[torch.Tensor, ...]]:
    """Masks of the last gated forward: ``{block_name: (mask_per_width, ...)}``, each ``(B, C)``.

    In training the masks carry the straight-through gradient, so losses built on them (the
    budget loss) reach the gates. A block that has not run in gated mode yet is left out.
    """
    return {name: gate.masks for name, gate in require_gates(model) if gate.masks is not None}


def clear_gate_masks(model: nn.Module) -> None:
    """Forget the recorded masks (e.g. before a forward whose masks you want alone)."""
    for _, gate in require_gates(model):
        gate.masks = None
