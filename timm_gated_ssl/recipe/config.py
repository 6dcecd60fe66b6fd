"""The pretraining recipe's hyperparameters, in one typed place.

A run is configured by a YAML file (``recipes/configs/*.yaml``) whose keys are the fields of
:class:`PretrainConfig`, overridden on the command line by ``--key value``. Unknown keys, wrong types
and out-of-range values fail before anything is built, with a message that lists the valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from ..budget import BOUND_CENTRES, BOUND_SCHEDULES
from ..errors import check_budget
from ..ssl import DISTILL_TARGETS, SSL_LOSSES
from .dual import NOISE_SCHEDULES, PAIRINGS

OPTIMIZERS = ("lars", "sgd", "adamw")


@dataclasses.dataclass
class PretrainConfig:
    """Hyperparameters of one co-training run (defaults: the paper's CIFAR recipe, METHOD.md,
    except ``gate_noise_schedule``, set to what closed the gated-dense gap most on Fashion-MNIST;
    docs/results.md).

    Model:
        model: timm architecture. ``gated_*`` for dual training; a plain one (``resnet18_cifar``)
            with ``gating: false`` trains the vanilla baseline with the identical recipe.
        model_kwargs: Extra ``timm.create_model`` keyword arguments (e.g. ``cifar_stem_padding``).
        gating: Train the dense and gated modes together (False: vanilla SSL, dense only).
        budget: Target ``t_d``: the gated fraction of dense MACs, in (0, 1].
        separate_bn: One set of block norms per mode.
    Method:
        method: SSL method: vicreg, simsiam, simclr or byol.
        projector_hidden_dim / projector_out_dim: Projector widths (None: the method's default).
        budget_weight: ``lambda`` of the compute loss; bound_weight: ``gamma``.
        bound_schedule: ``progress`` (default): ``p = exp(-bound_decay * step / total_steps)``;
            ``epoch``: the paper's literal ``p = exp(-bound_alpha * epoch)``. Equal for a 500-epoch
            run with the defaults (10 = 0.02 x 500); only ``progress`` fully relaxes a short run.
        bound_centre: Where the density bounds start: ``sqrt`` (paper, ``sqrt(t_d)``) or
            ``linear`` (``t_d``, the density at which channel gates cost ``t_d``; it helped alone
            in the Fashion-MNIST pilots but not on top of the noise annealing, docs/results.md).
        pairing: ``asymmetric`` (paper: gated(v1)-dense(v2)), ``symmetric`` (both gated-dense
            pairs) or ``anchored`` (the paper's pair plus the vanilla dense(v1)-dense(v2) pair;
            measured: dense within 0.4 of vanilla, gated unchanged, docs/results.md).
        distill_weight: In-place distillation of the gated pass towards the detached dense
            features of the same view (Yu & Huang, ICCV 2019); 0 = off (paper).
        distill_on: ``features`` (backbone) or ``embeddings`` (projector) for the distillation.
        gate_noise_schedule: ``cosine`` (default: the gates' training noise annealed from 1 to 0,
            measured to close part of the gated-dense gap, docs/results.md) or ``constant``
            (paper).
        dense_warmup_epochs: Dense-only epochs before the gates train (paper's ablation; 0).
        byol_momentum: Base momentum of BYOL's target network (cosine to 1).
        simclr_temperature: NT-Xent temperature.
    Data:
        dataset: A preset (digits, cifar10, cifar100, stl10, imagenet100, fashion_mnist), a local
            image folder, or a Hugging Face Hub dataset id.
        data_dir / hub_id: Where a preset's data lives, when not at its default Hub id (e.g. a
            local ImageNet-100 image folder).
        train_split / eval_train_split / eval_split: Splits for pretraining and the k-NN monitor.
        image_size: Crop size (None: the dataset preset's).
        blur_prob_gated / blur_prob_dense: Gaussian-blur probability of each view.
        train_subset: Use only the first N training images (None: all).
        num_workers: DataLoader workers (0 keeps augmentation in the main process and makes
            resumed runs bit-exact).
        augmentation: ``batched`` (default: each batch's two views are augmented at once on
            tensors, with random parameters drawn per image from a generator seeded by the image's
            index and the epoch) or ``per_image`` (the torchvision v2 pipeline image by image).
    Optimisation:
        epochs, batch_size (per process), lr (for a total batch of 256; scaled linearly),
        weight_decay, momentum, optimizer (lars, sgd, adamw), lars_trust (eta), warmup_epochs,
        min_lr, max_steps (stop early, for smoke tests; the schedule still spans ``epochs``),
        grad_accum_steps.
    Monitoring and checkpoints:
        log_every (steps), knn_every / save_every (epochs, 0 = never), knn_k, knn_temperature,
        knn_max_bank (k-NN bank images), seed.
    """

    model: str = "gated_resnet18_cifar"
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    gating: bool = True
    budget: float = 0.5
    separate_bn: bool = True

    method: str = "vicreg"
    projector_hidden_dim: int | None = None
    projector_out_dim: int | None = None
    budget_weight: float = 5.0
    bound_weight: float = 1.0
    bound_schedule: str = "progress"
    bound_decay: float = 10.0
    bound_alpha: float = 0.02
    bound_centre: str = "sqrt"
    pairing: str = "asymmetric"
    distill_weight: float = 0.0
    distill_on: str = "features"
    gate_noise_schedule: str = "cosine"
    dense_warmup_epochs: float = 0.0
    byol_momentum: float = 0.996
    simclr_temperature: float = 0.2

    dataset: str = "digits"
    data_dir: str | None = None
    hub_id: str | None = None
    train_split: str = "train"
    eval_train_split: str | None = "train"
    eval_split: str | None = "test"
    image_size: int | None = None
    blur_prob_gated: float = 0.0
    blur_prob_dense: float = 0.0
    train_subset: int | None = None
    num_workers: int = 0
    augmentation: str = "batched"

    epochs: int = 500
    batch_size: int = 256
    lr: float = 0.3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    optimizer: str = "lars"
    lars_trust: float = 0.02
    warmup_epochs: float = 10.0
    min_lr: float = 0.0
    max_steps: int | None = None
    grad_accum_steps: int = 1

    log_every: int = 10
    knn_every: int = 0
    save_every: int = 0
    knn_k: int = 20
    knn_temperature: float = 0.07
    knn_max_bank: int | None = 10000
    seed: int = 0

    def __post_init__(self) -> None:
        _validate().check_fields(self)  # every field's range, finite floats
        self.budget = check_budget(self.budget)
        if self.method not in SSL_LOSSES:
            raise ValueError(f"unknown method {self.method!r}; valid methods: {', '.join(SSL_LOSSES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        for name, valid in (("bound_schedule", BOUND_SCHEDULES), ("bound_centre", BOUND_CENTRES),
                            ("pairing", PAIRINGS), ("distill_on", DISTILL_TARGETS),
                            ("gate_noise_schedule", NOISE_SCHEDULES)):
            if getattr(self, name) not in valid:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; valid: {', '.join(valid)}")
        for name in ("bound_decay", "bound_alpha", "distill_weight", "dense_warmup_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "grad_accum_steps", "log_every", "knn_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("knn_every", "save_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("blur_prob_gated", "blur_prob_dense"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ValueError("lr must be > 0, weight_decay and warmup_epochs >= 0; got "
                             f"lr={self.lr}, weight_decay={self.weight_decay}, warmup_epochs={self.warmup_epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or null, got {self.max_steps!r}")

    # ------------------------------------------------------------------------------ loading
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PretrainConfig:
        """Build from a dict, rejecting unknown keys (the message lists the valid ones)."""
        unknown = sorted(set(values) - set(cls.field_names()), key=str)
        if unknown:
            close = {k: difflib.get_close_matches(str(k), cls.field_names(), n=1) for k in unknown}
            hints = [f"{k!r} (did you mean {c[0]!r}?)" if c else repr(k) for k, c in close.items()]
            raise _error(f"unknown config key(s) {', '.join(hints)}; valid keys: {', '.join(cls.field_names())}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _coerce(k, v, hints[k]) for k, v in values.items()})

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] | None = None) -> PretrainConfig:
        """Read a YAML config and apply ``["--key", "value", ...]`` overrides."""
        values: dict[str, Any] = {}
        if path is not None:
            values.update(_validate().read_yaml(path))  # errors name the file, line and column
        values.update(parse_overrides(overrides or []))
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        from ..files import atomic_write_text  # umask permissions, never half-written

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    def model_args(self) -> dict[str, Any]:
        """``timm.create_model`` keyword arguments of the backbone (recorded in ``config.json``)."""
        args = dict(self.model_kwargs, num_classes=0)
        if self.gating:
            args.update(budget=self.budget, separate_bn=self.separate_bn)
        return args


def parse_overrides(tokens: list[str]) -> dict[str, Any]:
    """``["--lr", "0.1", "--gating", "false"]`` -> ``{"lr": 0.1, "gating": False}`` (YAML scalars)."""
    values: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            raise _error(f"expected --key value, got {token!r}")
        key = token[2:].replace("-", "_")
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise _error(f"--{key} needs a value")
            raw, i = tokens[i + 1], i + 2
        values[key] = _validate().parse_value(key, raw)
    return values


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check a value against its field's type; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    options = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        base = typing.get_origin(option) or option
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base in (str, bool, dict) and isinstance(value, base):
            return value
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise _error(f"config key {name!r} must be {expected}, got {json.dumps(value, default=str)}")


def _validate() -> types.ModuleType:
    """:mod:`.validate`, where the checks live (imported on use: it is the config's companion)."""
    from . import validate

    return validate


def _error(message: str) -> Exception:
    """The :class:`~timm_gated_ssl.errors.ConfigError` to raise (a ``ValueError``)."""
    from ..errors import ConfigError

    return ConfigError(message)
