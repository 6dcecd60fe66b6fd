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

Loading the checkpoint is ``hub/checkpoint.py``, the protocol's splits ``protocol_data.py`` and the files
written ``outputs.py``; this module extracts features per mode and budget and scores them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..attach import gate_config, gate_masks, gate_mode, has_gates
from ..calibration import (
    budget_key,
    calibrate_budget,
    calibrated_budgets,
    gate_offset,
    set_gate_offset,
)
from ..compute import CostTable, cost_table
from ..data import EvalDataset, ImageDataset, build_eval_transform
from ..errors import NoGatesError, check_budget
from ..files import check_output_dir, refuse_overlap
from ..hub.checkpoint import load_run
from .channel_usage import ChannelUsage, channel_usage_from_masks
from .features import extract_features
from .knn import knn_accuracy
from .linear_probe import linear_probe_repeated
from .outputs import export_calibrated, write_outputs
from .protocol_data import prepare_data
from .report import EvaluationResult, ModeEvaluation

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = ["evaluate_checkpoint"]

KNN_TEMPERATURE = 0.07
_MAX_CACHED_IMAGES = 100_000  # keep decoded images in memory up to this many (as the recipe)


# ------------------------------------------------------------------------------- extraction
@dataclass(frozen=True)
class _Pass:
    """Features of one mode on one split; for the gated mode also masks and compute."""

    features: Any  # Features
    fraction: Tensor | None = None  # (N,) float64 gated / dense MACs per sample
    masks: dict[str, Tensor] | None = None  # block -> (N, C) bool


def _extract(
    model: nn.Module,
    loader: Any,
    *,
    mode: str | None,
    table: CostTable | None,
    accelerator: Accelerator | None,
    progress: bool,
    desc: str,
) -> _Pass:
    """Features (and in gated mode masks and per-sample MAC fractions) in one forward per batch.

    Masks and fractions ride along as extra feature columns, so one ``gather_for_metrics`` keeps
    them aligned with the features and drops a distributed loader's padding for all of them.
    """
    gated = mode == "gated"
    layout: list[tuple[str, int]] = []  # (column name, width) of the mask columns
    dim: list[int] = []
    autocast = accelerator.autocast if accelerator is not None else contextlib.nullcontext

    def features_of(images: Tensor) -> Tensor:
        with autocast():
            out = model.forward_head(model.forward_features(images), pre_logits=True)
        out = out.float()
        if not gated:
            return out
        assert table is not None
        masks = gate_masks(model)
        if not layout:
            dim.append(out.shape[1])
            for block, per_width in masks.items():
                for i, mask in enumerate(per_width):
                    name = block if len(per_width) == 1 else f"{block}[{i}]"
                    layout.append((name, int(mask.shape[1])))
        columns = [out] + [m.float() for per_width in masks.values() for m in per_width]
        fraction = table.gated(masks) / table.dense
        return torch.cat([*columns, fraction.float().unsqueeze(1)], dim=1)

    gate_kwargs: dict[str, Any] = {}
    if mode is not None:
        gate_kwargs = {"mode": mode, "mode_context": gate_mode}
    bank = extract_features(
        model,
        loader,
        accelerator=accelerator,
        progress=progress,
        desc=desc,
        feature_fn=features_of,
        **gate_kwargs,
    )
    if not gated:
        return _Pass(bank)
    packed = bank.features
    features = type(bank)(features=packed[:, : dim[0]].contiguous(), labels=bank.labels)
    masks: dict[str, Tensor] = {}
    start = dim[0]
    for name, width in layout:
        masks[name] = packed[:, start : start + width] > 0.5
        start += width
    return _Pass(features, fraction=packed[:, start].double(), masks=masks)


# ------------------------------------------------------------------------------- the metrics
def _row(
    train: _Pass,
    test: _Pass,
    *,
    mode: str,
    budget: float | None,
    dense_macs: float,
    macs: float,
    num_classes: int,
    knn_k: int,
    linear_epochs: int,
    linear_seeds: Sequence[int],
    device: torch.device | None,
    calibrated: bool = False,
    calibration_mac_fraction: float | None = None,
    gate_offset: float | None = None,
) -> ModeEvaluation:
    usage: tuple[ChannelUsage, ...] | None = None
    if test.masks is not None:
        usage = tuple(channel_usage_from_masks(test.masks))
    k = min(knn_k, len(train.features))
    probe = linear_probe_repeated(
        train.features,
        test.features,
        num_classes=num_classes,
        seeds=tuple(linear_seeds),
        epochs=linear_epochs,
        device=device,
    )
    return ModeEvaluation(
        mode=mode,  # type: ignore[arg-type]
        budget=budget,
        knn_top1=knn_accuracy(
            train.features,
            test.features,
            k=k,
            temperature=KNN_TEMPERATURE,
            num_classes=num_classes,
        ),
        knn1_top1=knn_accuracy(train.features, test.features, k=1, num_classes=num_classes),
        linear_top1=probe.top1_mean,
        linear_top1_std=probe.top1_std,
        linear_runs=len(probe.runs),
        macs=macs,
        mac_fraction=macs / dense_macs,
        calibrated=calibrated,
        calibration_mac_fraction=calibration_mac_fraction,
        gate_offset=gate_offset,
        channel_usage=usage,
    )


