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

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from timm_gated_ssl.eval.channel_usage import ChannelUsage, channel_usage_from_masks
from timm_gated_ssl.files import atomic_write_bytes
from timm_gated_ssl.results.records import TradeoffPoint

__all__ = [
    "ChannelUsage",
    "TradeoffPoint",
    "channel_usage_from_masks",
    "plot_channel_usage",
    "plot_tradeoff",
    "tradeoff_figure",
]

def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Render to ``path`` atomically (umask permissions), in the format of its suffix."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=150, bbox_inches="tight", format=out.suffix.lstrip(".") or "png")
    return atomic_write_bytes(out, buffer.getvalue())


# Series of the trade-off plot: (legend label, matplotlib style). Dense and vanilla points need no
# text: the legend says what they are. Gated points carry their t_d; a checkpoint's own threshold
# is marked "trained" so it never reads like the calibrated point of the same budget.
_SERIES: dict[str, tuple[str, dict[str, Any]]] = {
    "calibrated": ("gated, calibrated to $t_d$", {"marker": "o", "color": "tab:blue", "linestyle": "-"}),
    "gated": ("gated, trained threshold", {"marker": "D", "color": "tab:purple", "linestyle": "none"}),
    "dense": ("dense", {"marker": "s", "color": "tab:orange", "linestyle": "none"}),
    "fixed": ("fixed-budget plain model", {"marker": "^", "color": "black", "linestyle": ":"}),
    "vanilla": ("vanilla SSL baseline", {"marker": "*", "color": "tab:gray", "markersize": 12,
                                         "linestyle": "none"}),
}
# Colours of the calibrated, trained-threshold and dense series of each further gate family when a
# plot holds several (the first family keeps the colours above); markers still tell the series.
_FAMILY_COLOURS: list[tuple[str, str, str, str]] = [
    ("tab:green", "tab:olive", "tab:brown", "darkgreen"),
    ("tab:red", "tab:pink", "tab:cyan", "darkred"),
]
# Label offsets tried in turn (points): right/left of the marker, then further above and below.
_OFFSETS = [(6, 5), (6, -11), (-6, 5), (-6, -11), (6, 15), (6, -21), (-6, 15), (-6, -21),
            (10, 25), (10, -31), (-10, 25), (-10, -31)]


def _series(point: TradeoffPoint, *, any_calibrated: bool) -> str:
    if point.kind != "gated":
        return point.kind
    # Without calibrated points, the gated points (of several runs) form the curve themselves.
    return "calibrated" if point.calibrated or not any_calibrated else "gated"


def _family_style(series: str, family: str | None, index: int, *,
                  any_calibrated: bool, several: bool) -> tuple[str, dict[str, Any]]:
    """Legend label and style of one series of one gate family (``index``: its order of appearance)."""
    legend, style = _SERIES[series]
    if series == "calibrated" and not any_calibrated:
        legend = "gated"  # the runs' own thresholds, joined
    if not several or family is None or series == "vanilla":
        return legend, style
    if series == "dense":
        legend = f"dense, {family} gates"
    else:
        legend = legend.replace("gated", f"{family} gates", 1)
    if index > 0:
        colours = _FAMILY_COLOURS[(index - 1) % len(_FAMILY_COLOURS)]
        style = {**style, "color": colours[("calibrated", "gated", "dense", "fixed").index(series)]}
    return legend, style


def _text(point: TradeoffPoint, series: str) -> str | None:
    if point.kind != "gated" or point.budget is None:
        return None
    return f"$t_d$={point.budget:g}" + (" (trained)" if series == "gated" else "")


