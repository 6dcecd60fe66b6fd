"""The phases of :func:`~.checkpoint.evaluate_checkpoint` before and after its model passes.

Before: the protocol's data, with the options left None taken from the pretraining run, and its
loaders. After: the ``protocol`` record of the result and the files written. Each is a small
function, so that ``evaluate_checkpoint`` reads as the protocol of Krishna et al. (BMVC 2023),
Table 1, top to bottom; the option checks are ``checks.py``, the rows ``entries.py``.

Example:
    >>> loaders = Loaders(  # doctest: +SKIP
    ...     transform=build_eval_transform(image_size=32, mean=data.train.mean, std=data.train.std),
    ...     batch_size=256, num_workers=0, accelerator=None,
    ... )
    >>> test_loader = loaders.of(data.test)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..data import EvalDataset, ImageDataset
from ..errors import NoGatesError
from ..results import EvaluationResult
from .entries import ProbeSettings
from .evaluate import KNN_TEMPERATURE
from .outputs import export_calibrated, write_outputs
from .protocol_data import ProtocolData, prepare_data

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = ["Loaders", "protocol_data_for", "protocol_record", "write_results"]

_MAX_CACHED_IMAGES = 100_000  # keep decoded images in memory up to this many (as the recipe)


# ------------------------------------------------------------------------------- the data
def protocol_data_for(
    pretrain: Mapping[str, Any],
    *,
    dataset: str,
    train_split: str,
    test_split: str,
    calibration_split: str | None,
    calibration_size: int | None,
    need_calibration: bool,
    image_size: int | None,
    data_dir: str | os.PathLike[str] | None,
    hub_id: str | None,
    max_train: int | None,
    seed: int,
) -> ProtocolData:
    """The protocol's splits (:func:`~.protocol_data.prepare_data`), with defaults from the run.

    An option left None takes the pretraining run's ``config.yaml`` value: ``image_size`` always,
    ``data_dir`` and ``hub_id`` only when the run was pretrained on the same ``dataset`` (another
    dataset's folder or Hub id would be wrong). The other arguments are passed on as they are.

    Args:
        pretrain: The run's pretraining config (empty for a bare checkpoint).
        dataset: As :func:`~.protocol_data.prepare_data`.
        train_split: As :func:`~.protocol_data.prepare_data`.
        test_split: As :func:`~.protocol_data.prepare_data`.
        calibration_split: As :func:`~.protocol_data.prepare_data`.
        calibration_size: As :func:`~.protocol_data.prepare_data`.
        need_calibration: As :func:`~.protocol_data.prepare_data`.
        image_size: Evaluation resolution, or None for the run's.
        data_dir: Local data folder, or None for the run's (same dataset only).
        hub_id: Hub dataset id, or None for the run's (same dataset only).
        max_train: As :func:`~.protocol_data.prepare_data`.
        seed: As :func:`~.protocol_data.prepare_data`.
    """
    same_data = pretrain.get("dataset") == dataset
    return prepare_data(
        dataset=dataset,
        train_split=train_split,
        test_split=test_split,
        calibration_split=calibration_split,
        calibration_size=calibration_size,
        need_calibration=need_calibration,
        image_size=image_size if image_size is not None else pretrain.get("image_size"),
        data_dir=data_dir
        if data_dir is not None
        else (pretrain.get("data_dir") if same_data else None),
        hub_id=hub_id if hub_id is not None else (pretrain.get("hub_id") if same_data else None),
        max_train=max_train,
        seed=seed,
    )


@dataclass(frozen=True)
class Loaders:
    """Unshuffled evaluation loaders: one transform, batch size and worker count for every split.

    Attributes:
        transform: The deterministic evaluation transform (:func:`~.data.build_eval_transform`).
        batch_size: Images per forward (per process).
        num_workers: DataLoader workers.
        accelerator: Shards the loaders over its processes, if given.
    """

    transform: Callable[[Any], Tensor]
    batch_size: int
    num_workers: int
    accelerator: Accelerator | None

    def of(self, info: ImageDataset, *, shard: bool = True, labels: bool = True) -> Any:
        """The loader of one split; ``shard=False`` gives every process all of it (calibration)."""
        rows = EvalDataset(
            info.dataset,
            self.transform,
            image_column=info.image_column,
            label_column=info.label_column if labels else None,
            cache_decoded=len(info) <= _MAX_CACHED_IMAGES,
        )
        loader = DataLoader(
            rows, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers
        )
        if self.accelerator is not None and shard:
            return self.accelerator.prepare_data_loader(loader)
        return loader


# ------------------------------------------------------------------------------- the record
def protocol_record(
    data: ProtocolData,
    *,
    checkpoint: str,
    vanilla: str | None,
    train_split: str,
    test_split: str,
    calibration_tol: float | None,
    settings: ProbeSettings,
    dense_macs: float,
    seed: int,
    world_size: int,
) -> dict[str, Any]:
    """The ``protocol`` of the result: splits, sample counts and settings, JSON-safe.

    Args:
        data: The protocol's splits (their sizes, sources, resolution and statistics).
        checkpoint: Where the checkpoint came from.
        vanilla: Where the baseline came from, if one was evaluated.
        train_split: The bank's split.
        test_split: The split the metrics and the compute are measured on.
        calibration_tol: The calibration tolerance, None when no budget was calibrated.
        settings: The probes' settings.
        dense_macs: The checkpoint's dense MACs per image.
        seed: The seed of the bank subset and the calibration slice.
        world_size: Processes the evaluation ran on.
    """
    return {
        "checkpoint": checkpoint,
        "vanilla": vanilla,
        "train_split": train_split,
        "test_split": test_split,
        "num_train": len(data.train),
        "num_test": len(data.test),
        "calibration": data.calibration_source,
        "num_calibration": len(data.calibration) if data.calibration is not None else 0,
        "calibration_tol": calibration_tol,
        "image_size": data.image_size,
        "mean": list(data.train.mean),
        "std": list(data.train.std),
        "knn_k": settings.knn_k,
        "knn_temperature": KNN_TEMPERATURE,
        "linear_epochs": settings.linear_epochs,
        "linear_seeds": [int(s) for s in settings.linear_seeds],
        "dense_macs": dense_macs,
        "macs_counted": "conv MACs incl. stem, downsample and gates (no linear/BN)",
        "seed": seed,
        "world_size": world_size,
    }


def write_results(
    evaluation: EvaluationResult,
    *,
    output_dir: str | os.PathLike[str] | None,
    export_dir: str | os.PathLike[str] | None,
    model: nn.Module,
    gated: bool,
    offsets: dict[float, float],
    source: str,
    accelerator: Accelerator | None,
) -> None:
    """Write the result files (main process) and the calibrated export, then wait for everyone.

    Args:
        evaluation: The result to write.
        output_dir: Folder of ``results.json``, ``results.md`` and the figures, if any.
        export_dir: Folder of the checkpoint with its calibrated budgets and the same files.
        model: The evaluated checkpoint (at its own gate threshold).
        gated: Whether ``model`` has gates.
        offsets: ``{budget: gate offset}`` to add to the exported calibration table.
        source: Where the checkpoint came from (for the error message).
        accelerator: Only its main process writes; every process waits for it.

    Raises:
        NoGatesError: ``export_dir`` for an ungated checkpoint (after ``output_dir`` is written).
    """
    is_main = accelerator.is_main_process if accelerator is not None else True
    if output_dir is not None and is_main:
        write_outputs(evaluation, output_dir)
    if export_dir is not None and is_main:
        if not gated:
            raise NoGatesError(f"export_dir needs a gated checkpoint; {source} has no gates")
        export_calibrated(model, export_dir, offsets)
        write_outputs(evaluation, export_dir)
    if accelerator is not None:
        accelerator.wait_for_everyone()
