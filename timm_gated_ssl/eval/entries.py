"""The entries of a checkpoint's result: its passes per mode and budget turned into rows.

:func:`~.checkpoint.evaluate_checkpoint` gives, for a gated checkpoint, the ``dense`` row, the
``gated`` row at the checkpoint's own threshold and one calibrated ``gated`` row per budget, and a
``vanilla`` row for an ungated checkpoint or the baseline (Krishna et al., BMVC 2023, Table 1).
Every row goes through :func:`mode_row` and so through :func:`~.evaluate.evaluate_features`, the
one builder of a row in ``eval/``. The passes come in as a callable (``run``): which model runs in
which mode and when is the caller's order, how a pass runs is ``passes.py``.

Example:
    >>> settings = ProbeSettings(  # doctest: +SKIP
    ...     num_classes=10, knn_k=20, linear_epochs=100, linear_seeds=(0, 1, 2, 3, 4), device=None
    ... )
    >>> train, test = run(model, "dense", "dense")  # doctest: +SKIP
    >>> row = mode_row(  # doctest: +SKIP
    ...     train, test, mode="dense", budget=0.3, macs=5.6e8, dense_macs=5.6e8, settings=settings
    ... )
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..attach import gate_config, has_gates
from ..calibration import calibrated_budgets, gate_offset, set_gate_offset
from ..compute import cost_table
from ..results.evaluation import Mode, ModeEvaluation
from .channel_usage import channel_usage_from_masks
from .evaluate import KNN_TEMPERATURE, evaluate_features
from .passes import SplitPass

__all__ = ["ProbeSettings", "Run", "fixed_entries", "gated_entries", "mode_row", "restored_gates", "vanilla_entry"]

Run = Callable[[nn.Module, str | None, str], tuple[SplitPass, SplitPass]]
"""``run(model, mode, tag)``: the bank and the test pass of ``model`` in ``mode`` (None for an
ungated model), their progress bars labelled ``tag``."""


@dataclass(frozen=True)
class ProbeSettings:
    """What the k-NN and linear probes of every row share (the protocol's settings).

    Attributes:
        num_classes: Classes of the dataset.
        knn_k: Neighbours of the weighted k-NN.
        linear_epochs: Epochs of each linear probe.
        linear_seeds: One probe per seed per row.
        device: Where the probes train (None: the CPU).
    """

    num_classes: int
    knn_k: int
    linear_epochs: int
    linear_seeds: tuple[int, ...]
    device: torch.device | None


def mode_row(
    train: SplitPass,
    test: SplitPass,
    *,
    mode: Mode,
    budget: float | None,
    macs: float,
    dense_macs: float,
    settings: ProbeSettings,
    calibrated: bool = False,
    calibration_mac_fraction: float | None = None,
    gate_offset: float | None = None,
) -> ModeEvaluation:
    """One results row from a mode's bank and test passes, through :func:`evaluate_features`.

    The channel usage comes from the test pass's masks (gated passes); the k-NN votes with
    ``settings.knn_k`` neighbours (at most the bank's size) at T = ``KNN_TEMPERATURE``.
    """
    usage = channel_usage_from_masks(test.masks) if test.masks is not None else None
    return evaluate_features(
        train.features,
        test.features,
        num_classes=settings.num_classes,
        mode=mode,
        budget=budget,
        macs=macs,
        dense_macs=dense_macs,
        knn_k=min(settings.knn_k, len(train.features)),
        knn_temperature=KNN_TEMPERATURE,
        linear_seeds=settings.linear_seeds,
        linear_epochs=settings.linear_epochs,
        device=settings.device,
        calibrated=calibrated,
        calibration_mac_fraction=calibration_mac_fraction,
        gate_offset=gate_offset,
        channel_usage=usage,
    )


def vanilla_entry(
    model: nn.Module,
    run: Run,
    *,
    tag: str,
    input_size: tuple[int, int, int],
    dense_macs: float,
    settings: ProbeSettings,
) -> ModeEvaluation:
    """The ``vanilla`` row of an ungated checkpoint or of the baseline, at its own dense MACs.

    A gated baseline runs in its dense mode, an ungated model as it is.
    """
    train, test = run(model, "dense" if has_gates(model) else None, tag)
    macs = float(cost_table(model, input_size).dense)
    return mode_row(train, test, mode="vanilla", budget=None, macs=macs, dense_macs=dense_macs,
                    settings=settings)


@contextmanager
def restored_gates(model: nn.Module) -> Iterator[float]:
    """Yield the model's gate offset; put it and the train flag back afterwards, also on errors."""
    original, was_training = gate_offset(model), model.training
    try:
        yield original
    finally:
        set_gate_offset(model, original)
        model.train(was_training)


def gated_entries(
    model: nn.Module,
    run: Run,
    *,
    original: float,
    budgets: Sequence[float],
    offsets: dict[float, float],
    fractions: dict[float, float],
    dense_macs: float,
    settings: ProbeSettings,
) -> list[ModeEvaluation]:
    """The dense row, the gated row at the checkpoint's threshold and one calibrated row per budget.

    Eval-mode gates are deterministic: a calibration that lands on an offset already evaluated
    (e.g. the checkpoint's own, when training met the budget) reuses its passes. The model is left
    at the last offset (see :func:`restored_gates`).

    Args:
        model: The gated checkpoint, at its own gate offset.
        run: The passes (see :data:`Run`).
        original: The checkpoint's own gate offset.
        budgets: The calibrated budgets, in the order of their rows.
        offsets: ``{budget: gate offset}`` found by calibration.
        fractions: ``{budget: F_g / F_d on the calibration data}``.
        dense_macs: The dense MACs per image.
        settings: The probes' settings.
    """
    trained_budget = gate_config(model).budget
    train, test = run(model, "dense", "dense")
    entries = [mode_row(train, test, mode="dense", budget=trained_budget, macs=dense_macs,
                        dense_macs=dense_macs, settings=settings)]
    own_calibrated = abs(calibrated_budgets(model).get(trained_budget, math.nan) - original) < 1e-6
    points: list[tuple[float, float, bool, float | None]] = [
        (trained_budget, original, own_calibrated, None)
    ] + [(b, offsets[b], True, fractions[b]) for b in budgets]
    passes: dict[float, tuple[SplitPass, SplitPass]] = {}
    for budget, offset, calibrated, calibration_fraction in points:
        set_gate_offset(model, offset)
        if offset not in passes:
            tag = f"gated t_d={budget:g}" + (" cal" if calibrated else "")
            passes[offset] = run(model, "gated", tag)
        train, test = passes[offset]
        assert test.fraction is not None
        entries.append(mode_row(
            train, test, mode="gated", budget=budget,
            macs=dense_macs * float(test.fraction.mean()), dense_macs=dense_macs,
            settings=settings, calibrated=calibrated,
            calibration_mac_fraction=calibration_fraction, gate_offset=float(gate_offset(model)),
        ))
    return entries


def fixed_entries(
    model: nn.Module,
    run: Run,
    *,
    budgets: Sequence[float],
    loader: Iterable[Any],
    dense_macs: float,
    settings: ProbeSettings,
) -> list[ModeEvaluation]:
    """One ``fixed`` row per budget: the plain model :func:`~timm_gated_ssl.export_at_budget`
    exports from ``loader`` (the calibration data), at its counted MACs.

    Every process exports on the same full ``loader``, so every process holds the same model.
    """
    from ..compact import export_at_budget

    entries = []
    for budget in budgets:
        export = export_at_budget(model, loader, budget=budget)
        train, test = run(export.model, None, f"fixed t_d={budget:g}")
        entries.append(mode_row(train, test, mode="fixed", budget=budget, macs=float(export.macs),
                                dense_macs=dense_macs, settings=settings))
    return entries
