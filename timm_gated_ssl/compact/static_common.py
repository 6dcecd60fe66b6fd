"""What every family's static export shares: channel usage, channel selection, the result, reports.

``static.py`` (ResNet) and ``static_vit.py`` (ViT) each narrow their blocks; the calibration pass,
the choice of kept channels, the copy of the unchanged (outer) weights, the MAC and accuracy reports
and loading live here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import timm
import torch
from torch import nn

from ..attach import gate_mode, require_gates
from ..calibration import batch_images
from ..models._gating import GATE_KWARGS  # the gated models' own constructor options

#: Head and input kwargs that travel as top-level ``create_model`` kwargs (timm records and restores those).
HEAD_KWARGS = ("num_classes", "in_chans", "global_pool")


# ------------------------------------------------------------------------------------ usage
@torch.no_grad()
def channel_usage(
    model: nn.Module, loader: Iterable[Any], *, max_batches: int | None = None
) -> tuple[dict[str, tuple[torch.Tensor, ...]], int]:
    """Firing rate of every gated channel on ``loader`` (eval mode, deterministic gates).

    Args:
        model: A gated model.
        loader: Yields image batches or ``(images, labels, ...)`` tuples.
        max_batches: Stop after this many batches.

    Returns:
        ``({block_name: (rate_per_width, ...)}, number_of_images)``, each rate a float64 ``(C,)``.

    Raises:
        ValueError: the loader yields no image.
    """
    gates = require_gates(model)
    device = next(model.parameters()).device
    was_training = model.training
    counts: dict[str, list[torch.Tensor]] = {}
    seen = 0
    model.eval()
    try:
        with gate_mode(model, "gated"):
            for i, batch in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                images = batch_images(batch).to(device)
                model(images)
                for name, gate in gates:
                    assert gate.masks is not None
                    sums = [m.detach().double().sum(0).cpu() for m in gate.masks]
                    if name in counts:
                        counts[name] = [a + b for a, b in zip(counts[name], sums)]
                    else:
                        counts[name] = sums
                seen += images.shape[0]
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("the calibration loader yielded no images")
    return {name: tuple(c / seen for c in cs) for name, cs in counts.items()}, seen


def usage_or_given(
    model: nn.Module,
    loader: Iterable[Any],
    rates: Mapping[str, tuple[torch.Tensor, ...]] | None,
    *,
    max_batches: int | None,
) -> tuple[dict[str, tuple[torch.Tensor, ...]], int]:
    """:func:`channel_usage` on ``loader``, or ``rates`` as given (``export_at_budget`` chooses the
    channels itself and passes them as rates of 1 and 0; no pass over the data then, 0 images).

    Raises:
        ValueError: ``rates`` does not name exactly the gated blocks, or a rate has the wrong width.
    """
    if rates is None:
        return channel_usage(model, loader, max_batches=max_batches)
    gates = dict(require_gates(model))
    if set(rates) != set(gates):
        raise ValueError(f"rates must name every gated block: missing {sorted(set(gates) - set(rates))[:5]}, "
                         f"unknown {sorted(set(rates) - set(gates))[:5]}")
    for name, gate in gates.items():
        shapes = tuple(int(r.numel()) for r in rates[name])
        if shapes != tuple(gate.widths):
            raise ValueError(f"rates of block {name!r} have widths {shapes}, the gate has {tuple(gate.widths)}")
    return {name: tuple(r.double().cpu() for r in rs) for name, rs in rates.items()}, 0


def check_min_firing_rate(min_firing_rate: float) -> None:
    """Raise ValueError unless ``min_firing_rate`` is a number in [0, 1]."""
    if not isinstance(min_firing_rate, (int, float)) or not 0.0 <= min_firing_rate <= 1.0:
        raise ValueError(f"min_firing_rate must be in [0, 1], got {min_firing_rate!r}")


# ------------------------------------------------------------------------- channel selection
@dataclass(frozen=True)
class Selection:
    """Channels kept in one gated width: ``index`` (sorted) and which of them are real (``live``)."""

    index: torch.Tensor
    live: torch.Tensor

    def to(self, device: torch.device | str) -> Selection:
        """The same selection with both tensors on ``device`` (where the weights it slices live)."""
        return Selection(self.index.to(device), self.live.to(device))


def select_channels(rate: torch.Tensor, min_rate: float, groups: int = 1) -> Selection:
    """Keep channels that fired (and reach ``min_rate``); pad each group to the same count.

    At least one channel per group is kept so the layer stays valid; a kept channel that never
    fired is marked not ``live`` (its outgoing weights are zeroed by the caller).
    """
    keep = (rate > 0) & (rate >= min_rate)
    size = rate.numel() // groups
    per_group = keep.reshape(groups, size)
    count = max(int(per_group.sum(1).max()), 1)
    index, live = [], []
    for g in range(groups):
        on = per_group[g].nonzero().flatten()
        off = (~per_group[g]).nonzero().flatten()
        chosen = torch.cat([on, off[: count - on.numel()]]).sort().values
        index.append(chosen + g * size)
        live.append(per_group[g][chosen])
    return Selection(torch.cat(index), torch.cat(live))


# ------------------------------------------------------------------------------- the base
def base_of(model: nn.Module) -> tuple[str, dict[str, Any]]:
    """The ungated timm architecture and ``create_model`` kwargs a gated model was built from."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch = cfg.get("architecture")
    if not arch:
        raise ValueError("cannot tell which timm architecture this model was built from; pass base=")
    arch = arch.removeprefix("gated_")
    kwargs = {k: v for k, v in getattr(model, "_model_args", {}).items() if k not in GATE_KWARGS}
    return arch, kwargs


