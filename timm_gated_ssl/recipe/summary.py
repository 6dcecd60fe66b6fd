"""The table ``recipes/pretrain.py`` prints when training ends: what was trained and what to run next.

It reads only ``metrics.json``'s values (the file stays the record); a key that a run does not
produce (no k-NN monitor, no gates) leaves its cell or line out instead of printing ``None``.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["training_summary"]


def _number(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def training_summary(metrics: Mapping[str, Any], *, output_dir: str | Path, dataset: str,
                     budget: float | None) -> str:
    """A few lines: the run's length and speed, a dense / gated table, the files, the next command.

    Args:
        metrics: The run's ``metrics.json`` values.
        output_dir: Where the checkpoint was written.
        dataset: The ``dataset`` of the config (for the evaluation command).
        budget: The training budget ``t_d`` (None for a vanilla run).
    """
    steps, epochs, seconds = (_number(metrics, k) for k in ("steps", "epochs", "wall_time_s"))
    speed, world = _number(metrics, "images_per_s"), _number(metrics, "world_size")
    lines = [(f"training finished: {_cell(steps, '.0f')} steps, {_cell(epochs, '.2f')} epochs in "
             f"{_cell(seconds, '.0f')} s ({_cell(speed, '.1f')} images/s, {_cell(world, '.0f')} process(es))")]
    dense_macs = _number(metrics, "dense_macs")
    rows = [("dense", _number(metrics, "knn_dense"), dense_macs, 1.0 if dense_macs else None)]
    if budget is not None:
        # the monitor's test images first (after any calibration), else the budget check's images
        fraction = next((v for v in (_number(metrics, k) for k in ("mac_ratio", "mac_ratio_calibrated",
                                                                    "mac_ratio_trained")) if v is not None), None)
        rows.append((f"gated (t_d {budget:g})", _number(metrics, "knn_gated"), _number(metrics, "gated_macs"),
                     fraction))
    if any(value is not None for row in rows for value in row[1:]):
        lines += ["", "| mode | k-NN top-1 (%) | MACs / image | MAC fraction |", "|---|---|---|---|"]
        lines += [f"| {mode} | {_cell(knn, '.2f')} | {_cell(macs, '.3e')} | {_cell(frac, '.3f')} |"
                  for mode, knn, macs, frac in rows]
        lines.append("")
    if _number(metrics, "knn_dense") is None:
        lines.append("(no k-NN monitor ran: eval_split is null)")
    folder = shlex.quote(str(output_dir))
    lines.append(f"checkpoint: {output_dir}/ (config.json, model.safetensors, metrics.json)")
    evaluate = f"python recipes/evaluate.py --checkpoint {folder} --dataset {shlex.quote(dataset)}"
    if budget is not None:
        evaluate += f" --budgets {budget:g} --fixed_budgets {budget:g}"
    lines.append(f"next: {evaluate}")
    return "\n".join(lines)
