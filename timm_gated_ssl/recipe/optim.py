"""The pretraining optimizer: timm's, over the gates' parameter groups (one place for the recipe
and the benchmarks that must train exactly as it does)."""

from __future__ import annotations

import torch
from timm.optim import create_optimizer_v2
from torch import nn

from ..budget import gated_param_groups
from .config import PretrainConfig

__all__ = ["build_optimizer"]


def build_optimizer(model: nn.Module, config: PretrainConfig, *, lr: float) -> torch.optim.Optimizer:
    """``config.optimizer`` from timm (``lars`` is timm's ``larc`` with trust ``config.lars_trust``)
    at learning rate ``lr`` (the caller scales ``config.lr`` by the global batch), with the gates'
    parameter groups (:func:`~timm_gated_ssl.budget.gated_param_groups`)."""
    groups = gated_param_groups(model, weight_decay=config.weight_decay)
    opt_name = "larc" if config.optimizer == "lars" else config.optimizer
    opt_kwargs = {"trust_coeff": config.lars_trust} if config.optimizer == "lars" else {}
    return create_optimizer_v2(groups, opt=opt_name, lr=lr, weight_decay=config.weight_decay,
                               momentum=config.momentum, **opt_kwargs)
