"""Figures of an evaluation: the accuracy/compute trade-off and per-block channel usage.

Both functions draw on a bare :class:`matplotlib.figure.Figure` with the Agg canvas, so they never
touch pyplot's global state or need a display.

Example:
    >>> points = [
    ...     TradeoffPoint("dense", macs=5.6e8, mac_fraction=1.0, accuracy=90.4, kind="dense"),
    ...     TradeoffPoint("gated", macs=1.9e8, mac_fraction=0.34, accuracy=90.3, budget=0.3),
    ... ]
    >>> plot_tradeoff(points, path="tradeoff.png")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from timm_gated_ssl.eval.channel_usage import ChannelUsage, channel_usage_from_masks

__all__ = [
    "ChannelUsage",
    "TradeoffPoint",
    "channel_usage_from_masks",
    "plot_channel_usage",
    "plot_tradeoff",
]

PointKind = Literal["dense", "gated", "vanilla"]
_KINDS: tuple[str, ...] = ("dense", "gated", "vanilla")


@dataclass(frozen=True)
class TradeoffPoint:
    """One model (or one mode of a model) on the accuracy/compute plane.

    Attributes:
        label: Legend/annotation text, e.g. ``"gated t_d=0.3"``.
        macs: Multiply-accumulates per image (> 0).
        mac_fraction: ``macs`` over the dense network's MACs, > 0 (1 for dense/vanilla; a gated
            network can exceed 1 slightly through the gates' own cost).
        accuracy: Top-1 accuracy (%), e.g. the linear-probe mean.
        budget: Target budget ``t_d`` the run was trained for, if any.
        kind: ``"dense"``, ``"gated"`` or ``"vanilla"`` (a plain SSL baseline without gates).
    """

    label: str
    macs: float
    mac_fraction: float
    accuracy: float
    budget: float | None = None
    kind: PointKind = "gated"

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        if not (math.isfinite(self.macs) and self.macs > 0):
            raise ValueError(
                f"macs of {self.label!r} must be a finite number > 0, got {self.macs!r}"
            )
        if not (math.isfinite(self.mac_fraction) and self.mac_fraction > 0):
            raise ValueError(
                f"mac_fraction of {self.label!r} must be a finite number > 0 (MACs / dense MACs), "
                f"got {self.mac_fraction!r}"
            )
        if not (math.isfinite(self.accuracy) and 0 <= self.accuracy <= 100):
            raise ValueError(
                f"accuracy of {self.label!r} must be a percentage in [0, 100], got {self.accuracy!r}"
            )
        if self.budget is not None and not (0 < self.budget <= 1):
            raise ValueError(
                f"budget of {self.label!r} must be in (0, 1] or None, got {self.budget!r}"
            )


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out, dpi=150, bbox_inches="tight")
    return out


def plot_tradeoff(
    points: Sequence[TradeoffPoint],
    *,
    path: str | os.PathLike[str],
    title: str = "Accuracy vs. compute",
    x: Literal["mac_fraction", "macs"] = "mac_fraction",
    ylabel: str = "top-1 accuracy (%)",
) -> Path:
    """Plot accuracy against compute: dense points, the gated curve, and a vanilla baseline.

    Gated points are joined by a line in order of compute and annotated with their budget
    ``t_d``; dense points (one per training run, annotated with the run's ``t_d`` when given) and
    vanilla points are drawn as separate markers.

    Args:
        points: The points to draw (at least one).
        path: Output image file (PNG by its suffix); parent folders are created.
        title: Figure title.
        x: ``"mac_fraction"`` (fraction of dense MACs) or ``"macs"`` (absolute MACs per image).
        ylabel: Y-axis label.

    Returns:
        The path written.

    Raises:
        ValueError: If ``points`` is empty or ``x`` is not one of the two options.
    """
    if not points:
        raise ValueError("points is empty; nothing to plot")
    if x not in ("mac_fraction", "macs"):
        raise ValueError(f"x must be 'mac_fraction' or 'macs', got {x!r}")

    def xval(p: TradeoffPoint) -> float:
        return p.mac_fraction if x == "mac_fraction" else p.macs

    fig = Figure(figsize=(6.0, 4.2))
    ax = fig.add_subplot()
    styles = {
        "gated": {"marker": "o", "color": "tab:blue"},
        "dense": {"marker": "s", "color": "tab:orange"},
        "vanilla": {"marker": "*", "color": "tab:gray", "markersize": 12},
    }
    for kind in ("gated", "dense", "vanilla"):
        group = sorted((p for p in points if p.kind == kind), key=xval)
        if not group:
            continue
        ax.plot(
            [xval(p) for p in group],
            [p.accuracy for p in group],
            linestyle="-" if kind == "gated" else "none",
            label=kind,
            **styles[kind],  # type: ignore[arg-type]
        )
        for p in group:
            if p.budget is not None:
                ax.annotate(
                    f"$t_d$={p.budget:g}",
                    (xval(p), p.accuracy),
                    textcoords="offset points",
                    xytext=(4, 4 if kind == "gated" else -10),
                    fontsize=8,
                )
    ax.set_xlabel("MACs / dense MACs" if x == "mac_fraction" else "MACs per image")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    return _save(fig, path)


def plot_channel_usage(
    usage: Sequence[ChannelUsage],
    *,
    path: str | os.PathLike[str],
    title: str = "Gated channel usage per block",
) -> Path:
    """Stacked bars per gated block: fraction of channels always off, always on, data-dependent.

    Args:
        usage: One entry per block, in network order (see
            :func:`~timm_gated_ssl.eval.channel_usage.channel_usage_from_masks`).
        path: Output image file; parent folders are created.
        title: Figure title.

    Returns:
        The path written.

    Raises:
        ValueError: If ``usage`` is empty.
    """
    if not usage:
        raise ValueError("usage is empty; nothing to plot")
    fractions = [u.fractions() for u in usage]
    positions = list(range(len(usage)))
    fig = Figure(figsize=(max(4.0, 0.6 * len(usage) + 2.0), 4.0))
    ax = fig.add_subplot()
    bottom = [0.0] * len(usage)
    for i, (name, color) in enumerate(
        (("always off", "tab:gray"), ("always on", "tab:green"), ("dynamic", "tab:blue"))
    ):
        heights = [f[i] for f in fractions]
        ax.bar(positions, heights, bottom=bottom, color=color, label=name, width=0.8)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_xticks(positions)
    ax.set_xticklabels([u.block for u in usage], rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("fraction of gated channels")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3, fontsize=8)
    return _save(fig, path)
