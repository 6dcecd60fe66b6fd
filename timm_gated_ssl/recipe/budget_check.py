"""The budget at the end of pretraining: measured on un-augmented training images, and calibrated
into the checkpoint when training alone missed it (issue "Defaults v0.2", item 2).

The budget loss steers the *stochastic, train-mode* gates; the checkpoint runs deterministic
gates with BN running statistics, on the data the user brings. On short runs of data the defaults
were not tuned on, the two can part (a 66-step run on a folder of photos once ended at 0.214 of
the dense MACs for ``t_d`` 0.3). So the recipe measures the deterministic MAC fraction on up to
``budget_check_images`` training images with the evaluation transform; when it is further than
``budget_tolerance`` from ``t_d``, it says so and calibrates the gate threshold to ``t_d`` on the
same images (:func:`~timm_gated_ssl.calibrate_budget`), so the exported checkpoint runs at its
budget. ``metrics.json`` records both fractions; ``budget_tolerance: null`` keeps the trained
threshold whatever it costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..calibration import calibrate_budget
from ..compute import count_macs
from ..data import EvalDataset, ImageDataset, build_eval_transform

__all__ = ["BudgetCheck", "build_budget_loader", "mac_fraction", "settle_budget"]


@dataclass(frozen=True)
class BudgetCheck:
    """What the end-of-training check found (and did)."""

    budget: float
    tolerance: float | None
    images: int
    trained: float
    """Deterministic gated / dense MACs with the trained threshold."""
    calibrated: float | None = None
    """The fraction after calibrating to ``budget`` (None: not calibrated)."""
    offset: float | None = None

    def metrics(self) -> dict[str, Any]:
        """``metrics.json`` entries."""
        return {"mac_ratio_trained": self.trained, "budget_check_images": self.images,
                "budget_calibrated": self.calibrated is not None, "mac_ratio_calibrated": self.calibrated,
                "budget_gate_offset": self.offset}

    def message(self) -> str:
        """One line for the end of training."""
        off = self.trained - self.budget
        head = (f"budget: the trained gates run at {self.trained:.3f} of the dense MACs on {self.images} "
                f"training images (t_d {self.budget:g}, {off:+.3f})")
        if self.calibrated is not None:
            return (f"{head}, beyond the tolerance {self.tolerance:g}: calibrated the gate threshold to "
                    f"{self.calibrated:.3f} on the same images (offset {self.offset:+.4g}); the checkpoint "
                    "runs at the calibrated threshold (set budget_tolerance: null to keep the trained one)")
        if self.tolerance is None:
            return f"{head}; budget_tolerance is null, so the trained threshold is kept"
        return f"{head}, within the tolerance {self.tolerance:g}"


def build_budget_loader(info: ImageDataset, *, images: int, batch_size: int = 256) -> DataLoader:
    """The first ``images`` training images with the evaluation transform, as ``(images, -1)``
    batches (labels are not needed)."""
    rows = info.dataset.select(range(min(images, len(info.dataset))))
    transform = build_eval_transform(image_size=info.image_size, mean=info.mean, std=info.std)
    dataset = EvalDataset(rows, transform, image_column=info.image_column, label_column=None)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)


def mac_fraction(model: nn.Module, batches: list[torch.Tensor]) -> tuple[float, float]:
    """``(gated / dense MACs over every image of batches, dense MACs per image)`` of the
    deterministic (eval-mode) gated network (:func:`~timm_gated_ssl.count_macs`)."""
    gated, dense, per_image = 0.0, 0.0, 0.0
    for images in batches:
        count = count_macs(model, images)
        per_image = float(count.dense)
        gated += float(count.gated.sum())
        dense += per_image * images.shape[0]
    return gated / dense, per_image


def settle_budget(model: nn.Module, loader: DataLoader, *, budget: float, tolerance: float | None,
                  device: torch.device | str = "cpu") -> BudgetCheck:
    """Measure the deterministic MAC fraction of ``model`` on ``loader`` and, when it is further
    than ``tolerance`` from ``budget``, calibrate the threshold to ``budget`` on the same images
    (``tolerance`` None: measure only). The model's train/eval flags are left as they were."""
    batches = [(batch[0] if isinstance(batch, (list, tuple)) else batch).to(device) for batch in loader]
    images = sum(b.shape[0] for b in batches)
    trained, _ = mac_fraction(model, batches)
    if tolerance is None or abs(trained - budget) <= tolerance:
        return BudgetCheck(budget=budget, tolerance=tolerance, images=images, trained=trained)
    result = calibrate_budget(model, batches, budget)
    return BudgetCheck(budget=budget, tolerance=tolerance, images=images, trained=trained,
                       calibrated=result.mac_fraction, offset=result.offset)
