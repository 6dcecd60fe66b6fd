"""The fine-tuning run's deliverable: a timm classifier checkpoint, every head, and the results.

``OUT/config.json`` + ``OUT/model.safetensors`` are a timm classifier (``num_classes`` set; the gate
configuration and the calibrated budgets in ``model_args``) that
``timm.create_model("local-dir:OUT", pretrained=True)`` loads after ``import timm_gated_ssl``. Its
classifier is the head of the mode it is meant to run in: the ``gated`` head for a gated checkpoint
(run it under ``timm_gated_ssl.gate_mode(model, "gated")``), the ``vanilla`` head otherwise.
``OUT/heads.safetensors`` keeps every head (dense, gated, one per calibrated budget in linear
mode); :func:`use_head` swaps one in. ``OUT/results.json`` is an
:class:`~timm_gated_ssl.eval.EvaluationResult`, so ``recipes/push_to_hub.py --checkpoint OUT``
publishes a card listing top-1 and compute per budget.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..files import TEMP_PREFIX, honour_umask
from ..recipe.outputs import export_model
from ..results import EvaluationResult, ModeEvaluation
from .heads import HeadResult

__all__ = ["HEADS_FILE", "build_results", "export_classifier", "use_head"]

HEADS_FILE = "heads.safetensors"
TOP1_NAMES = {"linear": "Linear-evaluation top-1", "full": "Fine-tuned top-1"}
"""``protocol["top1_name"]`` of the results: how the card and the table name the top-1."""


def export_classifier(
    backbone: nn.Module, heads: Mapping[str, nn.Linear], primary: str, output_dir: str | os.PathLike[str],
    *, data_config: dict[str, Any] | None = None,
) -> Path:
    """Write ``backbone`` + the ``primary`` head as a timm classifier, and every head to
    ``heads.safetensors`` (keys ``NAME.weight`` / ``NAME.bias``); ``backbone`` is left unchanged.
    ``data_config`` records the preprocessing the heads were evaluated with in ``config.json``."""
    out = Path(output_dir)
    head = heads[primary]
    model = copy.deepcopy(backbone).float().cpu()
    model.reset_classifier(head.out_features)
    classifier = model.get_classifier()
    with torch.no_grad():
        classifier.weight.copy_(head.weight.float().cpu())
        classifier.bias.copy_(head.bias.float().cpu())
    tensors = {f"{name}.{k}": v.detach().float().cpu().clone()
               for name, h in heads.items() for k, v in h.state_dict().items()}
    tmp = out / f"{TEMP_PREFIX}{HEADS_FILE}"  # removed by the next run if this one is killed
    try:
        save_file(tensors, str(tmp), metadata={"primary": primary})
        honour_umask(tmp)  # safetensors writes 0600
        os.replace(tmp, out / HEADS_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    export_model(model, out, data_config=data_config)
    return out


def use_head(model: nn.Module, checkpoint_dir: str | os.PathLike[str], name: str) -> nn.Module:
    """Load head ``name`` (e.g. ``"dense"``, ``"gated_t0.3"``) of a fine-tuning run into
    ``model``'s classifier; returns ``model``.

    Raises:
        FileNotFoundError: No ``heads.safetensors`` in ``checkpoint_dir``.
        KeyError: No head ``name`` (the message lists the heads).
    """
    path = Path(checkpoint_dir) / HEADS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {HEADS_FILE} in {checkpoint_dir}: not a recipes/finetune.py output")
    tensors = load_file(str(path))
    names = sorted({k.rsplit(".", 1)[0] for k in tensors})
    key = name.replace(".", "p")
    if key not in names:
        raise KeyError(f"no head {name!r} in {path}; heads: {', '.join(names)}")
    classifier = model.get_classifier()
    with torch.no_grad():
        classifier.weight.copy_(tensors[f"{key}.weight"])
        classifier.bias.copy_(tensors[f"{key}.bias"])
    return model


def build_results(
    runs: Sequence[Sequence[HeadResult]], *, mode: str, model_name: str, dataset: str, split: str,
    protocol: Mapping[str, Any],
) -> EvaluationResult:
    """One entry per head, its top-1 the mean (and std) over ``runs`` (one list per seed).

    The top-1 goes to the ``linear_top1`` field of the schema; ``protocol["top1_name"]`` names what
    it measures (the augmented linear evaluation, or full fine-tuning), and the model card and the
    Markdown table use that name.
    """
    import statistics

    entries = []
    for i, first in enumerate(runs[0]):
        tops = [run[i].top1 for run in runs]
        spec = first.spec
        entries.append(ModeEvaluation(
            mode=spec.mode if spec.mode in ("dense", "gated", "vanilla") else "vanilla",  # type: ignore[arg-type]
            budget=spec.budget,
            linear_top1=statistics.fmean(tops),
            linear_top1_std=statistics.stdev(tops) if len(tops) > 1 else 0.0,
            linear_runs=len(tops),
            macs=statistics.fmean(run[i].macs for run in runs),
            mac_fraction=statistics.fmean(run[i].mac_fraction for run in runs),
            calibrated=spec.calibrated,
            gate_offset=spec.offset,
        ))
    return EvaluationResult(model_name=model_name, dataset=dataset, entries=tuple(entries), split=split,
                            protocol={"top1_name": TOP1_NAMES[mode], **protocol})
