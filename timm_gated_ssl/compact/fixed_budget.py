"""``export_at_budget(model, data, budget=B)``: one plain timm model at a fixed fraction of the MACs.

Per-input gating saves time only where the runtime can run per-input shapes (``compact`` in
PyTorch). ONNX, TensorRT and large GPU batches want one fixed network, and :func:`export_static`
keeps every channel that *some* input uses, which on real data is almost all of them. This export
instead picks one sub-network that costs ``budget`` of the dense MACs, the way slimmable networks
deploy one fixed width (Yu et al., "Slimmable Neural Networks", ICLR 2019):

1. the gates are calibrated to ``budget`` on ``data`` (:func:`~timm_gated_ssl.calibrate_budget`),
   so the usage below is the usage *at that budget*, not at the training ``t_d``;
2. the firing rate of every gated unit is measured there (eval mode, deterministic gates). A unit
   is one level step of a block for width gates (the channels between two consecutive level
   sizes, across every gated width of the block) and one channel (ViT: head, MLP unit) for
   channel gates;
3. units are kept in order of firing rate, most used first (ties: the earlier unit of its width,
   then the earlier block), until the static model's MACs are closest to ``budget``. Every gated
   width keeps at least its most-used unit. This is data-driven pruning by activation frequency
   (Hu et al., "Network Trimming", 2016) with the gates' own on/off decisions as the activations.
   For width gates the rates fall with the level, so each block keeps a prefix that ends on one
   of its levels: the static model is one of the sub-networks the gated model runs;
4. optionally (``norm_batches``), the static model's BatchNorm statistics are re-estimated on
   ``data``: the gated-mode statistics were gathered over inputs of every width, a fixed width sees
   one (US-Nets' post-training statistics, Yu & Huang, ICCV 2019).

The MACs of the result are counted on the plain model by the family's rule (``count_macs`` for
ResNets, FlopCounterMode for ViTs), not predicted.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..attach import gate_mode, require_gates
from ..calibration import batch_images, calibrate_budget, gate_offset, set_gate_offset
from ..compute import cost_table
from ..errors import InvalidBudgetError, check_budget
from ..gates import BlockGate
from ..gates.width import WidthGate
from .export import STATIC_EXPORTERS, model_family
from .static_common import StaticExport, accuracy, channel_usage

__all__ = ["export_at_budget"]


@dataclass(frozen=True)
class _Unit:
    """Channels kept or removed together: ``(width index, start, stop)`` slices of one block."""

    block: int
    name: str
    parts: tuple[tuple[int, int, int], ...]
    rate: float
    position: float  # start of the unit within its width, as a fraction (ties: earlier first)


def _units(gates: list[tuple[str, BlockGate]], rates: Mapping[str, tuple[torch.Tensor, ...]]) -> list[list[_Unit]]:
    """Per gated width (width gates: per block), its units from the most to the least used."""
    groups: list[list[_Unit]] = []
    for b, (name, gate) in enumerate(gates):
        if isinstance(gate, WidthGate):
            units = []
            for k in range(gate.levels):
                parts = tuple((i, 0 if k == 0 else sizes[k - 1], sizes[k]) for i, sizes in enumerate(gate.sizes))
                rate = float(torch.cat([rates[name][i][a:z] for i, a, z in parts]).mean())
                units.append(_Unit(b, name, parts, rate, k / gate.levels))
            groups.append(units)
            continue
        for i, width in enumerate(gate.widths):
            units = [_Unit(b, name, ((i, c, c + 1),), float(rates[name][i][c]), c / width) for c in range(width)]
            groups.append(sorted(units, key=lambda u: (-u.rate, u.position)))
    return groups


def _keep_rates(gates: list[tuple[str, BlockGate]], kept: Iterable[_Unit]) -> dict[str, tuple[torch.Tensor, ...]]:
    """The kept units as rates of 1 (kept) and 0 (removed), the form the family exporters take."""
    keep = {name: [torch.zeros(w, dtype=torch.float64) for w in gate.widths] for name, gate in gates}
    for unit in kept:
        for i, a, z in unit.parts:
            keep[unit.name][i][a:z] = 1.0
    return {name: tuple(masks) for name, masks in keep.items()}


@torch.no_grad()
def _refresh_norms(static: nn.Module, loader: Iterable[Any], batches: int) -> None:
    """Re-estimate every BatchNorm's running statistics of ``static`` as a plain average over batches."""
    norms = [m for m in static.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    device = next(static.parameters()).device
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts the same
    static.train()
    try:
        for i, batch in enumerate(loader):
            if i >= batches:
                break
            static(batch_images(batch).to(device))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        static.eval()


def export_at_budget(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    budget: float,
    tol: float = 0.03,
    calibrate: bool = True,
    max_batches: int | None = None,
    norm_batches: int = 0,
    eval_loader: Iterable[Any] | None = None,
    base: str | None = None,
    base_kwargs: Mapping[str, Any] | None = None,
) -> StaticExport:
    """Export a gated ResNet or ViT as a plain timm model that costs ``budget`` of the dense MACs.

    See the module docstring for how the channels are chosen. The result saves with
    ``timm.models.save_for_hf`` and loads with ``timm.create_model("local-dir:DIR",
    pretrained=True)`` (or :func:`~timm_gated_ssl.load_static`), like :func:`export_static`'s.

    Args:
        model: A gated timm ResNet or ViT (width or channel gates); its gate threshold, mode and
            train flag are unchanged afterwards.
        loader: Images that decide the channels (``(images, labels)`` tuples or image batches);
            use held-out training data at the deployment resolution.
        budget: Target fraction of the dense MACs, in (0, 1].
        tol: Accepted ``|MAC fraction - budget|`` of the export (the units are discrete).
        calibrate: Calibrate the gates to ``budget`` on ``loader`` before measuring usage (False:
            measure at the model's current threshold).
        max_batches: Use at most this many batches of ``loader`` (calibration, usage).
        norm_batches: Re-estimate the static model's BatchNorm statistics on this many batches of
            ``loader`` (0 keeps the gated mode's statistics; ViTs have none).
        eval_loader: Labelled data to report the top-1 of the gated source (calibrated to
            ``budget``) and of the export, as :func:`export_static` does.
        base: The ungated timm architecture to rebuild (default: inferred from ``model``).
        base_kwargs: ``timm.create_model`` kwargs of the base (default: inferred).

    Returns:
        A :class:`StaticExport`: ``firing_rates`` are the rates measured at ``budget``, ``widths``
        the kept widths, ``gated_macs`` the calibrated gated mode's mean MACs on ``loader``.

    Raises:
        InvalidBudgetError: ``budget`` outside (0, 1], below the cheapest export (every gated width
            at its most-used unit) or not reachable within ``tol``; the message gives the range.
        CalibrationError: the gates cannot be calibrated to ``budget`` on ``loader``.
        ValueError: ``tol``, ``norm_batches`` or ``max_batches`` out of range, or an empty loader.
    """
    budget = check_budget(budget)
    if not isinstance(tol, (int, float)) or not 0.0 < tol < 1.0:
        raise ValueError(f"tol must be in (0, 1) (a difference of MAC fractions), got {tol!r}")
    if isinstance(norm_batches, bool) or not isinstance(norm_batches, int) or norm_batches < 0:
        raise ValueError(f"norm_batches must be an integer >= 0, got {norm_batches!r}")
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be None or >= 1, got {max_batches!r}")
    exporter = STATIC_EXPORTERS[model_family(model)]
    gates = require_gates(model)

    sample = batch_images(next(iter(loader)))[:1]

    def build(kept: Iterable[_Unit]) -> StaticExport:
        return exporter(model, (sample,), base=base, base_kwargs=base_kwargs,
                        rates=_keep_rates(gates, kept), min_firing_rate=0.5)

    # the cheapest export keeps one unit per gated width; which one does not change its cost
    unused = {name: tuple(torch.zeros(w) for w in gate.widths) for name, gate in gates}
    floor = build(g[0] for g in _units(gates, unused)).mac_fraction
    if budget < floor - tol:
        raise InvalidBudgetError(
            f"budget={budget:g} is below the cheapest fixed-budget export of this model (one unit "
            f"per gated width: {floor:.3f} of the dense MACs); valid budgets are [{floor:.3f}, 1]"
        )

    device = next(model.parameters()).device
    original, was_training = gate_offset(model), model.training
    gated_fraction = accuracy_gated = None
    try:
        if calibrate:
            gated_fraction = calibrate_budget(model, loader, budget, max_batches=max_batches,
                                              record=False).mac_fraction
        rates, seen = channel_usage(model, loader, max_batches=max_batches)
        if eval_loader is not None:  # the gated source at the same threshold, next to the export
            model.eval()
            with gate_mode(model, "gated"):
                accuracy_gated = accuracy(model, eval_loader, device)
    finally:
        set_gate_offset(model, original)
        model.train(was_training)

    groups = _units(gates, rates)
    required = [g[0] for g in groups]
    optional = sorted((u for g in groups for u in g[1:]), key=lambda u: (-u.rate, u.position, u.block))
    # search on the cost table (the masks' MACs, no forward); then count the built model, and
    # step to a neighbour while that is closer (grouped convs pad, ViTs count attention products)
    table = cost_table(model, tuple(sample.shape[1:]))

    def predicted(k: int) -> float:
        masks = {n: tuple(m.float()[None] for m in ms) for n, ms in _keep_rates(gates, required + optional[:k]).items()}
        return (float(table.gated(masks)[0]) - table.gate_macs) / table.dense

    built: dict[int, StaticExport] = {}

    def fraction(k: int) -> float:
        if k not in built:
            built[k] = build(required + optional[:k])
        return built[k].mac_fraction

    last = len(optional)  # the prediction grows with k: bisect it
    k = bisect.bisect_left(range(last + 1), budget, key=predicted)
    best = min((c for c in (k - 1, k) if 0 <= c <= last), key=lambda c: (abs(predicted(c) - budget), c))
    for step in (-1, 1):
        while 0 <= best + step <= last and abs(fraction(best + step) - budget) < abs(fraction(best) - budget):
            best += step
    if abs(fraction(best) - budget) > tol:
        reach = sorted({round(fraction(c), 3) for c in (best - 1, best, best + 1) if 0 <= c <= last})
        raise InvalidBudgetError(
            f"no fixed-budget export is within tol={tol:g} of budget={budget:g}: the nearest costs are "
            f"{reach} of the dense MACs (the units of this model are too coarse, e.g. too few "
            f"gate_levels); valid budgets lie in [{floor:.3f}, 1], or raise tol to accept one"
        )
    kept, export = required + optional[:best], built[best]
    if norm_batches:
        _refresh_norms(export.model, loader, norm_batches)
    return dataclasses.replace(
        export, firing_rates=rates, num_calibration_images=seen,
        kept={n: tuple(m > 0 for m in ms) for n, ms in _keep_rates(gates, kept).items()},
        gated_macs=None if gated_fraction is None else gated_fraction * export.dense_macs,
        accuracy_gated=accuracy_gated,
        accuracy_static=None if eval_loader is None else accuracy(export.model, eval_loader, device),
    )
