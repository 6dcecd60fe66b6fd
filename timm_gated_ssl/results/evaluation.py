"""Typed, JSON-safe record of a whole evaluation: one entry per encoder mode and budget.

The schema mirrors the paper's Table 1 (Krishna et al., BMVC 2023): for each mode (dense or gated,
plus an optional vanilla SSL baseline) and each trained budget ``t_d``, the k-NN monitors, the
linear-probe top-1 and the compute. It is also what the Hub model cards read their
``model-index`` results from, so the field names are plain and stable:

============== ===============================================================================
field          meaning
============== ===============================================================================
mode           ``"dense"``, ``"gated"``, ``"vanilla"`` (plain SSL, no gates) or ``"fixed"`` (a plain
               model exported at ``budget`` with ``export_at_budget``: no gates, the same cost for
               every input)
budget         target ``t_d`` (fraction of dense MACs) the run was trained for; ``None`` if none
knn_top1       weighted k-NN top-1 (%), k = 20, T = 0.07
knn1_top1      nearest-neighbour top-1 (%), k = 1
linear_top1    linear-probe top-1 (%), mean over ``linear_runs`` seeds
linear_top1_std sample std of the linear-probe top-1 over seeds (%)
linear_runs    number of linear-probe seeds averaged
macs           multiply-accumulates per image on the test set (conv MACs incl. gates and stem)
mac_fraction   ``macs`` / dense MACs (``F_g / F_d``); 1.0 for dense
flops_reduction ``1 - mac_fraction`` (derived; written by ``to_dict``, checked by ``from_dict``)
calibrated     ``True`` when the gates run at a threshold calibrated to ``budget`` (then ``budget``
               is the calibration target, not the training target)
calibration_mac_fraction  ``F_g / F_d`` on the calibration data, for calibrated entries
gate_offset    global gate-logit offset the entry was measured at (gated entries)
channel_usage  per gated block: channels always off / always on / data-dependent on the test set
============== ===============================================================================

Fields added after the first release (``calibrated`` and below) have defaults, so dicts written
before them still load.

Example:
    >>> entry = ModeEvaluation(mode="gated", budget=0.3, linear_top1=90.27, mac_fraction=0.3357)
    >>> round(entry.flops_reduction, 4)
    0.6643
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from .records import ChannelUsage, TradeoffPoint

__all__ = ["SCHEMA_VERSION", "EvaluationResult", "ModeEvaluation"]

SCHEMA_VERSION = 1
"""Version of the ``to_dict`` layout; bumped on incompatible changes."""

Mode = Literal["dense", "gated", "vanilla", "fixed"]
_MODES: tuple[str, ...] = ("dense", "gated", "vanilla", "fixed")
_PERCENT_FIELDS = ("knn_top1", "knn1_top1", "linear_top1")
Metric = Literal["linear_top1", "knn_top1", "knn1_top1"]


def _check_optional_number(name: str, value: Any, *, low: float, high: float) -> None:
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must be None or a number in [{low}, {high}], got {value!r}")


def _usage_from_dict(item: Mapping[str, Any]) -> ChannelUsage:
    keys = {"block", "always_off", "always_on", "dynamic"}
    unknown = sorted(set(item) - keys - {"channels"})
    if unknown or not keys <= set(item):
        raise ValueError(
            f"a channel_usage item needs the keys {sorted(keys)} (and optionally 'channels'), "
            f"got {sorted(item)}"
        )
    usage = ChannelUsage(**{k: item[k] for k in keys})
    if "channels" in item and item["channels"] != usage.channels:
        raise ValueError(
            f"channel_usage of block {usage.block!r}: channels={item['channels']!r} is not "
            "always_off + always_on + dynamic"
        )
    return usage


@dataclass(frozen=True)
class ModeEvaluation:
    """Metrics and compute of one encoder mode at one budget (one row of the results table).

    Attributes:
        mode: ``"dense"``, ``"gated"``, ``"vanilla"`` or ``"fixed"`` (fixed-budget export).
        budget: Target ``t_d`` of the training run, in ``(0, 1]``; ``None`` for vanilla runs.
        knn_top1: Weighted k-NN (k=20) top-1 in %.
        knn1_top1: 1-NN top-1 in %.
        linear_top1: Linear-probe top-1 in %, averaged over ``linear_runs`` seeds.
        linear_top1_std: Standard deviation of the linear-probe top-1 over seeds, in %.
        linear_runs: Number of linear-probe seeds behind ``linear_top1``.
        macs: Multiply-accumulates per image (mean over the test set).
        mac_fraction: ``macs`` over the dense MACs (``F_g / F_d``), > 0; 1.0 for dense.
        calibrated: The gates ran at a threshold calibrated to ``budget`` (see
            :func:`~timm_gated_ssl.calibration.calibrate_budget`); ``budget`` is then the
            calibration target rather than the training target.
        calibration_mac_fraction: ``F_g / F_d`` realised on the calibration data (calibrated
            entries).
        gate_offset: The global gate-logit offset the entry was measured at (gated entries).
        channel_usage: Per gated block, the channels that were always off, always on or
            data-dependent over the evaluation split (gated entries).
    """

    mode: Mode
    budget: float | None = None
    knn_top1: float | None = None
    knn1_top1: float | None = None
    linear_top1: float | None = None
    linear_top1_std: float | None = None
    linear_runs: int | None = None
    macs: float | None = None
    mac_fraction: float | None = None
    calibrated: bool = False
    calibration_mac_fraction: float | None = None
    gate_offset: float | None = None
    channel_usage: tuple[ChannelUsage, ...] | None = None

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {self.mode!r}")
        if self.budget is not None:
            _check_optional_number("budget", self.budget, low=0.0, high=1.0)
            if self.budget == 0:
                raise ValueError(f"budget must be in (0, 1] or None, got {self.budget!r}")
        for name in _PERCENT_FIELDS:
            _check_optional_number(name, getattr(self, name), low=0.0, high=100.0)
        _check_optional_number("linear_top1_std", self.linear_top1_std, low=0.0, high=100.0)
        if self.linear_runs is not None and (
            isinstance(self.linear_runs, bool)
            or not isinstance(self.linear_runs, int)
            or self.linear_runs < 1
        ):
            raise ValueError(
                f"linear_runs must be None or an integer >= 1, got {self.linear_runs!r}"
            )
        _check_optional_number("macs", self.macs, low=0.0, high=math.inf)
        _check_optional_number("mac_fraction", self.mac_fraction, low=0.0, high=math.inf)
        if self.mac_fraction == 0:
            raise ValueError("mac_fraction must be > 0 (MACs / dense MACs), got 0")
        if not isinstance(self.calibrated, bool):
            raise TypeError(f"calibrated must be a bool, got {self.calibrated!r}")
        if self.calibrated and self.budget is None:
            raise ValueError("a calibrated entry needs the budget it was calibrated to")
        _check_optional_number(
            "calibration_mac_fraction", self.calibration_mac_fraction, low=0.0, high=math.inf
        )
        _check_optional_number("gate_offset", self.gate_offset, low=-math.inf, high=math.inf)
        if self.channel_usage is not None:
            usage = tuple(self.channel_usage)
            for i, item in enumerate(usage):
                if not isinstance(item, ChannelUsage):
                    raise TypeError(
                        f"channel_usage[{i}] must be a ChannelUsage, got {type(item).__name__}"
                    )
            object.__setattr__(self, "channel_usage", usage)

    @property
    def flops_reduction(self) -> float | None:
        """``1 - F_g / F_d`` (the paper's "FLOPs reduction"), or ``None`` without ``mac_fraction``."""
        return None if self.mac_fraction is None else 1.0 - self.mac_fraction

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field plus the derived ``flops_reduction``."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["flops_reduction"] = self.flops_reduction
        if self.channel_usage is not None:
            out["channel_usage"] = [
                {
                    "block": u.block,
                    "always_off": u.always_off,
                    "always_on": u.always_on,
                    "dynamic": u.dynamic,
                    "channels": u.channels,
                }
                for u in self.channel_usage
            ]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModeEvaluation:
        """Rebuild an entry from :meth:`to_dict` output.

        Raises:
            ValueError: On unknown keys, a missing ``mode``, invalid values, or a
                ``flops_reduction`` that disagrees with ``mac_fraction``.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"flops_reduction"})
        if unknown:
            raise ValueError(
                f"unknown ModeEvaluation keys {unknown}; valid keys are {sorted(known)}"
            )
        if "mode" not in data:
            raise ValueError("a ModeEvaluation dict needs a 'mode' key")
        values = {k: v for k, v in data.items() if k in known}
        if values.get("channel_usage") is not None:
            values["channel_usage"] = tuple(
                _usage_from_dict(item) for item in values["channel_usage"]
            )
        entry = cls(**values)
        stored = data.get("flops_reduction")
        derived = entry.flops_reduction
        if stored is not None and (derived is None or abs(stored - derived) > 1e-9):
            raise ValueError(
                f"flops_reduction={stored!r} disagrees with mac_fraction={entry.mac_fraction!r} "
                "(expected 1 - mac_fraction)"
            )
        return entry


@dataclass(frozen=True)
class EvaluationResult:
    """All evaluated modes and budgets of one model on one dataset.

    Attributes:
        model_name: Model identifier, e.g. ``"resnet18_gated.cifar10_vicreg"``.
        dataset: Dataset identifier, e.g. ``"cifar10"``.
        entries: One :class:`ModeEvaluation` per mode and budget.
        split: Evaluation split the metrics are measured on.
        protocol: JSON-safe description of how the numbers were obtained (splits, sample counts,
            image size, k-NN and probe settings, checkpoint paths); empty when not recorded.
    """

    model_name: str
    dataset: str
    entries: tuple[ModeEvaluation, ...] = field(default_factory=tuple)
    split: str = "test"
    protocol: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", tuple(self.entries))
        for i, entry in enumerate(self.entries):
            if not isinstance(entry, ModeEvaluation):
                raise TypeError(
                    f"entries[{i}] must be a ModeEvaluation, got {type(entry).__name__}"
                )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (``json.dumps`` works on it directly)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "model_name": self.model_name,
            "dataset": self.dataset,
            "split": self.split,
            "entries": [entry.to_dict() for entry in self.entries],
            "protocol": dict(self.protocol),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationResult:
        """Rebuild a result from :meth:`to_dict` output.

        Raises:
            ValueError: On a different ``schema_version``, unknown or missing keys, or invalid
                entries.
        """
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {version!r} is not supported; this version reads {SCHEMA_VERSION}"
            )
        valid = {"schema_version", "model_name", "dataset", "split", "entries", "protocol"}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ValueError(
                f"unknown EvaluationResult keys {unknown}; valid keys are {sorted(valid)}"
            )
        missing = [key for key in ("model_name", "dataset") if key not in data]
        if missing:
            raise ValueError(f"an EvaluationResult dict needs the keys {missing}")
        return cls(
            model_name=data["model_name"],
            dataset=data["dataset"],
            split=data.get("split", "test"),
            entries=tuple(ModeEvaluation.from_dict(e) for e in data.get("entries", ())),
            protocol=dict(data.get("protocol") or {}),
        )

    def to_markdown(self) -> str:
        """A Markdown table with one row per entry (missing values shown as ``-``)."""

        def pct(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}"

        def linear(entry: ModeEvaluation) -> str:
            if entry.linear_top1 is None:
                return "-"
            if entry.linear_top1_std is None or not entry.linear_runs or entry.linear_runs < 2:
                return f"{entry.linear_top1:.2f}"
            return (
                f"{entry.linear_top1:.2f} ± {entry.linear_top1_std:.2f} ({entry.linear_runs} runs)"
            )

        top1 = str(self.protocol.get("top1_name", "Linear-probe top-1")).replace("Linear-probe", "linear")
        header = (
            f"| mode | t_d | {top1} (%) | k-NN top-1 (%, k=20) | 1-NN top-1 (%) "
            "| MACs / image | MAC fraction | FLOPs reduction |"
        )
        lines = [
            f"Evaluation of `{self.model_name}` on `{self.dataset}` ({self.split} split)",
            "",
            header,
            "|---|---|---|---|---|---|---|---|",
        ]
        for e in self.entries:
            reduction = e.flops_reduction
            lines.append(
                "| "
                + " | ".join(
                    [
                        f"{e.mode} (calibrated)" if e.calibrated else e.mode,
                        "-" if e.budget is None else f"{e.budget:g}",
                        linear(e),
                        pct(e.knn_top1),
                        pct(e.knn1_top1),
                        "-" if e.macs is None else f"{e.macs:.3e}",
                        "-" if e.mac_fraction is None else f"{e.mac_fraction:.4f}",
                        "-" if reduction is None else f"{100 * reduction:.2f}%",
                    ]
                )
                + " |"
            )
        return "\n".join(lines) + "\n"

    def tradeoff_points(self, *, metric: Metric = "linear_top1") -> list[TradeoffPoint]:
        """Entries with compute and ``metric`` as points for :func:`~.plots.plot_tradeoff`.

        Entries lacking ``macs``, ``mac_fraction`` or the metric are skipped.
        """
        if metric not in _PERCENT_FIELDS:
            raise ValueError(f"metric must be one of {_PERCENT_FIELDS}, got {metric!r}")
        points = []
        for e in self.entries:
            value = getattr(e, metric)
            if value is None or e.macs is None or e.mac_fraction is None:
                continue
            label = e.mode if e.budget is None else f"{e.mode} t_d={e.budget:g}"
            if e.calibrated:
                label += " (calibrated)"
            points.append(
                TradeoffPoint(
                    label=label,
                    macs=e.macs,
                    mac_fraction=e.mac_fraction,
                    accuracy=value,
                    budget=e.budget,
                    kind=e.mode,
                    calibrated=bool(e.calibrated),
                )
            )
        return points
