"""The checks :func:`~.checkpoint.evaluate_checkpoint` runs before its long passes.

Every option that needs neither the checkpoint nor the data is checked before anything is loaded,
the budgets against the loaded model before the data is, and the bank's size before the first
pass: a typo costs seconds, not a feature pass. Each error names the bad value and the valid range
(or the option to change).

Example:
    >>> check_arguments(  # doctest: +SKIP
    ...     "runs/td03", budgets=(0.5, 0.1, 0.5), calibration_tol=0.01, knn_k=20, batch_size=256,
    ...     image_size=None, calibration_size=None, linear_epochs=100, num_workers=0,
    ...     output_dir=None, export_dir=None, hub_id=None, data_dir=None, linear_seeds=(0,),
    ... )
    [0.1, 0.5]
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from torch import nn

from ..attach import has_gates
from ..calibration import budget_key
from ..errors import NoGatesError, check_budget
from ..files import check_output_dir, refuse_overlap
from ..hub.checkpoint import LoadedCheckpoint

__all__ = ["check_arguments", "check_bank", "refuse_budgets_without_gates"]


def check_arguments(
    checkpoint: str | os.PathLike[str] | nn.Module,
    *,
    budgets: Sequence[float],
    calibration_tol: float,
    knn_k: int,
    batch_size: int,
    image_size: int | None,
    calibration_size: int | None,
    linear_epochs: int,
    num_workers: int,
    output_dir: str | os.PathLike[str] | None,
    export_dir: str | os.PathLike[str] | None,
    hub_id: str | None,
    data_dir: str | os.PathLike[str] | None,
    linear_seeds: Sequence[int],
) -> list[float]:
    """Check every option that needs no checkpoint or data, so a typo fails before the long passes.

    The checks run in the order of the arguments above; the first bad value raises.

    Args:
        checkpoint: As :func:`~.checkpoint.evaluate_checkpoint`; a folder is one ``export_dir``
            must not overwrite.
        budgets: Fractions of the dense MACs in (0, 1].
        calibration_tol: Accepted calibration error, in (0, 1).
        knn_k: k-NN neighbours, an integer >= 1.
        batch_size: Images per forward, an integer >= 1.
        image_size: Evaluation resolution, an integer >= 1 or None.
        calibration_size: Calibration images, an integer >= 1 or None.
        linear_epochs: Epochs of each probe, an integer >= 1.
        num_workers: DataLoader workers, an integer >= 0.
        output_dir: A folder to write the results to, or None.
        export_dir: A folder to export the calibrated checkpoint to, or None.
        hub_id: A Hub dataset id ``owner/name``, or None.
        data_dir: An existing local data folder, or None.
        linear_seeds: A non-empty sequence of probe seeds.

    Returns:
        The requested budgets, sorted, without duplicates (by :func:`budget_key`).

    Raises:
        TypeError: ``budgets`` is not a sequence of numbers.
        InvalidBudgetError: A budget outside (0, 1].
        ConfigError: ``output_dir`` / ``export_dir`` is not writable as a folder, or
            ``export_dir`` would overwrite the checkpoint's own files.
        ValueError: Another option outside its valid range (named in the message).
    """
    budget_list = check_budgets(budgets)
    if not 0 < calibration_tol < 1:
        raise ValueError(f"calibration_tol must be in (0, 1), got {calibration_tol!r}")
    if isinstance(knn_k, bool) or not isinstance(knn_k, int) or knn_k < 1:
        raise ValueError(f"knn_k must be an integer >= 1, got {knn_k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    for name, value, low in (("image_size", image_size, 1), ("calibration_size", calibration_size, 1),
                             ("linear_epochs", linear_epochs, 1), ("num_workers", num_workers, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ValueError(f"{name} must be an integer >= {low}" + (" or None" if name in
                             ("image_size", "calibration_size") else "") + f", got {value!r}")
    for name, folder in (("output_dir", output_dir), ("export_dir", export_dir)):
        if folder is not None:
            check_output_dir(folder, name=name)  # before the long passes, not after them
    if export_dir is not None and isinstance(checkpoint, (str, os.PathLike)) \
            and not os.fspath(checkpoint).startswith("hf-hub:"):
        # The export replaces model.safetensors and config.json: never the checkpoint's own.
        refuse_overlap(export_dir, checkpoint, output_name="export_dir", source_name="checkpoint", inside_ok=True)
    if hub_id is not None and (not isinstance(hub_id, str) or hub_id.count("/") != 1):
        raise ValueError(f"hub_id must be a Hub dataset id 'owner/name', got {hub_id!r}")
    if data_dir is not None and not os.path.isdir(data_dir):
        raise ValueError(f"data_dir {os.fspath(data_dir)!r} is not an existing folder")
    if isinstance(linear_seeds, (str, bytes)) or not linear_seeds:
        raise ValueError(f"linear_seeds must be a non-empty sequence of integers, got {linear_seeds!r}")
    return budget_list


def check_budgets(budgets: Sequence[float]) -> list[float]:
    """``budgets`` sorted and without duplicates, each checked to be in (0, 1].

    Raises:
        TypeError: ``budgets`` is not a sequence of numbers.
        InvalidBudgetError: A budget outside (0, 1].
    """
    if isinstance(budgets, (str, bytes)) or not isinstance(budgets, Sequence):
        raise TypeError(f"budgets must be a sequence of numbers in (0, 1], got {budgets!r}")
    checked = {budget_key(b): b for b in (check_budget(v, name="each budget") for v in budgets)}
    return sorted(checked.values())


def refuse_budgets_without_gates(loaded: LoadedCheckpoint, budgets: Sequence[float],
                                 fixed_budgets: Sequence[float] = ()) -> None:
    """Budgets are calibrated by moving the gates' threshold, and fixed budgets keep the channels
    the gates use most: an ungated checkpoint has neither.

    Raises:
        NoGatesError: ``budgets`` or ``fixed_budgets`` is not empty and ``loaded.model`` has no gates.
    """
    for flag, values, verb in (("--budgets", budgets, "calibrated"), ("--fixed_budgets", fixed_budgets, "exported")):
        if values and not has_gates(loaded.model):
            raise NoGatesError(
                f"{loaded.source} ({loaded.name}) has no gates, so budgets "
                f"{[float(b) for b in values]} cannot be {verb}: evaluate a gated checkpoint "
                f"(a gated_* architecture) or drop {flag} (pass an ungated run as the vanilla baseline)"
            )


def check_bank(images: int, *, num_classes: int, knn_k: int, max_train: int | None) -> None:
    """A probe / k-NN bank needs an image per class and ``knn_k`` neighbours to vote; fewer gives
    a valid-looking but meaningless result, so it is refused, naming the option to change.

    Raises:
        ValueError: ``images`` is below ``max(num_classes, knn_k)``.
    """
    need = max(num_classes, knn_k)
    if images >= need:
        return
    cause = (f"max_train={max_train} leaves" if max_train is not None else "the training split has")
    raise ValueError(
        f"{cause} {images} labelled image(s) for the probe / k-NN bank, fewer than the "
        f"{num_classes} classes or knn_k={knn_k} neighbours: pass --max_train {need} or more"
        + (" (or a smaller --knn_k)" if knn_k > num_classes else "")
    )
