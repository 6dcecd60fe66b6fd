"""The pretraining recipe's hyperparameters, in one typed place.

A run is configured by a YAML file (``recipes/configs/*.yaml``) whose keys are the fields of
:class:`PretrainConfig`, overridden on the command line by ``--key value``. Unknown keys, wrong types
and out-of-range values fail before anything is built, with a message that lists the valid choices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from ..budget import BOUND_CENTRES, BOUND_SCHEDULES
from ..errors import ConfigError, check_budget
from ..ssl import DISTILL_TARGETS, SSL_LOSSES
from .config_base import Range, RecipeConfig, above, at_least, check_schedule, parse_overrides
from .dual import NOISE_SCHEDULES, PAIRINGS

__all__ = ["AUGMENTATIONS", "OPTIMIZERS", "PretrainConfig", "parse_overrides"]

OPTIMIZERS = ("lars", "sgd", "adamw")
AUGMENTATIONS = ("batched", "per_image")
"""Values of ``PretrainConfig.augmentation`` (see :mod:`timm_gated_ssl.data.batched_views`)."""
# Set as their own fields: a model_kwargs entry would be silently overridden by model_args().
_RESERVED_KWARGS = ("num_classes", "budget", "separate_bn")


@dataclasses.dataclass
class PretrainConfig(RecipeConfig):
    """Hyperparameters of one co-training run (defaults: the paper's CIFAR recipe (Krishna et al., BMVC 2023),
    except ``gate_noise_schedule``, set to what closed the gated-dense gap most on Fashion-MNIST;
    docs/results.md).

    Model:
        model: timm architecture. ``gated_*`` for dual training; a plain one (``resnet18_cifar``)
            with ``gating: false`` trains the vanilla baseline with the identical recipe.
        model_kwargs: Extra ``timm.create_model`` keyword arguments (e.g. ``cifar_stem_padding``).
        init_from: Start from these weights instead of a random init (``recipe/init.py``): a timm
            pretrained tag (``resnet18.a1_in1k``), ``hf-hub:ORG/NAME``, ``local-dir:DIR``, one of
            this library's checkpoint folders, or a weights file of ``model``'s architecture. The
            weights go into the dense path; gated norms start as their copies, gates fresh.
        gating: Train the dense and gated modes together (False: vanilla SSL, dense only).
        freeze_dense: Post-hoc gating with the dense mode frozen as the teacher (needs
            ``init_from``): only the gates, the gated-mode norm copies and the SSL heads train, so
            the dense mode stays the init bit for bit (``recipe/freeze.py``, docs/posthoc.md).
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
        ssl_weight: Weight of the SSL term (1: the paper). 0 drops it and its heads: the gated
            mode then learns from ``distill_weight``'s distillation of the dense features of the
            same view and the budget terms alone, the post-hoc recipe of a frozen teacher
            (``recipes/configs/posthoc_*.yaml``, docs/posthoc.md); it needs ``gating``,
            ``distill_weight > 0`` on ``features``, ``pairing: asymmetric`` and no dense warm-up.
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
        weight_decay, momentum, optimizer (lars, sgd, adamw), lars_trust (eta), gate_lr_scale
        (the gates' learning rate as a multiple of ``lr``; ``budget.gated_param_groups``), warmup_epochs,
        min_lr, max_steps (stop early, for smoke tests; the schedule still spans ``epochs``),
        grad_accum_steps.
    Monitoring and checkpoints:
        log_every (steps), knn_every / save_every (epochs, 0 = never), knn_k, knn_temperature,
        knn_max_bank (k-NN bank images), seed.
    End of training (gated runs; ``recipe/budget_check.py``):
        budget_tolerance: When the deterministic gates end further than this from ``budget`` (on
            un-augmented training images), the recipe says so and calibrates the threshold to
            ``budget`` before exporting (default 0.05; null: measure and keep the trained one).
        budget_check_images: Training images of that check (and calibration).
    """

    model: str = "gated_resnet18_cifar"
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    init_from: str | None = None
    gating: bool = True
    freeze_dense: bool = False
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
    ssl_weight: float = 1.0
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
    gate_lr_scale: float = 1.0
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
    budget_tolerance: float | None = 0.05
    budget_check_images: int = 1024

    RANGES: ClassVar[dict[str, Range]] = {
        "projector_hidden_dim": at_least(1), "projector_out_dim": at_least(1),
        "budget_weight": at_least(0), "bound_weight": at_least(0), "bound_decay": at_least(0),
        "bound_alpha": at_least(0), "distill_weight": at_least(0), "ssl_weight": at_least(0),
        "dense_warmup_epochs": at_least(0),
        "byol_momentum": (0, True, 1, False), "simclr_temperature": above(0),
        "image_size": at_least(1), "blur_prob_gated": (0, True, 1, True), "blur_prob_dense": (0, True, 1, True),
        "train_subset": at_least(1), "num_workers": at_least(0), "epochs": at_least(1),
        # BatchNorm in training mode and every SSL loss here need two images per process.
        "batch_size": at_least(2), "lr": above(0), "weight_decay": at_least(0),
        "momentum": (0, True, 1, False), "lars_trust": above(0), "gate_lr_scale": above(0),
        "warmup_epochs": at_least(0),
        "min_lr": at_least(0), "max_steps": at_least(1), "grad_accum_steps": at_least(1),
        "log_every": at_least(1), "knn_every": at_least(0), "save_every": at_least(0),
        "knn_k": at_least(1), "knn_temperature": above(0), "knn_max_bank": at_least(1),
        "seed": (0, True, 2**32 - 1, True),
        "budget_tolerance": (0, True, 1, False), "budget_check_images": at_least(1),  # numpy's seed range (accelerate.set_seed seeds numpy)
    }
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "optimizer": OPTIMIZERS, "bound_schedule": BOUND_SCHEDULES, "bound_centre": BOUND_CENTRES,
        "pairing": PAIRINGS, "distill_on": DISTILL_TARGETS, "gate_noise_schedule": NOISE_SCHEDULES,
        "augmentation": AUGMENTATIONS,
    }
    NON_EMPTY: ClassVar[tuple[str, ...]] = (
        "model", "init_from", "dataset", "train_split", "eval_train_split", "eval_split", "data_dir", "hub_id",
    )
    RESUMABLE: ClassVar[frozenset[str]] = frozenset({
        "max_steps", "log_every", "knn_every", "save_every", "num_workers", "knn_k", "knn_temperature",
        "knn_max_bank", "eval_train_split", "eval_split", "data_dir", "budget_tolerance",
        "budget_check_images",
    })
    """Fields a resume may change: they steer when to stop, monitoring, logging and where the data
    lives, not what is trained (augmentations are seeded per image, so workers do not matter)."""

    def check(self) -> None:
        """The budget, the method and the checks that involve two fields."""
        self.budget = check_budget(self.budget)
        if self.method not in SSL_LOSSES:
            raise ConfigError(f"unknown method {self.method!r}; valid methods: {', '.join(SSL_LOSSES)}")
        check_schedule(epochs=self.epochs, warmup_epochs=self.warmup_epochs, lr=self.lr, min_lr=self.min_lr)
        if self.freeze_dense:
            self._check_freeze_dense()
        if self.ssl_weight == 0:
            self._check_distill_only()
        self._refuse_unless("gate_lr_scale scales the gates' learning rate: a vanilla run (gating: false) "
                            "has no gates, so leave it at 1",
                            gate_lr_scale=self.gating is not True and self.gate_lr_scale != 1)
        if (self.eval_split is None) != (self.eval_train_split is None):
            raise ConfigError(
                f"eval_split ({self.eval_split!r}) and eval_train_split ({self.eval_train_split!r}) "
                "are the k-NN monitor's query and bank splits: set both, or both to null to train "
                "without the monitor"
            )
        if self.knn_every and self.eval_split is None:
            raise ConfigError(f"knn_every={self.knn_every} needs the k-NN monitor's splits: set "
                              "eval_split and eval_train_split, or knn_every: 0")
        if self.hub_id is not None and self.hub_id.count("/") != 1:
            raise ConfigError(f"hub_id must be a Hub dataset id 'owner/name', got {self.hub_id!r}")
        bad_keys = [k for k in self.model_kwargs if not isinstance(k, str)]
        if bad_keys:
            raise ConfigError(f"model_kwargs keys must be argument names (strings), got {bad_keys!r}")
        reserved = [k for k in _RESERVED_KWARGS if k in self.model_kwargs]
        if reserved:
            raise ConfigError(
                f"model_kwargs may not set {', '.join(reserved)}: the recipe sets them (num_classes=0 "
                "for pooled features; budget and separate_bn are config fields of their own)"
            )

    def _check_freeze_dense(self) -> None:
        self._refuse_unless(
            "freeze_dense: true keeps the dense mode of a trained encoder and trains only the gated mode: it "
            "needs gating: true and init_from (the encoder)",
            gating=self.gating is not True, init_from=self.init_from is None)

    def _check_distill_only(self) -> None:
        self._refuse_unless(
            "ssl_weight: 0 trains the gated mode by distilling the dense features alone: it needs gating: true, "
            "distill_weight > 0, distill_on: features, pairing: asymmetric and dense_warmup_epochs: 0",
            gating=self.gating is not True, distill_weight=self.distill_weight == 0,
            distill_on=self.distill_on != "features", pairing=self.pairing != "asymmetric",
            dense_warmup_epochs=self.dense_warmup_epochs > 0)

    def _refuse_unless(self, requirement: str, **wrong: bool) -> None:
        """Raise ``requirement`` naming the values of the fields whose ``wrong`` flag is set."""
        bad = [k for k, v in wrong.items() if v]
        if bad:
            raise ConfigError(requirement + "; got " + ", ".join(f"{k}={getattr(self, k)!r}" for k in bad))

    def model_args(self) -> dict[str, Any]:
        """``timm.create_model`` keyword arguments of the backbone (recorded in ``config.json``)."""
        args = dict(self.model_kwargs, num_classes=0)
        if self.gating:
            args.update(budget=self.budget, separate_bn=self.separate_bn)
        return args
