"""Figures are written as non-empty PNG files; bad inputs are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from timm_gated_ssl.eval.channel_usage import ChannelUsage
from timm_gated_ssl.eval.plots import plot_channel_usage, plot_tradeoff
from timm_gated_ssl.results import TradeoffPoint

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _points() -> list[TradeoffPoint]:
    return [
        TradeoffPoint("vanilla", macs=5.6e8, mac_fraction=1.0, accuracy=91.1, kind="vanilla"),
        TradeoffPoint(
            "dense 0.3", macs=5.6e8, mac_fraction=1.0, accuracy=90.4, budget=0.3, kind="dense"
        ),
        TradeoffPoint("gated 0.5", macs=2.9e8, mac_fraction=0.51, accuracy=90.4, budget=0.5),
        TradeoffPoint("gated 0.1", macs=1.0e8, mac_fraction=0.185, accuracy=88.9, budget=0.1),
    ]


@pytest.mark.parametrize("x", ["mac_fraction", "macs"])
def test_plot_tradeoff_writes_png(tmp_path: Path, x: str) -> None:
    out = plot_tradeoff(_points(), path=tmp_path / "sub" / "tradeoff.png", title="t", x=x)
    assert out == tmp_path / "sub" / "tradeoff.png"
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_plot_channel_usage_writes_png(tmp_path: Path) -> None:
    usage = [ChannelUsage(f"layer{i}.0", always_off=i, always_on=2, dynamic=5) for i in range(4)]
    out = plot_channel_usage(usage, path=tmp_path / "usage.png")
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_plot_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="points is empty"):
        plot_tradeoff([], path=tmp_path / "a.png")
    with pytest.raises(ValueError, match="x must be"):
        plot_tradeoff(_points(), path=tmp_path / "a.png", x="flops")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="usage is empty"):
        plot_channel_usage([], path=tmp_path / "b.png")
    with pytest.raises(ValueError, match="kind must be one of"):
        TradeoffPoint("p", macs=1.0, mac_fraction=1.0, accuracy=50.0, kind="sparse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="accuracy of 'p' must be a percentage"):
        TradeoffPoint("p", macs=1.0, mac_fraction=1.0, accuracy=0.9 * 1000)
    with pytest.raises(ValueError, match="macs of 'p'"):
        TradeoffPoint("p", macs=0.0, mac_fraction=1.0, accuracy=50.0)
    with pytest.raises(ValueError, match="budget of 'p'"):
        TradeoffPoint("p", macs=1.0, mac_fraction=1.0, accuracy=50.0, budget=1.5)


def _issue_points() -> list[TradeoffPoint]:
    """The crowded case of a real evaluation: a run trained at t_d 0.3, calibrated to 0.1-0.5.

    The checkpoint's own threshold and the calibrated 0.3 land on almost the same spot, and the
    calibrated points sit close together."""
    return [
        TradeoffPoint("dense", macs=5.6e8, mac_fraction=1.0, accuracy=90.4, budget=0.3, kind="dense"),
        TradeoffPoint("gated t_d=0.3", macs=1.7e8, mac_fraction=0.305, accuracy=89.9, budget=0.3),
        *[
            TradeoffPoint(f"gated t_d={b} (calibrated)", macs=5.6e8 * f, mac_fraction=f, accuracy=a,
                          budget=b, calibrated=True)
            for b, f, a in [(0.1, 0.11, 86.0), (0.2, 0.205, 88.7), (0.3, 0.30, 89.9),
                            (0.4, 0.40, 90.1), (0.5, 0.50, 90.2)]
        ],
        TradeoffPoint("vanilla", macs=5.6e8, mac_fraction=1.0, accuracy=90.6, kind="vanilla"),
    ]


def test_tradeoff_labels_are_distinct_and_never_overlap() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from timm_gated_ssl.eval.plots import tradeoff_figure

    fig = tradeoff_figure(_issue_points())
    ax = fig.axes[0]
    renderer = FigureCanvasAgg(fig).get_renderer()
    texts = [t for t in ax.texts if t.get_visible()]
    labels = [t.get_text() for t in texts]
    # One label per gated point, all different: the trained threshold is not "t_d=0.3" twice.
    assert sorted(labels) == sorted(["$t_d$=0.3 (trained)", "$t_d$=0.1", "$t_d$=0.2", "$t_d$=0.3",
                                     "$t_d$=0.4", "$t_d$=0.5"])
    boxes = [t.get_window_extent(renderer) for t in texts]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (labels, a, b)
    # Dense and vanilla are named by the legend, not by a budget next to the marker.
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["gated, calibrated to $t_d$", "gated, trained threshold", "dense", "vanilla SSL baseline"]
    assert not any("dense" in label or "vanilla" in label for label in labels)


def test_uncalibrated_runs_form_the_curve(tmp_path: Path) -> None:
    from timm_gated_ssl.eval.plots import tradeoff_figure

    fig = tradeoff_figure(_points())  # gated points of several runs, none calibrated
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["gated", "dense", "vanilla SSL baseline"]
    assert ax.lines[0].get_linestyle() == "-" and len(ax.lines[0].get_xdata()) == 2
    assert sorted(t.get_text() for t in ax.texts) == ["$t_d$=0.1", "$t_d$=0.5"]


def test_outputs_honour_the_umask(tmp_path: Path) -> None:
    import os

    old = os.umask(0o027)
    try:
        out = plot_tradeoff(_points(), path=tmp_path / "t.png")
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777) == 0o640
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp_")]
