"""Files of an evaluation: results JSON / markdown, plots, channel usage, the calibrated export."""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

from ..calibration import budget_key
from ..files import atomic_write_text, honour_umask, remove_stale_temporaries, staging_dir
from ..results import EvaluationResult, ModeEvaluation
from .plots import plot_channel_usage, plot_tradeoff

__all__ = ["channel_usage_markdown", "export_calibrated", "write_outputs"]


def export_calibrated(
    model: nn.Module, export_dir: str | os.PathLike[str], offsets: dict[float, float]
) -> Path:
    """Save ``model`` with ``timm.models.save_for_hf``, its calibration table extended by
    ``offsets`` (``{budget: gate-logit offset}``); the model's own table is left as it was.

    For models whose constructor takes ``calibrated_budgets`` (every ``gated_*`` model) the table
    goes to ``config.json``, so ``set_budget(model, b)`` works after loading.
    """
    from timm.models import save_for_hf

    saved_table = getattr(model, "calibrated_budgets", None)
    saved_args = getattr(model, "_model_args", None)
    table = {**(saved_table or {}), **{budget_key(b): float(o) for b, o in offsets.items()}}
    table = dict(sorted(table.items(), key=lambda kv: float(kv[0])))
    model.calibrated_budgets = table
    if isinstance(saved_args, dict):
        model._model_args = {**saved_args, "calibrated_budgets": dict(table)}
    try:
        out = Path(export_dir)
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)  # of an export killed earlier
        with staging_dir(out, name="export_") as staging:  # atomic, umask permissions
            save_for_hf(model, staging, safe_serialization=True)
            honour_umask(staging)
            for name in ("model.safetensors", "config.json"):  # weights first: config marks completion
                os.replace(staging / name, out / name)
    finally:
        model.calibrated_budgets = saved_table
        if isinstance(saved_args, dict):
            model._model_args = saved_args
    return out


def channel_usage_markdown(result: EvaluationResult) -> str:
    """A Markdown table of the channel usage of the uncalibrated gated entry (empty if none)."""
    entry = _usage_entry(result)
    if entry is None or not entry.channel_usage:
        return ""
    lines = [
        f"Gated channel usage on the {result.split} split (t_d={entry.budget:g}, checkpoint threshold)",
        "",
        "| block | channels | always off | always on | data-dependent |",
        "|---|---|---|---|---|",
    ]
    for u in entry.channel_usage:
        lines.append(f"| {u.block} | {u.channels} | {u.always_off} | {u.always_on} | {u.dynamic} |")
    return "\n".join(lines) + "\n"


def _usage_entry(result: EvaluationResult) -> ModeEvaluation | None:
    gated = [e for e in result.entries if e.mode == "gated" and e.channel_usage]
    own = [e for e in gated if not e.calibrated]
    return (own or gated or [None])[0]


def write_outputs(result: EvaluationResult, output_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``results.json``, ``results.md``, ``tradeoff.png`` and ``channel_usage.png``.

    Returns:
        File role -> path written.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # of a write killed earlier
    written: dict[str, Path] = {}
    _write_text(out / "results.json", json.dumps(result.to_dict(), indent=2) + "\n")
    written["json"] = out / "results.json"
    usage_md = channel_usage_markdown(result)
    _write_text(out / "results.md", result.to_markdown() + ("\n" + usage_md if usage_md else ""))
    written["markdown"] = out / "results.md"
    metric = "linear_top1"
    points = result.tradeoff_points(metric=metric)
    if not points:
        metric = "knn_top1"
        points = result.tradeoff_points(metric=metric)
    if points:
        written["tradeoff"] = plot_tradeoff(
            points,
            path=out / "tradeoff.png",
            title=f"{result.model_name} on {result.dataset} ({result.split})",
            ylabel="linear-probe top-1 (%)" if metric == "linear_top1" else "k-NN top-1 (%)",
        )
    entry = _usage_entry(result)
    if entry is not None and entry.channel_usage:
        written["channel_usage"] = plot_channel_usage(
            entry.channel_usage,
            path=out / "channel_usage.png",
            title=f"Gated channel usage, t_d={entry.budget:g} ({result.split} split)",
        )
    return written


def _write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)
