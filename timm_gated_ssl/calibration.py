"""Budget calibration: move the gates' decision threshold so that the deterministic gated network
uses exactly the asked fraction of the dense compute (beyond the paper).

Krishna et al. (BMVC 2023) train towards a target ``t_d`` with the budget loss, but the deterministic
(inference) network misses it at small budgets (``t_d = 0.1`` ends near 18.5% of the dense MACs).
Here a single global offset is subtracted from every gate logit (a gate is on when
``logit - offset >= 0``; the offset is the ``logit_offset`` buffer of each gate, so it is saved with
the weights) and found by bisection on calibration data. Several budgets can be calibrated on one
checkpoint; the model keeps a table ``{budget: offset}`` and :func:`set_budget` picks one.

Where the table lives:

* every model: the attribute ``model.calibrated_budgets`` (``{"0.3": offset, ...}``, string keys so
  it is JSON-safe) on the model root;
* models whose constructor takes ``calibrated_budgets`` (``GatedResNet``, i.e. every registered
  ``gated_*`` model): also ``model._model_args["calibrated_budgets"]``, so a plain
  ``timm.models.save_for_hf`` writes it to ``config.json`` and
  ``timm.create_model("local-dir:DIR", pretrained=True)`` restores it;
* models gated with ``attach_gates`` on a stock timm model: the attribute only; persist it yourself
  (e.g. ``json.dump(model.calibrated_budgets, ...)`` next to the weights) and set it back after
  re-attaching gates.

The offset active when a checkpoint is saved is in its state dict, so a reloaded model runs at that
operating point; call :func:`set_budget` to switch.

Example:
    >>> result = calibrate_budget(model, calib_loader, 0.3)
    >>> result.mac_fraction            # within 0.3 +- 0.01 on the calibration data
    >>> calibrate_budget(model, calib_loader, 0.5)
    >>> set_budget(model, 0.3)         # back to the 0.3 operating point
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .attach import gate_mode, require_gates
from .compute.core import _eval_and_restore, _unwrap, cost_table, count_macs
from .errors import CalibrationError, UncalibratedBudgetError, check_budget

__all__ = [
    "CalibrationResult", "budget_key", "calibrate_budget", "calibrated_budgets", "gate_offset", "mac_floor",
    "set_budget", "set_gate_offset",
]

TABLE_ATTR = "calibrated_budgets"


def budget_key(budget: float) -> str:
    """The table key of a budget: its value with up to 6 significant digits (``0.3 -> "0.3"``)."""
    return format(float(budget), ".6g")


@dataclass(frozen=True)
class CalibrationResult:
    """Outcome of :func:`calibrate_budget`.

    Attributes:
        target: The asked fraction of the dense MACs.
        offset: The global logit offset now set on every gate.
        mac_fraction: Gated / dense MACs of the deterministic network on the calibration data.
        evaluations: Passes over the calibration data the search needed.
        num_images: Calibration images used.
        dense_macs: Dense MACs per image (of the first batch's input size).
    """

    target: float
    offset: float
    mac_fraction: float
    evaluations: int
    num_images: int
    dense_macs: int


def calibrated_budgets(model: nn.Module) -> dict[float, float]:
    """The model's calibration table as ``{budget: offset}``, sorted by budget."""
    table = getattr(_unwrap(model), TABLE_ATTR, None) or {}
    return {float(k): float(v) for k, v in sorted(table.items(), key=lambda kv: float(kv[0]))}


def mac_floor(model: nn.Module, input_size: Sequence[int], *, include_linear: bool = False) -> float:
    """The smallest fraction of the dense MACs ``model`` can run at: every gate off (width gates at
    their smallest level).

    What is never gated (stem, downsample convolutions, the gates themselves) and, for width gates,
    the narrowest level set it; no training or calibration gets a budget below it. Runs one
    deterministic forward of a zero image (the floor does not depend on the content once every gate
    is off); the gates' offsets are restored.

    Args:
        model: A gated model.
        input_size: Per-image input shape ``(C, H, W)``.
        include_linear: Count linear layers too.

    Example:
        >>> mac_floor(timm.create_model("gated_resnet18_cifar", gate_type="width", gate_levels=8), (3, 28, 28))
        0.138...
    """
    model = _unwrap(model)
    gates = require_gates(model)
    saved = [gate.logit_offset.clone() for _, gate in gates]
    reference = next(model.parameters())
    try:
        set_gate_offset(model, math.inf)
        count = count_macs(model, torch.zeros((1, *input_size), device=reference.device, dtype=reference.dtype),
                           include_linear=include_linear)
    finally:
        for (_, gate), offset in zip(gates, saved):
            gate.logit_offset.copy_(offset)
    return count.mean_ratio


def gate_offset(model: nn.Module) -> float:
    """The gate-logit offset the model's gates run at (``logit - offset >= 0`` is on; every gate of
    a model shares one offset: what :func:`calibrate_budget` and :func:`set_budget` move).

    Raises:
        NoGatesError: ``model`` has no gates.
    """
    return float(require_gates(model)[0][1].logit_offset)


def set_gate_offset(model: nn.Module, offset: float) -> None:
    """Run every gate of ``model`` at ``offset`` (``math.inf``: every gate off).

    Raises:
        NoGatesError: ``model`` has no gates.
    """
    for _, gate in require_gates(model):
        gate.logit_offset.fill_(offset)




def _record(model: nn.Module, budget: float, offset: float) -> None:
    table = dict(getattr(model, TABLE_ATTR, None) or {})
    table[budget_key(budget)] = float(offset)
    table = dict(sorted(table.items(), key=lambda kv: float(kv[0])))
    setattr(model, TABLE_ATTR, table)
    if TABLE_ATTR in inspect.signature(type(model).__init__).parameters:  # e.g. GatedResNet
        model._model_args = {**getattr(model, "_model_args", {}), TABLE_ATTR: dict(table)}
    _remember_operating_point(model, budget)


def _remember_operating_point(model: nn.Module, budget: float) -> None:
    """Record the budget the model now runs at as its ``budget`` model argument.

    A checkpoint saved with ``save_for_hf`` then reloads at the same operating point: the entry
    point re-applies ``calibrated_budgets[budget]`` after timm loads the weights.
    """
    if TABLE_ATTR in inspect.signature(type(model).__init__).parameters:
        model._model_args = {**getattr(model, "_model_args", {}), "budget": float(budget)}


def set_budget(model: nn.Module, budget: float) -> nn.Module:
    """Switch ``model`` to a calibrated budget: set every gate's offset from the table.

    Args:
        model: A gated model calibrated with :func:`calibrate_budget` (or built with a table).
        budget: One of the calibrated budgets.

    Returns:
        ``model``.

    Raises:
        InvalidBudgetError: ``budget`` is not in (0, 1].
        NoGatesError: ``model`` has no gates.
        UncalibratedBudgetError: ``budget`` is not in the table (the message lists the table).
    """
    budget = check_budget(budget)
    root = _unwrap(model)
    require_gates(root)
    table = getattr(root, TABLE_ATTR, None) or {}
    key = budget_key(budget)
    if key not in table:
        known = ", ".join(budget_key(b) for b in calibrated_budgets(root)) or "none"
        raise UncalibratedBudgetError(
            f"budget {budget:g} has not been calibrated for this model; calibrated budgets: {known}. "
            f"Run timm_gated_ssl.calibrate_budget(model, loader, {budget:g}) first"
        )
    set_gate_offset(root, float(table[key]))
    _remember_operating_point(root, budget)
    return model


def select_budget_on_load(model: nn.Module, budget: float) -> None:
    """Apply calibrated ``budget`` now and again after every ``load_state_dict``.

    Model entry points call this when ``budget=`` names a calibrated budget: timm loads the
    pretrained weights (whose ``logit_offset`` buffers hold the operating point active when they
    were saved) after construction, which would otherwise undo the choice.
    """
    set_budget(model, budget)

    def reapply(module: nn.Module, incompatible_keys: Any) -> None:
        set_budget(module, budget)

    model.register_load_state_dict_post_hook(reapply)


def batch_images(batch: Any) -> torch.Tensor:
    """The image tensor of a loader batch: a tensor, the first item of a tuple/list, or a dict's
    ``"image"``, ``"images"``, ``"pixel_values"`` or ``"x"`` entry (calibration and static export)."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, Mapping):
        for key in ("image", "images", "pixel_values", "x"):
            if isinstance(batch.get(key), torch.Tensor):
                return batch[key]
    raise TypeError(
        f"cannot find images in a batch of type {type(batch).__name__}: expected a tensor, "
        "a (images, ...) tuple, or a dict with an 'image'/'images'/'pixel_values' entry"
    )


class _Evaluator:
    """Gated / dense MACs of the deterministic network on the calibration data, per offset."""

    def __init__(self, model: nn.Module, loader: Iterable[Any], *, cache: bool, max_batches: int | None,
                 include_linear: bool) -> None:
        self.model, self.loader, self.cache = model, loader, cache
        self.max_batches, self.include_linear = max_batches, include_linear
        reference = next(model.parameters())
        self.device, self.dtype = reference.device, reference.dtype
        self.batches: list[torch.Tensor] | None = list(self._iterate()) if cache else None
        self.evaluations = 0
        self.logit_scale = 1.0  # mean |logit| of the gates on the data, from the latest pass

    def _iterate(self) -> Iterator[torch.Tensor]:
        for index, batch in enumerate(self.loader):
            if self.max_batches is not None and index >= self.max_batches:
                break
            images = batch_images(batch)
            if images.numel():
                yield images

    def __call__(self, offset: float) -> tuple[float, int, int]:
        """``(fraction, images, dense MACs per image of the first batch)`` at ``offset``."""
        self.evaluations += 1
        set_gate_offset(self.model, offset)
        gated = dense = 0.0
        count = first_dense = 0
        scale = [0.0, 0]

        def on_logits(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            scale[0] += float(output.detach().abs().float().mean())
            scale[1] += 1

        handles = [g.net.register_forward_hook(on_logits) for _, g in require_gates(self.model)]
        with torch.no_grad(), gate_mode(self.model, "gated"):
            for images in (self.batches if self.batches is not None else self._iterate()):
                images = images.to(self.device, self.dtype, non_blocking=True)
                table = cost_table(self.model, images, include_linear=self.include_linear)
                self.model(images)
                masks = {name: g.masks for name, g in require_gates(self.model) if g.masks is not None}
                gated += float(table.gated(masks).sum())
                dense += float(table.dense) * images.shape[0]
                count += images.shape[0]
                first_dense = first_dense or table.dense
        for handle in handles:
            handle.remove()
        if scale[1] and scale[0] > 0:
            self.logit_scale = scale[0] / scale[1]
        if count == 0:
            raise CalibrationError("the calibration loader yielded no images; pass a non-empty loader")
        return gated / dense, count, first_dense


def calibrate_budget(
    model: nn.Module,
    loader: Iterable[Any],
    target: float,
    *,
    tol: float = 0.01,
    max_evaluations: int = 40,
    max_batches: int | None = None,
    cache: bool = True,
    include_linear: bool = False,
    record: bool = True,
) -> CalibrationResult:
    """Find the global gate offset at which the deterministic gated network uses ``target`` of the
    dense MACs on ``loader`` (within ``tol``), set it on every gate and record it in the table.

    The search brackets the offset by doubling steps from the current 0 logit threshold, then bisects
    (the MAC fraction falls as the offset grows). Every module runs in eval mode (deterministic gates,
    BN running statistics untouched); train/eval flags, the gate mode and recorded masks are restored.

    Args:
        model: A gated model (``gated_*`` from timm, or any model after ``attach_gates``).
        loader: Calibration data: an iterable of image tensors, ``(images, labels)`` tuples or dicts
            with an ``"image"`` entry (a DataLoader). Use held-out data of the deployment resolution.
        target: Fraction of the dense MACs, in (0, 1].
        tol: Accepted absolute error of the fraction.
        max_evaluations: Passes over the data before giving up.
        max_batches: Use only the first ``max_batches`` batches.
        cache: Keep the batches in memory (the search sees the same images at every step; turn off
            for data that does not fit, with a loader that yields the same images every pass).
        include_linear: Count linear layers in the MACs.
        record: Add ``target -> offset`` to the model's calibration table.

    Returns:
        A :class:`CalibrationResult`.

    Raises:
        InvalidBudgetError: ``target`` is not in (0, 1].
        NoGatesError: ``model`` has no gates.
        CalibrationError: the loader is empty, ``target`` is below what the never-gated layers
            (stem, downsample, gates) already cost, or no offset lands within ``tol``.
    """
    target = check_budget(target, name="target")
    if not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1), got {tol!r}")
    root = _unwrap(model)
    gates = require_gates(root)
    saved_masks = [g.masks for _, g in gates]
    original = gate_offset(root)
    try:
        with _eval_and_restore(root):
            result = _search(root, loader, target, tol=tol, max_evaluations=max_evaluations,
                             max_batches=max_batches, cache=cache, include_linear=include_linear)
    except BaseException:
        set_gate_offset(root, original)
        raise
    finally:
        for (_, g), masks in zip(gates, saved_masks):
            g.masks = masks
    if record:
        _record(root, target, result.offset)
    return result


def _search(model: nn.Module, loader: Iterable[Any], target: float, *, tol: float, max_evaluations: int,
            max_batches: int | None, cache: bool, include_linear: bool) -> CalibrationResult:
    evaluate = _Evaluator(model, loader, cache=cache, max_batches=max_batches, include_linear=include_linear)
    if evaluate.batches is not None and not evaluate.batches:
        raise CalibrationError("the calibration loader yielded no images; pass a non-empty loader")
    best: tuple[float, float] | None = None  # (offset, fraction) closest to target

    def done(offset: float, fraction: float, images: int, dense: int) -> CalibrationResult:
        set_gate_offset(model, offset)
        offset = gate_offset(model)  # as stored (buffer dtype)
        return CalibrationResult(target, offset, fraction, evaluate.evaluations, images, dense)

    def probe(offset: float) -> tuple[float, int, int]:
        nonlocal best
        fraction, images, dense = evaluate(offset)
        if best is None or abs(fraction - target) < abs(best[1] - target):
            best = (offset, fraction)
        return fraction, images, dense

    floor, images, dense = probe(math.inf)  # every gate off: the cost of what is never gated
    if floor > target + tol:
        raise CalibrationError(
            f"target {target:g} is unreachable: with every gate off (width gates: at their smallest "
            f"level) the network still uses {floor:.4f} of the dense MACs (stem, downsample and gates "
            "are never gated)"
        )
    fraction, images, dense = probe(0.0)
    if abs(fraction - target) <= tol:
        return done(0.0, fraction, images, dense)
    # bracket: lo has fraction > target, hi has fraction < target; steps start at the logits' scale
    step = evaluate.logit_scale / 4
    if fraction > target:
        lo, hi = 0.0, step
        while evaluate.evaluations < max_evaluations:
            fraction, images, dense = probe(hi)
            if abs(fraction - target) <= tol:
                return done(hi, fraction, images, dense)
            if fraction < target:
                break
            lo, step = hi, step * 2
            hi = lo + step
    else:
        lo, hi = -step, 0.0
        while evaluate.evaluations < max_evaluations:
            fraction, images, dense = probe(lo)
            if abs(fraction - target) <= tol:
                return done(lo, fraction, images, dense)
            if fraction > target:
                break
            hi, step = lo, step * 2
            lo = hi - step
    while evaluate.evaluations < max_evaluations and hi - lo > 1e-6 * max(1.0, abs(lo)):
        mid = 0.5 * (lo + hi)
        fraction, images, dense = probe(mid)
        if abs(fraction - target) <= tol:
            return done(mid, fraction, images, dense)
        lo, hi = (mid, hi) if fraction > target else (lo, mid)
    assert best is not None
    raise CalibrationError(
        f"no gate offset puts the MAC fraction within {target:g} +- {tol:g} on the calibration data "
        f"(closest: {best[1]:.4f} at offset {best[0]:.4g}, after {evaluate.evaluations} passes); the "
        "fraction jumps in steps larger than the tolerance: use more calibration images or a larger tol"
    )