def resolve_base(
    model: nn.Module, base: str | None, base_kwargs: Mapping[str, Any] | None
) -> tuple[str, dict[str, Any]]:
    """``base`` and ``base_kwargs`` as given, else inferred from the source (:func:`base_of`)."""
    inferred_base, inferred_kwargs = base_of(model) if base is None else (base, {})
    return base or inferred_base, dict(inferred_kwargs if base_kwargs is None else base_kwargs)


def load_outer_state(
    static: nn.Module, model: nn.Module, inner: Iterable[str], base: str, kwargs: Mapping[str, Any]
) -> None:
    """Copy every weight outside the narrowed layers (prefixes ``inner``) from ``model`` into ``static``.

    Raises:
        ValueError: the two disagree outside the narrowed layers (wrong ``base`` or ``base_kwargs``).
    """
    prefixes = tuple(inner)
    src_state = {k: v for k, v in model.state_dict().items() if ".dyn_gate." not in k}
    dst_state = static.state_dict()
    outer = {k for k in dst_state if not k.startswith(prefixes)}
    src_outer = {k for k in src_state if not k.startswith(prefixes)}
    mismatched = sorted(k for k in outer & src_outer if dst_state[k].shape != src_state[k].shape)
    if outer != src_outer or mismatched:
        raise ValueError(
            f"the base {base!r} with kwargs {dict(kwargs)} does not match the gated model "
            f"(missing {sorted(src_outer - outer)[:5]}, unexpected {sorted(outer - src_outer)[:5]}, "
            f"shape mismatches {mismatched[:5]}); pass base= and base_kwargs="
        )
    static.load_state_dict({k: src_state[k] for k in outer}, strict=False)


