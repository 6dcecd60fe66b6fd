"""Figures are written as non-empty PNG files; bad inputs are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from timm_gated_ssl.eval.channel_usage import ChannelUsage
from timm_gated_ssl.eval.plots import TradeoffPoint, plot_channel_usage, plot_tradeoff

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
