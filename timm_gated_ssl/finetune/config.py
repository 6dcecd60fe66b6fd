"""The fine-tuning recipe's hyperparameters, in one typed place (``recipes/finetune.py``).

Like :class:`~timm_gated_ssl.recipe.PretrainConfig`: a YAML file (``recipes/configs/finetune_*.yaml``)
whose keys are the fields of :class:`FinetuneConfig`, overridden on the command line by
``--key value``; unknown keys, wrong types and out-of-range values fail before anything is built.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import yaml

from ..errors import check_budget
from ..recipe.config import _coerce, parse_overrides

MODES = ("linear", "full")
OPTIMIZERS = ("sgd", "momentum", "adamw", "lars")


@dataclasses.dataclass
class FinetuneConfig:
    """Hyperparameters of one fine-tuning run (defaults: the paper's linear evaluation).

    Input:
        mode: ``linear``: the paper's linear evaluation (frozen backbone in eval mode, one fresh
            linear head per mode and budget, augmented crops); ``full``: backbone and heads
            trained with cross-entropy in both modes plus the budget losses, then re-calibrated.
        checkpoint: A pretraining output folder (``config.json`` + ``model.safetensors``) or
            ``hf-hub:ORG/NAME``.
        dataset / data_dir / hub_id: Labelled data (a preset, an image folder or a Hub dataset).
        train_split / test_split: The labelled splits trained on and reported on.
        image_size: Crop size (None: the checkpoint's ``config.yaml``, else the preset's).
        num_classes: Expected number of classes (None: the dataset's; a mismatch is an error).
        train_subset: Use a seeded random subset of N training images (None: all).
        augment: RandomResizedCrop(scale ``crop_scale_min``-1) + horizontal flip on the training
            images; False trains on the deterministic evaluation transform.
    Budgets:
        budget: Gated-mode target of ``full`` mode (None: the checkpoint's ``t_d``).
        budgets: Further budgets to calibrate: ``linear`` trains one head per budget, ``full``
            records them in the exported calibration table.
        calibration_size / calibration_tol: Held-out training images for calibration (None:
            ``min(2048, N // 10)``) and the accepted error of the calibrated MAC fraction.
        budget_weight / bound_weight / bound_alpha: ``lambda``, ``gamma``, ``alpha`` of the budget
            losses in ``full`` mode. The bound loss is off by default: it pins every block near
            ``sqrt(t_d)`` at epoch 0, a device for training gates from scratch that would undo the
            pretrained per-block allocation.
    Optimisation:
        epochs, batch_size (per process), lr (for a total batch of 256; scaled linearly),
        weight_decay, momentum, optimizer (sgd = Nesterov SGD as timm's, momentum, adamw, lars),
        warmup_epochs, min_lr, label_smoothing, max_steps (stop early, for smoke tests).
        seeds: ``linear``: one run of every head per seed, top-1 reported as mean and std;
            ``full``: exactly one seed.
    Run:
        log_every (steps), save_every (epochs, 0 = only at the end), num_workers.
    """

    mode: str = "linear"
    checkpoint: str | None = None
    dataset: str | None = None
    data_dir: str | None = None
    hub_id: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    image_size: int | None = None
    num_classes: int | None = None
    train_subset: int | None = None
    augment: bool = True
    crop_scale_min: float = 0.08

    budget: float | None = None
    budgets: list[float] = dataclasses.field(default_factory=list)
    calibration_size: int | None = None
    calibration_tol: float = 0.01
    budget_weight: float = 5.0
    bound_weight: float = 0.0
    bound_alpha: float = 0.02

    epochs: int = 100
    batch_size: int = 256
    lr: float = 0.1
    weight_decay: float = 0.0
    momentum: float = 0.9
    optimizer: str = "sgd"
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    max_steps: int | None = None
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])

    log_every: int = 10
    save_every: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; valid modes: {', '.join(MODES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.budget is not None:
            self.budget = check_budget(self.budget, name="budget")
        self.budgets = [check_budget(b, name="each of budgets") for b in self.budgets]
        for name in ("epochs", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("save_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("num_classes", "train_subset", "calibration_size", "max_steps", "image_size"):
            value = getattr(self, name)
            if value is not None and value < (2 if name == "num_classes" else 1):
                low = 2 if name == "num_classes" else 1
                raise ValueError(f"{name} must be >= {low} or null, got {value!r}")
        if not 0.0 < self.crop_scale_min <= 1.0:
            raise ValueError(f"crop_scale_min must be in (0, 1], got {self.crop_scale_min!r}")
        if not 0.0 < self.calibration_tol < 1.0:
            raise ValueError(f"calibration_tol must be in (0, 1), got {self.calibration_tol!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_epochs < 0 or self.min_lr < 0:
            raise ValueError("lr must be > 0, weight_decay, warmup_epochs and min_lr >= 0; got "
                             f"lr={self.lr}, weight_decay={self.weight_decay}, "
                             f"warmup_epochs={self.warmup_epochs}, min_lr={self.min_lr}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be one or more distinct integers, got {self.seeds!r}")
        if self.mode == "linear" and self.budget is not None:
            raise ValueError(f"budget={self.budget:g} is the target of mode full; in mode linear the "
                             "heads read the checkpoint's threshold, plus any calibrated budgets: "
                             "use budgets instead")
        if self.mode == "full" and len(self.seeds) != 1:
            raise ValueError(f"mode full trains one model: give one seed, got seeds={self.seeds!r}")

    def check_inputs(self) -> None:
        """The fields a run cannot start without (``--checkpoint``, ``--dataset``)."""
        for name in ("checkpoint", "dataset"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required (on the command line or in the config)")

    # ------------------------------------------------------------------------------ loading
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FinetuneConfig:
        """Build from a dict, rejecting unknown keys (the message lists the valid ones)."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid keys: {', '.join(cls.field_names())}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _coerce_field(k, v, hints[k]) for k, v in values.items()})

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] | None = None) -> FinetuneConfig:
        """Read a YAML config and apply ``["--key", "value", ...]`` overrides."""
        values: dict[str, Any] = {}
        if path is not None:
            if not Path(path).is_file():
                raise FileNotFoundError(f"config file {path} does not exist")
            loaded = yaml.safe_load(Path(path).read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{path}: a config must be a mapping of keys to values")
            values.update(loaded)
        values.update(parse_overrides(overrides or []))
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _coerce_field(name: str, value: Any, hint: Any) -> Any:
    """``_coerce`` of the pretraining config, plus lists of numbers (``budgets``, ``seeds``) and
    exponent-only floats such as ``5e-4`` (a string to YAML 1.1)."""
    if isinstance(value, str) and float in typing.get_args(hint) + (hint,):
        try:
            value = float(value)
        except ValueError:
            pass
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) or (
            item is int and not all(isinstance(v, int) for v in values)
        ):
            raise ValueError(f"config key {name!r} must be a list of {item.__name__}, "
                             f"got {json.dumps(value, default=str)}")
        return [item(v) for v in values]
    return _coerce(name, value, hint)
