"""The fine-tuning recipe's hyperparameters, in one typed place (``recipes/finetune.py``).

Like :class:`~timm_gated_ssl.recipe.PretrainConfig`, a :class:`~timm_gated_ssl.recipe.config_base.RecipeConfig`:
a YAML file (``recipes/configs/finetune_*.yaml``) whose keys are the fields of
:class:`FinetuneConfig`, overridden on the command line by ``--key value``; malformed YAML,
duplicated or unknown keys, wrong types and out-of-range values fail before anything is built.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from ..errors import ConfigError, check_budget
from ..recipe.config_base import Range, RecipeConfig, above, at_least, check_schedule
from ..recipe.dual import NOISE_SCHEDULES

__all__ = ["MODES", "OPTIMIZERS", "FinetuneConfig"]

MODES = ("linear", "full")
OPTIMIZERS = ("sgd", "momentum", "adamw", "lars")


@dataclasses.dataclass
class FinetuneConfig(RecipeConfig):
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
        augment: RandomResizedCrop(scale ``crop_scale_min``-1) + horizontal flip (``hflip``) on
            the training images; False trains on the deterministic evaluation transform. The
            defaults are the SSL literature's for natural photos; tiny or oriented images (8x8
            digits) want milder crops and no flip (``finetune_quickstart.yaml``).
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
        gate_noise_schedule: The gates' training noise in ``full`` mode: ``cosine`` (default,
            as in pretraining: annealed from 1 to 0, so the last steps train the deterministic
            masks the test split runs) or ``constant`` (the paper's scale 1 throughout).
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
    hflip: bool = True

    budget: float | None = None
    budgets: list[float] = dataclasses.field(default_factory=list)
    calibration_size: int | None = None
    calibration_tol: float = 0.01
    budget_weight: float = 5.0
    bound_weight: float = 0.0
    bound_alpha: float = 0.02
    gate_noise_schedule: str = "cosine"

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

    RANGES: ClassVar[dict[str, Range]] = {
        "epochs": at_least(1), "batch_size": at_least(1), "log_every": at_least(1),
        "save_every": at_least(0), "num_workers": at_least(0), "num_classes": at_least(2),
        "train_subset": at_least(1), "calibration_size": at_least(1), "max_steps": at_least(1),
        "image_size": at_least(1), "crop_scale_min": (0, False, 1, True),
        "calibration_tol": (0, False, 1, False), "label_smoothing": (0, True, 1, False),
        "lr": above(0), "weight_decay": at_least(0), "warmup_epochs": at_least(0), "min_lr": at_least(0),
        "momentum": (0, True, 1, False), "budget_weight": at_least(0), "bound_weight": at_least(0),
        "bound_alpha": at_least(0), "seeds": (0, True, 2**32 - 1, True),
    }
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"mode": MODES, "optimizer": OPTIMIZERS,
                                                     "gate_noise_schedule": NOISE_SCHEDULES}
    NON_EMPTY: ClassVar[tuple[str, ...]] = (
        "checkpoint", "dataset", "data_dir", "hub_id", "train_split", "test_split",
    )
    RESUMABLE: ClassVar[frozenset[str]] = frozenset({"max_steps", "log_every", "save_every", "num_workers",
                                                     "data_dir"})
    """Fields a resume may change: when to stop, logging, saving, workers and where the data lives."""

    def check(self) -> None:
        """Budgets, seeds and the checks that involve two fields."""
        if self.budget is not None:
            self.budget = check_budget(self.budget, name="budget")
        self.budgets = [check_budget(b, name="each of budgets") for b in self.budgets]
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be one or more distinct integers, got {self.seeds!r}")
        check_schedule(epochs=self.epochs, warmup_epochs=self.warmup_epochs, lr=self.lr, min_lr=self.min_lr)
        if self.mode == "linear" and self.budget is not None:
            raise ConfigError(f"budget={self.budget:g} is the target of mode full; in mode linear the "
                              "heads read the checkpoint's threshold, plus any calibrated budgets: "
                              "use budgets instead")
        if self.mode == "full" and len(self.seeds) != 1:
            raise ConfigError(f"mode full trains one model: give one seed, got seeds={self.seeds!r}")

    def check_inputs(self) -> None:
        """The fields a run cannot start without (``--checkpoint``, ``--dataset``)."""
        for name in ("checkpoint", "dataset"):
            if not getattr(self, name):
                raise ConfigError(f"--{name} is required (on the command line or in the config)")
