"""What every registered gated model does after building its timm backbone, and before it runs
(the input check of ``forward_features`` / ``forward_intermediates``)."""

from __future__ import annotations

import copy
import inspect
from typing import TypeVar

import torch
from torch import nn

from ..attach import attach_gates
from ..calibration import budget_key, select_budget_on_load
from ..compute.inputs import check_batch_shape

TimmModel = TypeVar("TimmModel", bound=nn.Module)


def setup_gates(
    model: nn.Module,
    *,
    gated: bool,
    budget: float,
    separate_bn: bool,
    tau: float,
    gate_reduction: int,
    calibrated_budgets: dict[str, float] | None,
    gate_type: str = "channel",
    gate_levels: int = 8,
) -> None:
    """Attach gates (when ``gated``), keep the calibration table, and apply ``budget`` if calibrated.

    The calibrated budget is re-applied after timm loads pretrained weights, so
    ``timm.create_model(..., pretrained=True, budget=b)`` runs at budget ``b``.
    """
    if gated:
        attach_gates(model, budget=budget, separate_bn=separate_bn, tau=tau, reduction=gate_reduction,
                     gate_type=gate_type, levels=gate_levels)
    model.calibrated_budgets = {
        budget_key(float(k)): float(v) for k, v in (calibrated_budgets or {}).items()
    }
    if gated and budget_key(budget) in model.calibrated_budgets:
        select_budget_on_load(model, budget)


GATE_KWARGS: tuple[str, ...] = tuple(inspect.signature(setup_gates).parameters)[1:]
"""The gate options every gated model's constructor takes beside timm's own (what
:func:`setup_gates` reads; the plain base architecture takes none of them). One list, derived from
the signature, for the static export that rebuilds the base."""


def check_forward_input(model: nn.Module, images: object, *, method: str = "forward") -> None:
    """Refuse a wrongly shaped batch before the model runs, naming the shape it takes.

    Without this a 3-D tensor or a wrong channel count fails deep inside the stem conv or the patch
    embedding with torch's own message. The check is :func:`~timm_gated_ssl.compute.inputs.
    check_batch_shape` (the one ``count_macs`` runs): shapes only, so it costs microseconds and
    leaves every output bit for bit as timm computes it.

    It is skipped while the forward is traced or compiled (``torch.compile``, ``torch.export`` and
    so ``torch.onnx.export(..., dynamo=True)``, ``torch.jit.trace``, FX symbolic tracing): there the
    shapes may be symbolic, and reading them as Python ints would specialise a dynamic batch or
    image size (or fail on an FX proxy), while a traced graph keeps torch's own shape errors.

    Args:
        model: The gated (or plain registered) model about to run.
        images: Its input.
        method: The method called, named in the message (``forward_intermediates`` ...).

    Raises:
        InputShapeError: ``images`` is not a ``(B, C, H, W)`` tensor of the model's channels (and
            size, for a ViT with a fixed ``img_size``).
    """
    # Guarded, not run under tracing: a non-strict torch.export of a dynamic_img_size ViT with
    # symbolic H, W would otherwise specialise them (int() on a SymInt), torch.jit.trace would warn
    # of a Python int in the trace, and FX cannot branch on a proxy's shape.
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or isinstance(images, torch.fx.Proxy):
        return
    check_batch_shape(model, images, caller=f"{type(model).__name__}.{method}")


def as_timm_class(model: nn.Module, timm_class: type[TimmModel]) -> TimmModel:
    """``model`` as an instance of the timm class it extends, sharing its modules and parameters.

    Our models' ``__prepare_scriptable__`` returns this, so ``torch.jit.script`` compiles timm's own
    methods: TorchScript cannot compile the ``super()`` call of the checking overrides (their
    check is Python only and a scripted model keeps torch's shape errors). Scripting still fails on
    gated models (their hooks are Python); it keeps working for the plain baselines
    (``resnet18_cifar``, ``vit_tiny_patch4_32``), as for any timm model.
    """
    plain = copy.copy(model)  # a new object over the same submodules, parameters and buffers
    plain.__class__ = timm_class
    return plain  # type: ignore[return-value]
