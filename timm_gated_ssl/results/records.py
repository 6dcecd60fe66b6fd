"""The records of an evaluation that figures and model cards read: per-block channel usage and
points on the accuracy/compute plane. Plain frozen dataclasses, checked when built; no torch, no
matplotlib, so any layer (Hub cards, recipes, benchmarks) can use them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["ChannelUsage", "PointKind", "TradeoffPoint"]


@dataclass(frozen=True)
class ChannelUsage:
    """Channel counts of one gated block over a dataset.

    Attributes:
        block: Block name, e.g. ``"layer1.0"``.
        always_off: Channels whose gate never fired.
        always_on: Channels whose gate fired for every sample.
        dynamic: Channels that fired for some samples but not all.
    """

    block: str
    always_off: int
    always_on: int
    dynamic: int

    def __post_init__(self) -> None:
        for name in ("always_off", "always_on", "dynamic"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"{name} of block {self.block!r} must be an int >= 0, got {value!r}"
                )

    @property
    def channels(self) -> int:
        """Total number of gated channels in the block."""
        return self.always_off + self.always_on + self.dynamic

    def fractions(self) -> tuple[float, float, float]:
        """``(always_off, always_on, dynamic)`` as fractions of :attr:`channels`."""
        total = self.channels
        if total == 0:
            return (0.0, 0.0, 0.0)
        return (self.always_off / total, self.always_on / total, self.dynamic / total)


PointKind = Literal["dense", "gated", "vanilla", "fixed"]
_KINDS: tuple[str, ...] = ("dense", "gated", "vanilla", "fixed")


@dataclass(frozen=True)
class TradeoffPoint:
    """One model (or one mode of a model) on the accuracy/compute plane.

    Attributes:
        label: A readable name, e.g. ``"gated t_d=0.3"`` (the plot writes its own short labels).
        macs: Multiply-accumulates per image (> 0).
        mac_fraction: ``macs`` over the dense network's MACs, > 0 (1 for dense/vanilla; a gated
            network can exceed 1 slightly through the gates' own cost).
        accuracy: Top-1 accuracy (%), e.g. the linear-probe mean.
        budget: Target budget ``t_d``: the one the run was trained for, or for a calibrated point
            the one calibrated to.
        kind: ``"dense"``, ``"gated"``, ``"vanilla"`` (a plain SSL baseline without gates) or
            ``"fixed"`` (a plain model exported at ``budget`` by ``export_at_budget``).
        calibrated: A gated point whose threshold was calibrated to ``budget`` (False: the
            checkpoint's own, trained threshold).
        gate_type: The gate family of a gated or dense point (``"channel"``, ``"width"``), or
            None. Points of two or more families are drawn as one set of series per family,
            named in the legend; with one family (or none given) the plot does not mention it.
    """

    label: str
    macs: float
    mac_fraction: float
    accuracy: float
    budget: float | None = None
    kind: PointKind = "gated"
    calibrated: bool = False
    gate_type: str | None = None

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
        if self.calibrated and (self.kind != "gated" or self.budget is None):
            raise ValueError(f"only a gated point with a budget can be calibrated ({self.label!r})")
        if self.gate_type is not None and (self.kind == "vanilla" or not self.gate_type):
            raise ValueError(
                f"gate_type of {self.label!r} must be None for a vanilla point and a non-empty name "
                f"(e.g. 'channel', 'width') otherwise, got {self.gate_type!r}"
            )
