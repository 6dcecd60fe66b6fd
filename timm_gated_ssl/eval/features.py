"""Extract frozen-backbone features from a data loader, once, for k-NN and linear evaluation.

The evaluation protocol of Krishna et al. (BMVC 2023) freezes the backbone and evaluates its pooled
features: a k-NN monitor and a linear probe, one per mode (dense and gated). Computing the features
once and training the probe on the cached tensors keeps the probe fast.

Example:
    >>> import timm
    >>> model = timm.create_model("resnet18", num_classes=0)  # doctest: +SKIP
    >>> train = extract_features(model, train_loader)  # doctest: +SKIP
    >>> train.features.shape, train.labels.shape  # doctest: +SKIP
    (torch.Size([50000, 512]), torch.Size([50000]))
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = ["MISSING_LABEL", "Features", "extract_features"]

MISSING_LABEL = -1
"""Label value stored when a loader yields no labels and ``require_labels=False``."""

FeatureFn = Callable[[Tensor], Tensor]
ModeContext = Callable[[nn.Module, str], AbstractContextManager[Any]]


@dataclass(frozen=True)
class Features:
    """A bank of features with their labels, as produced by :func:`extract_features`.

    Attributes:
        features: ``[N, D]`` float32 tensor on the CPU.
        labels: ``[N]`` int64 tensor on the CPU (``MISSING_LABEL`` where the data had no label).
    """

    features: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.features, Tensor) or self.features.ndim != 2:
            shape = tuple(self.features.shape) if isinstance(self.features, Tensor) else None
            raise ValueError(f"features must be a 2-D tensor [N, D], got shape {shape}")
        if not isinstance(self.labels, Tensor) or self.labels.ndim != 1:
            shape = tuple(self.labels.shape) if isinstance(self.labels, Tensor) else None
            raise ValueError(f"labels must be a 1-D tensor [N], got shape {shape}")
        if self.features.shape[0] != self.labels.shape[0]:
            raise ValueError(
                f"features and labels disagree on N: {self.features.shape[0]} features vs "
                f"{self.labels.shape[0]} labels"
            )
        if self.features.is_floating_point() is False:
            raise ValueError(f"features must be floating point, got dtype {self.features.dtype}")
        if self.labels.is_floating_point() or self.labels.dtype == torch.bool:
            raise ValueError(f"labels must be an integer tensor, got dtype {self.labels.dtype}")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension ``D``."""
        return int(self.features.shape[1])

    @property
    def has_labels(self) -> bool:
        """Whether every sample carries a real label (none equals ``MISSING_LABEL``)."""
        return bool((self.labels != MISSING_LABEL).all())