def create_static(
    model: nn.Module,
    entry: str,
    *,
    base: str,
    base_kwargs: Mapping[str, Any],
    widths: list[list[int]],
    inner: Iterable[str],
    top_level: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Create the narrowed model with the registered ``entry`` point and copy the unchanged weights.

    The head and input kwargs (``num_classes``, ``in_chans``, ``global_pool`` and ``top_level``,
    e.g. a ViT's ``img_size``) travel as top-level ``create_model`` kwargs, which timm records and
    restores, and which override what timm would fill in from the entry point's default config;
    the rest as ``base_kwargs``. The narrowed layers (prefixes ``inner``) are left for the family
    to fill.
    """
    kwargs = dict(base_kwargs)
    head = {k: kwargs.pop(k) for k in (*HEAD_KWARGS, *(top_level or {})) if k in kwargs}
    head.setdefault("num_classes", getattr(model, "num_classes", 1000))
    head.setdefault("in_chans", getattr(model, "in_chans", 3))
    for k, v in (top_level or {}).items():
        head.setdefault(k, v)
    static = timm.create_model(entry, base=base, base_kwargs=kwargs, widths=widths, **head)
    static.to(next(model.parameters()).device)
    load_outer_state(static, model, inner, base, kwargs)
    static.pretrained_cfg = dict(copy.deepcopy(getattr(model, "pretrained_cfg", {}) or {}), architecture=entry)
    return static


def load_static(path: str, **kwargs: Any) -> nn.Module:
    """Load a static export (ResNet or ViT) saved with ``timm.models.save_for_hf(model, path)``."""
    return timm.create_model(f"local-dir:{path}", pretrained=True, **kwargs)


# --------------------------------------------------------------------------------- result
@dataclass
class StaticExport:
    """What :func:`~timm_gated_ssl.compact.export_static` returns.

    Attributes:
        model: The plain timm model (eval mode), gated-mode norms inside the blocks.
        widths: ``{block_name: (kept width, ...)}``, padding for grouped convs included (ViT:
            ``(heads, hidden units)``).
        full_widths: ``{block_name: (original width, ...)}``.
        firing_rates: ``{block_name: (rate per channel, ...)}`` on the calibration data.
        num_calibration_images: How many images the rates come from.
        macs: MACs per image of the static model, counted as ``count_macs`` counts the family
            (ResNet: convs; ViT: patch embedding and every matrix product of the blocks).
        dense_macs: MACs per image of the source network in dense mode (same rule).
        gated_macs: Mean MACs per image of the source in gated mode (gates included) on the first
            calibration batch, when the accounting module is available.
        accuracy_gated: Top-1 of the source in gated mode on ``eval_loader`` (if given): the
            classifier's, or for a headless encoder (``num_classes=0``) a two-fold weighted
            20-NN on ``eval_loader``'s images (see :func:`accuracy`).
        accuracy_static: The same for the static model.
        kept: ``{block_name: (bool mask per channel, ...)}``: the channels the static model keeps
            (padding for grouped convs aside), when the export chose them itself
            (``export_at_budget``); None for ``export_static``, which keeps the channels that fired.
    """

    model: nn.Module
    widths: dict[str, tuple[int, ...]]
    full_widths: dict[str, tuple[int, ...]]
    firing_rates: dict[str, tuple[torch.Tensor, ...]] = field(repr=False)
    num_calibration_images: int
    macs: int
    dense_macs: int
    gated_macs: float | None = None
    accuracy_gated: float | None = None
    accuracy_static: float | None = None
    kept: dict[str, tuple[torch.Tensor, ...]] | None = field(default=None, repr=False)

    @property
    def mac_fraction(self) -> float:
        """Static MACs / dense MACs."""
        return self.macs / self.dense_macs

    @property
    def accuracy_change(self) -> float | None:
        """``accuracy_static - accuracy_gated`` (percentage points), when measured."""
        if self.accuracy_gated is None or self.accuracy_static is None:
            return None
        return self.accuracy_static - self.accuracy_gated

    def summary(self) -> dict[str, Any]:
        """JSON-safe summary."""
        return {
            "macs": self.macs, "dense_macs": self.dense_macs, "mac_fraction": self.mac_fraction,
            "gated_macs": self.gated_macs, "accuracy_gated": self.accuracy_gated,
            "accuracy_static": self.accuracy_static, "accuracy_change": self.accuracy_change,
            "num_calibration_images": self.num_calibration_images,
            "widths": {k: list(v) for k, v in self.widths.items()},
        }


def source_macs(model: nn.Module, images: torch.Tensor) -> tuple[int, float | None]:
    """(dense MACs per image, mean gated MACs or None) via ``count_macs`` or FlopCounterMode."""
    try:
        from ..compute import count_macs
    except ImportError:  # accounting module absent: count convs with torch's FlopCounterMode / 2
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(images[:1])
        convs = sum(v for op, v in counter.get_flop_counts()["Global"].items() if "convolution" in str(op))
        return int(convs // 2), None
    result = count_macs(model, images)
    gated = result.mean_gated if result.blocks else None
    return int(result.dense), gated


KNN_K = 20
"""Neighbours of the k-NN top-1 reported for headless encoders (the paper's monitor)."""


def is_headless(model: nn.Module) -> bool:
    """True for an encoder without a classifier (``num_classes == 0``: its output is features)."""
    return getattr(model, "num_classes", None) == 0


@torch.no_grad()
def accuracy(model: nn.Module, loader: Iterable[Any], device: torch.device) -> float:
    """Top-1 (percent) of ``model`` on labelled ``(images, labels, ...)`` batches.

    A classifier is scored by the argmax of its logits. A headless encoder (``num_classes == 0``,
    the pretrained encoders of this library) is scored by a weighted k-NN (k = 20, T = 0.07) on its
    features, two-fold on the given images: the even-numbered ones are the bank for the odd ones
    and back, and the two accuracies are averaged.
    """
    from ..eval.features import Features
    from ..eval.knn import knn_accuracy

    outputs, targets = [], []
    for images, labels, *_ in loader:
        outputs.append(model(images.to(device)).float().cpu())
        targets.append(labels.cpu().long())
    total = sum(t.numel() for t in targets)
    if total == 0:
        raise ValueError("eval_loader yielded no labelled images")
    out, labels = torch.cat(outputs), torch.cat(targets)
    if not is_headless(model):
        return 100.0 * int((out.argmax(-1) == labels).sum()) / total
    if total < 4:
        raise ValueError(f"the k-NN accuracy of an encoder needs at least 4 labelled images, got {total}")
    halves = [Features(out[i::2].contiguous(), labels[i::2].contiguous()) for i in (0, 1)]
    num_classes = int(labels.max()) + 1
    scores = [
        knn_accuracy(bank, query, k=min(KNN_K, len(bank)), num_classes=num_classes)
        for bank, query in ((halves[0], halves[1]), (halves[1], halves[0]))
    ]
    return (scores[0] * len(halves[1]) + scores[1] * len(halves[0])) / total


def finish_export(
    model: nn.Module,
    static: nn.Module,
    loader: Iterable[Any],
    eval_loader: Iterable[Any] | None,
    *,
    widths: dict[str, tuple[int, ...]],
    full_widths: dict[str, tuple[int, ...]],
    rates: dict[str, tuple[torch.Tensor, ...]],
    seen: int,
    static_macs: Callable[[nn.Module, torch.Tensor], int],
) -> StaticExport:
    """Measure MACs (and accuracies, given ``eval_loader``) and assemble the :class:`StaticExport`.

    Args:
        static_macs: Counts the static model's MACs per image on a batch-1 input, by the same
            rule ``count_macs`` applies to the source's family.
    """
    device = next(model.parameters()).device
    sample = batch_images(next(iter(loader))).to(device)
    dense, gated = source_macs(model, sample)
    macs = static_macs(static, sample[:1])
    acc_gated = acc_static = None
    if eval_loader is not None:
        was_training = model.training
        model.eval()
        try:
            with gate_mode(model, "gated"):
                acc_gated = accuracy(model, eval_loader, device)
        finally:
            model.train(was_training)
        acc_static = accuracy(static, eval_loader, device)
    return StaticExport(
        model=static, widths=widths, full_widths=full_widths, firing_rates=rates,
        num_calibration_images=seen, macs=macs, dense_macs=dense, gated_macs=gated,
        accuracy_gated=acc_gated, accuracy_static=acc_static,
    )
