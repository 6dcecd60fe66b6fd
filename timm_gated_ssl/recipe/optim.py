"""The training recipes' optimizer and learning-rate schedule: timm's, over the gates' parameter
groups (one place for both recipes and the benchmarks that must train exactly as they do)."""

from __future__ import annotations

from typing import Protocol

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import nn

from ..budget import gated_param_groups

__all__ = ["build_optimizer", "build_scheduler"]


class OptimizerConfig(Protocol):
    """The config fields the optimizer reads (``PretrainConfig``, ``FinetuneConfig``)."""

    optimizer: str
    weight_decay: float
    momentum: float


def build_optimizer(model: nn.Module, config: OptimizerConfig, *, lr: float) -> torch.optim.Optimizer:
    """``config.optimizer`` from timm (``lars`` is timm's ``larc``, with trust ``config.lars_trust``
    where the config has one) at learning rate ``lr`` (the caller scales ``config.lr`` by the global
    batch), with the gates' parameter groups (:func:`~timm_gated_ssl.budget.gated_param_groups`:
    no weight decay on gates, biases and norms; the gates at ``config.gate_lr_scale`` times the
    rate where the config has that field, applied by :func:`build_scheduler`'s timm scheduler)."""
    groups = gated_param_groups(model, weight_decay=config.weight_decay,
                                gate_lr_scale=getattr(config, "gate_lr_scale", 1.0))
    opt_name = "larc" if config.optimizer == "lars" else config.optimizer
    if opt_name == "sgd" and config.momentum == 0:
        # timm's "sgd" is Nesterov SGD, which torch refuses without momentum; plain SGD is the same update.
        opt_name = "momentum"
    trust = getattr(config, "lars_trust", None)
    opt_kwargs = {"trust_coeff": trust} if config.optimizer == "lars" and trust is not None else {}
    return create_optimizer_v2(groups, opt=opt_name, lr=lr, weight_decay=config.weight_decay,
                               momentum=config.momentum, **opt_kwargs)


def build_scheduler(optimizer: torch.optim.Optimizer, *, total_updates: int, warmup_updates: int,
                    min_lr: float) -> CosineLRScheduler:
    """Per-update schedule of both recipes: timm's cosine with a linear warm-up prefix.

    Update ``s`` (0-based, ``s = 0 .. total_updates - 1``) runs at ``lr * s / warmup_updates``
    during the warm-up (0 at ``s = 0``), at the peak ``lr`` on update ``warmup_updates``, then on
    a half cosine that reaches ``min_lr`` exactly on the last update, ``total_updates - 1``. The
    optimizer starts at update 0's rate; after update ``s`` the recipes call
    ``scheduler.step_update(s + 1)``. A run too short for a cosine after its warm-up
    (``total_updates <= warmup_updates + 1``) ends at the peak; the recipes' configs refuse
    ``warmup_epochs >= epochs``.

    Until v0.1 the cosine spanned ``total_updates`` *after* the warm-up, so runs stopped short of
    ``min_lr`` (at 9.8 % of the peak for 5 epochs with one warm-up epoch); docs/training.md.
    """
    if total_updates < 1 or not 0 <= warmup_updates < total_updates:
        raise ValueError(f"need 0 <= warmup_updates < total_updates, got warmup_updates={warmup_updates}, "
                         f"total_updates={total_updates}")
    return CosineLRScheduler(
        optimizer, t_initial=max(total_updates - 1 - warmup_updates, 1), lr_min=min_lr,
        warmup_t=warmup_updates, warmup_lr_init=0.0, warmup_prefix=True, t_in_epochs=False,
    )