def _check_budgets(budgets: Sequence[float]) -> list[float]:
    if isinstance(budgets, (str, bytes)) or not isinstance(budgets, Sequence):
        raise TypeError(f"budgets must be a sequence of numbers in (0, 1], got {budgets!r}")
    checked = {budget_key(b): b for b in (check_budget(v, name="each budget") for v in budgets)}
    return sorted(checked.values())


def _check_bank(images: int, *, num_classes: int, knn_k: int, max_train: int | None) -> None:
    """A probe / k-NN bank needs an image per class and ``knn_k`` neighbours to vote; fewer gives
    a valid-looking but meaningless result, so it is refused, naming the option to change."""
    need = max(num_classes, knn_k)
    if images >= need:
        return
    cause = (f"max_train={max_train} leaves" if max_train is not None else "the training split has")
    raise ValueError(
        f"{cause} {images} labelled image(s) for the probe / k-NN bank, fewer than the "
        f"{num_classes} classes or knn_k={knn_k} neighbours: pass --max_train {need} or more"
        + (" (or a smaller --knn_k)" if knn_k > num_classes else "")
    )


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
    split); and, when ``vanilla`` is given, a ``vanilla`` entry (dense mode only). An ungated
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
        The :class:`~timm_gated_ssl.eval.report.EvaluationResult` (its ``protocol`` records the
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
    budget_list = _check_budgets(budgets)
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
    loaded = load_run(checkpoint)
    model = loaded.model
    gated = has_gates(model)
    if budget_list and not gated:
        raise NoGatesError(
            f"{loaded.source} ({loaded.name}) has no gates, so budgets "
            f"{[float(b) for b in budget_list]} cannot be calibrated: evaluate a gated checkpoint "
            "(a gated_* architecture) or drop --budgets (pass an ungated run as the vanilla baseline)"
        )
    baseline = load_run(vanilla) if vanilla is not None else None

    pretrain = loaded.pretrain_config
    same_data = pretrain.get("dataset") == dataset
    data = prepare_data(
        dataset=dataset,
        train_split=train_split,
        test_split=test_split,
        calibration_split=calibration_split,
        calibration_size=calibration_size,
        need_calibration=bool(budget_list),
        image_size=image_size if image_size is not None else pretrain.get("image_size"),
        data_dir=data_dir
        if data_dir is not None
        else (pretrain.get("data_dir") if same_data else None),
        hub_id=hub_id if hub_id is not None else (pretrain.get("hub_id") if same_data else None),
        max_train=max_train,
        seed=seed,
    )
    _check_bank(len(data.train), num_classes=data.num_classes, knn_k=knn_k, max_train=max_train)
    size = data.image_size
    transform = build_eval_transform(image_size=size, mean=data.train.mean, std=data.train.std)

    def loader_of(info: ImageDataset, *, shard: bool = True, labels: bool = True) -> Any:
        rows = EvalDataset(
            info.dataset,
            transform,
            image_column=info.image_column,
            label_column=info.label_column if labels else None,
            cache_decoded=len(info) <= _MAX_CACHED_IMAGES,
        )
        loader = DataLoader(rows, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        if accelerator is not None and shard:
            return accelerator.prepare_data_loader(loader)
        return loader

    device = accelerator.device if accelerator is not None else None
    is_main = accelerator.is_main_process if accelerator is not None else True
    train_loader, test_loader = loader_of(data.train), loader_of(data.test)
    common: dict[str, Any] = {
        "num_classes": data.num_classes,
        "knn_k": knn_k,
        "linear_epochs": linear_epochs,
        "linear_seeds": tuple(linear_seeds),
        "device": device,
    }
    entries: list[ModeEvaluation] = []
    was_training = model.training
    if device is not None:
        model.to(device)
    input_size = (3, size, size)
    dense_macs = float(cost_table(model, input_size).dense)

    def run(mode: str | None, tag: str, target: nn.Module = model) -> tuple[_Pass, _Pass]:
        table = cost_table(target, input_size) if mode == "gated" else None
        kwargs = {"mode": mode, "table": table, "accelerator": accelerator, "progress": progress}
        return (
            _extract(target, train_loader, desc=f"{tag} {train_split}", **kwargs),
            _extract(target, test_loader, desc=f"{tag} {test_split}", **kwargs),
        )

    calibration_fraction: dict[float, float] = {}
    offsets: dict[float, float] = {}
    if not gated:
        train_pass, test_pass = run(None, "features")
        entries.append(
            _row(
                train_pass,
                test_pass,
                mode="vanilla",
                budget=None,
                dense_macs=dense_macs,
                macs=dense_macs,
                **common,
            )
        )
    else:
        original = gate_offset(model)
        trained_budget = gate_config(model).budget
        try:
            if budget_list:  # calibrate first: an unreachable budget fails before the long passes
                assert data.calibration is not None
                calib_loader = loader_of(data.calibration, shard=False, labels=False)
                for budget in budget_list:
                    result = calibrate_budget(
                        model, calib_loader, budget, tol=calibration_tol, record=False
                    )
                    offset = result.offset
                    if accelerator is not None and accelerator.num_processes > 1:
                        from accelerate.utils import broadcast

                        offset = float(broadcast(torch.tensor([offset], device=device))[0])
                    offsets[budget], calibration_fraction[budget] = offset, result.mac_fraction
                set_gate_offset(model, original)

            train_pass, test_pass = run("dense", "dense")
            entries.append(
                _row(
                    train_pass,
                    test_pass,
                    mode="dense",
                    budget=trained_budget,
                    dense_macs=dense_macs,
                    macs=dense_macs,
                    **common,
                )
            )
            table = calibrated_budgets(model)
            own_calibrated = abs(table.get(trained_budget, float("nan")) - original) < 1e-6
            points = [(trained_budget, original, own_calibrated, None)] + [
                (b, offsets[b], True, calibration_fraction[b]) for b in budget_list
            ]
            # Eval-mode gates are deterministic: a calibration that lands on an offset already
            # evaluated (e.g. the checkpoint's own, when training met the budget) reuses its passes.
            passes: dict[float, tuple[_Pass, _Pass]] = {}
            for budget, offset, calibrated, calib_fraction in points:
                set_gate_offset(model, offset)
                tag = f"gated t_d={budget:g}" + (" cal" if calibrated else "")
                if offset not in passes:
                    passes[offset] = run("gated", tag)
                train_pass, test_pass = passes[offset]
                assert test_pass.fraction is not None
                entries.append(
                    _row(
                        train_pass,
                        test_pass,
                        mode="gated",
                        budget=budget,
                        dense_macs=dense_macs,
                        macs=dense_macs * float(test_pass.fraction.mean()),
                        calibrated=calibrated,
                        calibration_mac_fraction=calib_fraction,
                        gate_offset=float(gate_offset(model)),
                        **common,
                    )
                )
        finally:
            set_gate_offset(model, original)
            model.train(was_training)

    if baseline is not None:
        base = baseline.model
        if device is not None:
            base.to(device)
        mode = "dense" if has_gates(base) else None
        train_pass, test_pass = run(mode, "vanilla", base)
        base_macs = float(cost_table(base, input_size).dense)
        entries.append(
            _row(
                train_pass,
                test_pass,
                mode="vanilla",
                budget=None,
                dense_macs=dense_macs,
                macs=base_macs,
                **common,
            )
        )

    protocol: dict[str, Any] = {
        "checkpoint": loaded.source,
        "vanilla": baseline.source if baseline is not None else None,
        "train_split": train_split,
        "test_split": test_split,
        "num_train": len(data.train),
        "num_test": len(data.test),
        "calibration": data.calibration_source,
        "num_calibration": len(data.calibration) if data.calibration is not None else 0,
        "calibration_tol": calibration_tol if budget_list else None,
        "image_size": size,
        "mean": list(data.train.mean),
        "std": list(data.train.std),
        "knn_k": knn_k,
        "knn_temperature": KNN_TEMPERATURE,
        "linear_epochs": linear_epochs,
        "linear_seeds": [int(s) for s in linear_seeds],
        "dense_macs": dense_macs,
        "macs_counted": "conv MACs incl. stem, downsample and gates (no linear/BN)",
        "seed": seed,
        "world_size": accelerator.num_processes if accelerator is not None else 1,
    }
    evaluation = EvaluationResult(
        model_name=model_name or loaded.name,
        dataset=dataset,
        entries=tuple(entries),
        split=test_split,
        protocol=protocol,
    )
    if output_dir is not None and is_main:
        write_outputs(evaluation, output_dir)
    if export_dir is not None and is_main:
        if not gated:
            raise NoGatesError(f"export_dir needs a gated checkpoint; {loaded.source} has no gates")
        export_calibrated(model, export_dir, offsets)
        write_outputs(evaluation, export_dir)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return evaluation