def _split_batch(batch: Any, *, image_key: str, label_key: str) -> tuple[Tensor, Tensor | None]:
    """Return ``(images, labels or None)`` from a tensor, tuple/list or dict batch."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, Mapping):
        if image_key not in batch:
            raise ValueError(
                f"batch dict has no image key {image_key!r}; its keys are {sorted(batch)}"
                " (pass image_key=...)"
            )
        return batch[image_key], batch.get(label_key)
    if isinstance(batch, Sequence) and not isinstance(batch, str):
        if len(batch) == 0 or len(batch) > 2:
            raise ValueError(
                f"a tuple/list batch must be (images,) or (images, labels), got {len(batch)} items"
            )
        return batch[0], (batch[1] if len(batch) == 2 else None)
    raise TypeError(
        "a batch must be a tensor, an (images, labels) tuple/list or a dict with "
        f"{image_key!r}/{label_key!r} keys, got {type(batch).__name__}"
    )


def _as_label_tensor(labels: Any, *, batch_size: int) -> Tensor:
    out = torch.as_tensor(labels)
    if out.ndim != 1 or out.shape[0] != batch_size:
        raise ValueError(
            f"labels of a batch must have shape [{batch_size}], got {tuple(out.shape)}"
        )
    if out.is_floating_point() or out.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {out.dtype}")
    return out.long()


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def extract_features(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    accelerator: Accelerator | None = None,
    normalize: bool = False,
    progress: bool = True,
    desc: str = "features",
    feature_fn: FeatureFn | None = None,
    mode: str | None = None,
    mode_context: ModeContext | None = None,
    require_labels: bool = True,
    image_key: str = "image",
    label_key: str = "label",
) -> Features:
    """Run a frozen model over a loader and collect its pooled features and labels.

    The model is put in eval mode (BatchNorm uses running statistics, gates are deterministic) for
    the duration of the call and its previous train/eval state is restored afterwards. Batches run
    under ``torch.inference_mode``.

    By default the features are ``model(images)``: create timm models with ``num_classes=0`` (or
    call ``reset_classifier(0)``) so that the forward returns the globally pooled pre-logits
    features ``[B, D]`` rather than class logits. Pass ``feature_fn`` to use something else, e.g.
    ``lambda x: model.forward_head(model.forward_features(x), pre_logits=True)``.

    Args:
        model: The backbone. With an ``accelerator``, pass the model returned by
            ``accelerator.prepare`` (or the unwrapped one already on ``accelerator.device``).
        loader: Yields batches as a tensor of images, ``(images,)``, ``(images, labels)`` or a dict
            with ``image_key`` / ``label_key`` entries.
        accelerator: When given, images go to ``accelerator.device`` and the per-process results
            are gathered with ``accelerator.gather_for_metrics``, which drops the samples a
            prepared distributed loader duplicates to even out the last batch. Every process
            returns the full gathered bank.
        normalize: L2-normalise each feature vector.
        progress: Show a tqdm bar (on the main process only).
        desc: Label of the progress bar.
        feature_fn: Maps an image batch to ``[B, D]`` features; defaults to ``model``.
        mode: Encoder mode to evaluate in (e.g. ``"dense"`` or ``"gated"``); needs
            ``mode_context``. ``None`` leaves the model as it is.
        mode_context: ``mode_context(model, mode)`` returns a context manager that switches the
            model to ``mode`` for the extraction (e.g. ``timm_gated_ssl.attach.gate_mode``).
        require_labels: Raise if the loader yields no labels. With ``False``, unlabeled batches
            are stored with label ``MISSING_LABEL``.
        image_key: Image entry of dict batches.
        label_key: Label entry of dict batches.

    Returns:
        The features ``[N, D]`` (float32, CPU) and labels ``[N]`` (int64, CPU), in loader order.

    Raises:
        ValueError: If the loader is empty, a batch lacks labels while ``require_labels`` is set,
            the model output is not ``[B, D]``, or ``mode`` is given without ``mode_context``.
        TypeError: If a batch has an unsupported type.
    """
    if mode is not None and mode_context is None:
        raise ValueError(
            f"mode={mode!r} needs mode_context=(model, mode) -> context manager, got None"
        )
    if mode is None and mode_context is not None:
        raise ValueError("mode_context was given without a mode; pass mode='dense' or 'gated'")

    fn: FeatureFn = feature_fn if feature_fn is not None else model
    device = accelerator.device if accelerator is not None else _model_device(model)
    is_main = accelerator.is_main_process if accelerator is not None else True

    feats: list[Tensor] = []
    labels: list[Tensor] = []
    was_training = model.training
    mode_cm: AbstractContextManager[Any] = (
        mode_context(model, mode)
        if mode_context is not None and mode is not None
        else contextlib.nullcontext()
    )
    model.eval()
    try:
        with mode_cm, torch.inference_mode():
            bar = tqdm(loader, desc=desc, disable=not (progress and is_main), leave=False)
            for step, batch in enumerate(bar):
                images, batch_labels = _split_batch(batch, image_key=image_key, label_key=label_key)
                if not isinstance(images, Tensor):
                    raise TypeError(f"images must be a tensor, got {type(images).__name__}")
                batch_size = int(images.shape[0])
                if batch_labels is None:
                    if require_labels:
                        raise ValueError(
                            f"batch {step} yields no labels (expected (images, labels) or a dict "
                            f"with key {label_key!r}); pass require_labels=False for unlabeled data"
                        )
                    label_tensor = torch.full((batch_size,), MISSING_LABEL, dtype=torch.long)
                else:
                    label_tensor = _as_label_tensor(batch_labels, batch_size=batch_size)

                out = fn(images.to(device, non_blocking=True))
                if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != batch_size:
                    shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                    raise ValueError(
                        f"the model must return pooled features [B={batch_size}, D], got {shape}; "
                        "create timm models with num_classes=0 or pass a pooling feature_fn"
                    )
                out = out.float()
                label_tensor = label_tensor.to(out.device)
                if accelerator is not None:
                    out, label_tensor = accelerator.gather_for_metrics((out, label_tensor))
                feats.append(out.cpu())
                labels.append(label_tensor.cpu())
    finally:
        model.train(was_training)

    if not feats:
        raise ValueError("the loader yielded no batches; cannot extract features")
    features = torch.cat(feats).float()
    if normalize:
        features = F.normalize(features, dim=1)
    return Features(features=features, labels=torch.cat(labels).long())