def _place_labels(fig: Figure, ax: Any, items: list[tuple[tuple[float, float], str, str]]) -> None:
    """Annotate each point with the first offset whose text overlaps no earlier label and no marker."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    markers = [ax.transData.transform(xy) for xy, _, _ in items]
    placed: list[Any] = []
    for xy, text, color in items:
        chosen = None
        for dx, dy in _OFFSETS:
            ann = ax.annotate(text, xy, textcoords="offset points", xytext=(dx, dy), fontsize=8,
                              color=color, ha="left" if dx > 0 else "right")
            box = ann.get_window_extent(renderer).expanded(1.05, 1.1)
            hits_marker = any(box.x0 - 3 <= mx <= box.x1 + 3 and box.y0 - 3 <= my <= box.y1 + 3
                              for mx, my in markers)
            if not hits_marker and not any(box.overlaps(other) for other in placed):
                chosen = (ann, box)
                break
            ann.remove()
        if chosen is None:  # crowded: the farthest offset, with a leader line
            dx, dy = _OFFSETS[-1]
            ann = ax.annotate(text, xy, textcoords="offset points", xytext=(dx, dy), fontsize=8,
                              color=color, ha="right", arrowprops={"arrowstyle": "-", "lw": 0.5})
            chosen = (ann, ann.get_window_extent(renderer))
        placed.append(chosen[1])


def tradeoff_figure(
    points: Sequence[TradeoffPoint],
    *,
    title: str = "Accuracy vs. compute",
    x: Literal["mac_fraction", "macs"] = "mac_fraction",
    ylabel: str = "top-1 accuracy (%)",
) -> Figure:
    """The figure :func:`plot_tradeoff` saves (a bare Agg figure, for inspection or other formats)."""
    if not points:
        raise ValueError("points is empty; nothing to plot")
    if x not in ("mac_fraction", "macs"):
        raise ValueError(f"x must be 'mac_fraction' or 'macs', got {x!r}")

    def xval(p: TradeoffPoint) -> float:
        return p.mac_fraction if x == "mac_fraction" else p.macs

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    # One set of series per gate family (in order of appearance), then the vanilla points.
    families = list(dict.fromkeys(p.gate_type for p in points if p.kind != "vanilla"))
    several = len(families) > 1
    sets = [[p for p in points if p.kind != "vanilla" and p.gate_type == f] for f in families]
    sets.append([p for p in points if p.kind == "vanilla"])
    labels: list[tuple[tuple[float, float], str, str]] = []
    for index, members in enumerate(sets):
        family = families[index] if index < len(families) else None
        any_calibrated = any(p.calibrated for p in members)
        groups: dict[str, list[TradeoffPoint]] = {}
        for p in members:
            groups.setdefault(_series(p, any_calibrated=any_calibrated), []).append(p)
        for series in _SERIES:
            group = sorted(groups.get(series, []), key=xval)
            if not group:
                continue
            legend, style = _family_style(series, family, index, any_calibrated=any_calibrated,
                                          several=several)
            ax.plot([xval(p) for p in group], [p.accuracy for p in group], label=legend, **style)
            for p in group:
                text = _text(p, series)
                if text is not None:
                    labels.append(((xval(p), p.accuracy), text, style["color"]))
    ax.set_xlabel("MACs / dense MACs" if x == "mac_fraction" else "MACs per image")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.12, y=0.15)  # room for the labels inside the axes
    if several:  # a series set per family: a legend inside the axes would cover points
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    else:
        ax.legend(loc="lower right", fontsize=8)
    ax.autoscale_view()  # final limits first: label placement works in display coordinates
    _place_labels(fig, ax, labels)
    return fig


def plot_tradeoff(
    points: Sequence[TradeoffPoint],
    *,
    path: str | os.PathLike[str],
    title: str = "Accuracy vs. compute",
    x: Literal["mac_fraction", "macs"] = "mac_fraction",
    ylabel: str = "top-1 accuracy (%)",
) -> Path:
    """Plot accuracy against compute: the gated curve, the trained threshold, dense and vanilla.

    Calibrated gated points are joined by a line in order of compute (without calibrated points,
    all gated points are) and labelled with their ``t_d``; a checkpoint's own threshold is a
    separate marker labelled ``t_d=... (trained)``; dense and vanilla points are named by the
    legend only. Points of several gate families (``TradeoffPoint.gate_type``) get these series
    once per family, in their own colours and named in the legend (``"width gates, calibrated to
    t_d"``, ``"dense, width gates"``). Labels are placed so that no two overlap (nor a marker).

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
    return _save(tradeoff_figure(points, title=title, x=x, ylabel=ylabel), path)


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
