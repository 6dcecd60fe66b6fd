"""Evaluate a pretrained checkpoint end to end: dense, gated, calibrated budgets, vanilla baseline.

The evaluation of Krishna et al. (BMVC 2023, arXiv:2301.09164), Table 1, from one call: the frozen
encoder in eval mode (deterministic gates), its pooled features in the dense mode and in the gated
mode, a weighted k-NN (k = 20) and 1-NN monitor, a linear probe per mode averaged over seeds, and
the realised compute ``F_g / F_d`` (with the FLOPs reduction ``1 - F_g / F_d``) on the test split.
Beyond the paper, the same checkpoint is evaluated at further budgets by calibrating the gates'
threshold (:func:`~timm_gated_ssl.calibration.calibrate_budget`) on held-out training images.

Example:
    >>> result = evaluate_checkpoint(  # doctest: +SKIP
    ...     "runs/cifar10_vicreg_dual_td03", dataset="cifar10", budgets=(0.1, 0.3, 0.5),
    ...     output_dir="runs/cifar10_vicreg_dual_td03/eval",
    ... )
    >>> print(result.to_markdown())  # doctest: +SKIP

Where each phase lives: loading the checkpoint ``hub/checkpoint.py``; the option checks
``checks.py``; the protocol's splits ``protocol_data.py``, with the run's defaults and the loaders
``phases.py``; one feature pass ``passes.py``; the rows per mode and budget ``entries.py`` (each
through :func:`~.evaluate.evaluate_features`); the protocol record and the files ``phases.py``
(written by ``outputs.py``). This module runs them in the protocol's order, and holds the two
steps that touch the model's gates from outside: the passes and the budget calibration.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..attach import has_gates
from ..calibration import calibrate_budget, gate_offset, set_gate_offset
from ..compute import cost_table
from ..data import ImageDataset, build_eval_transform
from ..hub.checkpoint import load_run
from ..results import EvaluationResult
from .checks import check_arguments, check_bank, check_budgets, refuse_budgets_without_gates
from .entries import ProbeSettings, fixed_entries, gated_entries, restored_gates, vanilla_entry
from .evaluate import KNN_TEMPERATURE
from .passes import SplitPass
from .passes import extract_pass as _extract  # every pass goes through this module-level name
from .phases import Loaders, protocol_data_for, protocol_record, write_results

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = ["KNN_TEMPERATURE", "evaluate_checkpoint"]


# ------------------------------------------------------------------------ passes, calibration
@dataclass(frozen=True)
class _Splits:
    """The bank and test loaders, and what every pass over them shares.

    ``run`` is the :data:`~.entries.Run` the rows are made from; every pass goes through this
    module's ``_extract``, so one name sees (and a test can count) all of them.
    """

    train: Any
    test: Any
    train_split: str
    test_split: str
    input_size: tuple[int, int, int]
    accelerator: Accelerator | None
    progress: bool

    def run(self, model: nn.Module, mode: str | None, tag: str) -> tuple[SplitPass, SplitPass]:
        """The bank and the test pass of ``model`` in ``mode`` (progress bars labelled ``tag``)."""
        table = cost_table(model, self.input_size) if mode == "gated" else None

        def one(loader: Any, split: str) -> SplitPass:
            return _extract(model, loader, mode=mode, table=table, accelerator=self.accelerator,
                            progress=self.progress, desc=f"{tag} {split}")

        return one(self.train, self.train_split), one(self.test, self.test_split)


def _calibrate(
    model: nn.Module, calibration: ImageDataset | None, budgets: Sequence[float], *,
    loaders: Loaders, tol: float, accelerator: Accelerator | None,
) -> tuple[dict[float, float], dict[float, float]]:
    """``{budget: gate offset}`` and ``{budget: F_g / F_d on the calibration data}``.

    Every process calibrates on all of ``calibration``, then takes the main process's offset;
    the model is back at its own offset afterwards.
    """
    offsets: dict[float, float] = {}
    fractions: dict[float, float] = {}
    if not budgets:
        return offsets, fractions
    assert calibration is not None
    loader = loaders.of(calibration, shard=False, labels=False)
    original = gate_offset(model)
    for budget in budgets:
        result = calibrate_budget(model, loader, budget, tol=tol, record=False)
        offset = result.offset
        if accelerator is not None and accelerator.num_processes > 1:
            from accelerate.utils import broadcast

            offset = float(broadcast(torch.tensor([offset], device=accelerator.device))[0])
        offsets[budget], fractions[budget] = offset, result.mac_fraction
    set_gate_offset(model, original)
    return offsets, fractions


# ------------------------------------------------------------------------------------ public
def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str] | nn.Module,
    *,
    dataset: str,
    train_split: str = "train",
    test_split: str = "test",
    image_size: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    hub_id: str | None = None,
    budgets: Sequence[float] = (),
    fixed_budgets: Sequence[float] = (),
    calibration_split: str | None = None,
    calibration_size: int | None = None,
    calibration_tol: float = 0.01,
    max_train: int | None = None,
    knn_k: int = 20,
    linear_epochs: int = 100,
    linear_seeds: Sequence[int] = (0, 1, 2, 3, 4),
    batch_size: int = 256,
    num_workers: int = 0,
    accelerator: Accelerator | None = None,
    progress: bool = True,
    vanilla: str | os.PathLike[str] | nn.Module | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    export_dir: str | os.PathLike[str] | None = None,
    model_name: str | None = None,
    seed: int = 0,
) -> EvaluationResult:
    """Evaluate a co-trained checkpoint: dense and gated modes, calibrated budgets, a baseline.

    For a gated checkpoint the result holds, in order: the ``dense`` entry; the ``gated`` entry at
    the checkpoint's own gate threshold (``budget`` = its training ``t_d``); one ``gated`` entry
    per requested budget with ``calibrated=True``, its threshold found by
    :func:`~timm_gated_ssl.calibration.calibrate_budget` on calibration data (never the test
    split); one ``fixed`` entry per ``fixed_budgets`` value, the plain model
    :func:`~timm_gated_ssl.export_at_budget` exports at that budget from the calibration data;
    and, when ``vanilla`` is given, a ``vanilla`` entry (dense mode only). An ungated
    checkpoint gives a single ``vanilla`` entry. Every entry has weighted k-NN (``knn_k``,
    cosine, T = 0.07) and 1-NN top-1, the linear-probe top-1 (mean and std over
    ``linear_seeds``; one probe per entry on its frozen features), MACs per image and
    ``mac_fraction`` = ``F_g / F_d`` over the test split (``flops_reduction = 1 - mac_fraction``).
    Gated entries also carry the per-block channel usage on the test split.

    The MACs are the numbers :func:`~timm_gated_ssl.compute.count_macs` gives (the same cost table
    applied to the masks), taken from the masks of the feature pass itself, so every image runs
    once per mode. Everything runs in eval mode: BatchNorm running statistics, deterministic gates.
    The model's gate threshold, gate mode and train/eval flag are restored afterwards; a module
    passed in is moved to the evaluation device.

    Data: the probe / k-NN bank is a seeded random subset of ``train_split`` (``max_train``
    images, default all). When budgets are requested and ``calibration_split`` is None,
    ``calibration_size`` images (default ``min(2048, N // 10)``) of ``train_split`` are held out
    of the bank for calibration. Images get the deterministic evaluation transform of
    :func:`~timm_gated_ssl.data.build_eval_transform` at ``image_size`` (default: the
    checkpoint's ``config.yaml`` value, else the dataset preset's) with the dataset's statistics.

    With an ``accelerator``, test and bank loaders are sharded over the processes and the
    features, masks and MAC fractions are gathered with ``gather_for_metrics``; every process
    calibrates on the full calibration data and then takes the main process's threshold. Only
    the main process writes files and shows progress bars. Mixed precision follows the
    accelerator (``accelerator.autocast``).

    Args:
        checkpoint: Output directory of ``recipes/pretrain.py`` (or any ``save_for_hf`` folder),
            an ``"hf-hub:ORG/NAME"`` id, or a timm model.
        dataset: Dataset preset, local image folder or Hub dataset id
            (:func:`~timm_gated_ssl.data.load_image_dataset`).
        train_split: Labelled split for the probe / k-NN bank (and calibration by default).
        test_split: Labelled split the metrics and the compute are measured on.
        image_size: Evaluation resolution.
        data_dir: Local data folder of the preset (default: the checkpoint's ``config.yaml``).
        hub_id: Hub dataset id overriding the preset's (default: the checkpoint's ``config.yaml``).
        budgets: Fractions of the dense MACs in (0, 1] to calibrate and evaluate.
        fixed_budgets: Fractions of the dense MACs in (0, 1] to export a fixed-budget plain model
            at (:func:`~timm_gated_ssl.export_at_budget`, on the calibration data) and evaluate.
        calibration_split: Split to calibrate on instead of the held-out training slice.
        calibration_size: Calibration images (held-out slice size, or a subset of
            ``calibration_split``).
        calibration_tol: Accepted absolute error of the calibrated MAC fraction.
        max_train: Bank size (seeded random subset of ``train_split``).
        knn_k: Neighbours of the weighted k-NN (the paper: 20).
        linear_epochs: Epochs of each linear probe.
        linear_seeds: One probe per seed per entry (the paper: 5 runs).
        batch_size: Images per forward (per process).
        num_workers: DataLoader workers.
        accelerator: An ``accelerate.Accelerator`` for multi-process / GPU evaluation.
        progress: tqdm progress bars (main process).
        vanilla: A vanilla SSL baseline checkpoint (same forms as ``checkpoint``), evaluated in
            dense mode on the same data, for the table and the plot.
        output_dir: When given, write ``results.json``, ``results.md``, ``tradeoff.png`` and, for
            a gated checkpoint, ``channel_usage.png`` there.
        export_dir: When given (gated checkpoints), save the checkpoint there with the calibrated
            budgets added to its table (``config.json`` ``model_args["calibrated_budgets"]`` for
            ``gated_*`` models; the weights keep the checkpoint's own threshold) together with the
            files of ``output_dir``: a folder ready for ``recipes/push_to_hub.py``.
        model_name: Name in the result (default: the checkpoint's architecture).
        seed: Seeds the bank subset and the calibration slice.

    Returns:
        The :class:`~timm_gated_ssl.results.EvaluationResult` (its ``protocol`` records the
        splits, sample counts and settings).

    Raises:
        CheckpointError: A checkpoint directory without ``config.json`` or weights, or unloadable.
        UnknownArchitectureError: The checkpoint's architecture is not registered in timm.
        InvalidBudgetError: A budget outside (0, 1].
        NoGatesError: Budgets requested for a checkpoint without gates.
        CalibrationError: A budget the model cannot reach on the calibration data.
        ValueError: A train or test split without labels, the test split as
            ``calibration_split``, or another invalid option.
    """
    fixed_list = check_budgets(fixed_budgets)
    budget_list = check_arguments(
        checkpoint, budgets=budgets, calibration_tol=calibration_tol, knn_k=knn_k,
        batch_size=batch_size, image_size=image_size, calibration_size=calibration_size,
        linear_epochs=linear_epochs, num_workers=num_workers, output_dir=output_dir,
        export_dir=export_dir, hub_id=hub_id, data_dir=data_dir, linear_seeds=linear_seeds,
    )
    loaded = load_run(checkpoint)
    model, gated = loaded.model, has_gates(loaded.model)
    refuse_budgets_without_gates(loaded, budget_list, fixed_list)
    baseline = load_run(vanilla) if vanilla is not None else None

    data = protocol_data_for(
        loaded.pretrain_config, dataset=dataset, train_split=train_split, test_split=test_split,
        calibration_split=calibration_split, calibration_size=calibration_size,
        need_calibration=bool(budget_list or fixed_list), image_size=image_size, data_dir=data_dir,
        hub_id=hub_id, max_train=max_train, seed=seed,
    )
    check_bank(len(data.train), num_classes=data.num_classes, knn_k=knn_k, max_train=max_train)
    size = data.image_size
    transform = build_eval_transform(image_size=size, mean=data.train.mean, std=data.train.std)
    loaders = Loaders(transform=transform, batch_size=batch_size, num_workers=num_workers,
                      accelerator=accelerator)
    splits = _Splits(train=loaders.of(data.train), test=loaders.of(data.test),
                     train_split=train_split, test_split=test_split, input_size=(3, size, size),
                     accelerator=accelerator, progress=progress)
    device = accelerator.device if accelerator is not None else None
    settings = ProbeSettings(num_classes=data.num_classes, knn_k=knn_k, linear_epochs=linear_epochs,
                             linear_seeds=tuple(linear_seeds), device=device)

    if device is not None:
        model.to(device)
    dense_macs = float(cost_table(model, splits.input_size).dense)
    offsets: dict[float, float] = {}
    if not gated:
        entries = [vanilla_entry(model, splits.run, tag="features", input_size=splits.input_size,
                                 dense_macs=dense_macs, settings=settings)]
    else:
        with restored_gates(model) as original:  # calibrate first: an unreachable budget fails
            offsets, fractions = _calibrate(model, data.calibration, budget_list, loaders=loaders,
                                            tol=calibration_tol, accelerator=accelerator)
            entries = gated_entries(model, splits.run, original=original, budgets=budget_list,
                                    offsets=offsets, fractions=fractions, dense_macs=dense_macs,
                                    settings=settings)
        if fixed_list:
            assert data.calibration is not None
            entries += fixed_entries(model, splits.run, budgets=fixed_list,
                                     loader=loaders.of(data.calibration, shard=False, labels=False),
                                     dense_macs=dense_macs, settings=settings)
    if baseline is not None:
        if device is not None:
            baseline.model.to(device)
        entries.append(vanilla_entry(baseline.model, splits.run, tag="vanilla",
                                     input_size=splits.input_size, dense_macs=dense_macs,
                                     settings=settings))

    protocol = protocol_record(
        data, checkpoint=loaded.source, vanilla=baseline.source if baseline is not None else None,
        train_split=train_split, test_split=test_split,
        calibration_tol=calibration_tol if budget_list else None, settings=settings,
        dense_macs=dense_macs, seed=seed,
        world_size=accelerator.num_processes if accelerator is not None else 1,
    )
    evaluation = EvaluationResult(model_name=model_name or loaded.name, dataset=dataset,
                                  entries=tuple(entries), split=test_split, protocol=protocol)
    write_results(evaluation, output_dir=output_dir, export_dir=export_dir, model=model,
                  gated=gated, offsets=offsets, source=loaded.source, accelerator=accelerator)
    return evaluation
