"""Two-view SSL augmentations and the evaluation transform, on uint8 tensors.

The augmentation pipeline is the VICReg/BYOL recipe used by Krishna et al., BMVC 2023
(arXiv:2301.09164): RandomResizedCrop scale (0.2, 1.0) bicubic; ColorJitter(0.4, 0.4, 0.2, 0.1)
with p 0.8; grayscale p 0.2; horizontal flip p 0.5; solarize p 0.1; optional Gaussian blur per view
(Bardes et al., "VICReg", arXiv:2105.04906, Appendix C.1; Grill et al., "BYOL", arXiv:2006.07733,
Table 6).

Speed: every image is converted once to an RGB ``uint8`` tensor (no PIL operations after decoding),
then both views are computed with ``torchvision.transforms.v2`` on that tensor and converted to
float only at the end. Random parameters are drawn per call, i.e. per sample and per view, from
torch's global generator (seed it with ``torch.manual_seed``; DataLoader workers are seeded
distinctly by PyTorch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "TwoViewTransform",
    "build_eval_transform",
    "build_ssl_view",
    "build_ssl_views",
    "to_rgb_uint8",
]


def to_rgb_uint8(image: Any) -> Tensor:
    """Convert a PIL image, numpy array or tensor of any mode to a ``(3, H, W)`` uint8 tensor.

    Grayscale (``L``, ``I``, ``F``, 1-bit), palette (``P``, with or without transparency), ``LA``,
    ``RGBA``, ``CMYK`` ... become RGB (alpha is dropped). Arrays are read as ``(H, W)`` or
    ``(H, W, C)``; tensors as ``(H, W)`` or ``(C, H, W)``. Float arrays/tensors are taken to be in
    ``[0, 1]``.

    Raises:
        TypeError: For other input types.
        ValueError: For a channel count other than 1, 2, 3 or 4.
    """
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            if image.mode in ("P", "PA") or "transparency" in image.info:
                image = image.convert("RGBA")
            if image.mode in ("I", "I;16", "F"):  # high bit depth grayscale: rescale to 8 bit
                arr = np.asarray(image, dtype=np.float32)
                peak = 65535.0 if arr.max() > 255 else 255.0
                image = Image.fromarray((arr.clip(0, peak) * (255.0 / peak)).astype(np.uint8))
            image = image.convert("RGB")
        return TF.pil_to_tensor(image)
    if isinstance(image, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    elif isinstance(image, Tensor):
        tensor = image.unsqueeze(0) if image.ndim == 2 else image
    else:
        raise TypeError(f"expected a PIL image, numpy array or tensor, got {type(image).__name__}")
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 2, 3, 4):
        raise ValueError(
            f"expected 1-4 channels, shape (C, H, W) or (H, W, C); got {tuple(image.shape)}"
        )
    if tensor.is_floating_point():
        tensor = (tensor.clamp(0, 1) * 255).round()
    tensor = tensor.to(torch.uint8)
    channels = tensor.shape[0]
    if channels in (1, 2):
        tensor = tensor[:1].expand(3, -1, -1)
    elif channels == 4:
        tensor = tensor[:3]
    return tensor.contiguous()


def _blur_kernel_size(crop_size: int) -> int:
    """Odd kernel of about 10% of the crop, at least 3 (BYOL: 23 px at 224)."""
    return max(3, int(0.1 * crop_size) // 2 * 2 + 1)


def _check_prob(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {p!r}")


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (RGB), got {list(mean)} and {list(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be > 0, got {list(std)}")


def build_ssl_view(
    *,
    crop_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    blur_prob: float = 0.0,
    crop_scale: tuple[float, float] = (0.2, 1.0),
    jitter_prob: float = 0.8,
    grayscale_prob: float = 0.2,
    flip_prob: float = 0.5,
    solarize_prob: float = 0.1,
) -> v2.Compose:
    """One view's augmentation pipeline, expecting an RGB uint8 ``(3, H, W)`` tensor.

    Order: crop, flip, colour jitter, grayscale, blur, solarize (threshold 128 on uint8, i.e. 0.5 in
    float units), then float in ``[0, 1]`` and normalisation. Blur uses an odd kernel of about 10%
    of the crop (at least 3) and sigma in ``[0.1, 2.0]``.

    Args:
        crop_size: Output side in pixels (32 CIFAR, 96 STL-10, 224 ImageNet).
        mean: Per-channel mean for normalisation.
        std: Per-channel std for normalisation.
        blur_prob: Probability of Gaussian blur (0 disables it).
        crop_scale: Area range of RandomResizedCrop.
        jitter_prob: Probability of ColorJitter(0.4, 0.4, 0.2, 0.1).
        grayscale_prob: Probability of grayscale.
        flip_prob: Probability of a horizontal flip.
        solarize_prob: Probability of solarisation.

    Returns:
        A ``v2.Compose`` mapping uint8 ``(3, H, W)`` to float32 ``(3, crop, crop)``.
    """
    if not isinstance(crop_size, int) or crop_size < 1:
        raise ValueError(f"crop_size must be a positive int, got {crop_size!r}")
    if not 0.0 < crop_scale[0] <= crop_scale[1] <= 1.0:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale!r}")
    for name, p in (
        ("blur_prob", blur_prob),
        ("jitter_prob", jitter_prob),
        ("grayscale_prob", grayscale_prob),
        ("flip_prob", flip_prob),
        ("solarize_prob", solarize_prob),
    ):
        _check_prob(name, p)
    _check_stats(mean, std)
    ops: list[Callable[..., Any]] = [
        v2.RandomResizedCrop(
            crop_size, scale=crop_scale, interpolation=InterpolationMode.BICUBIC, antialias=True
        ),
        v2.RandomHorizontalFlip(flip_prob),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=jitter_prob),
        v2.RandomGrayscale(grayscale_prob),
    ]
    if blur_prob > 0:
        kernel = _blur_kernel_size(crop_size)
        ops.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=blur_prob))
    ops += [
        v2.RandomSolarize(threshold=128, p=solarize_prob),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]
    return v2.Compose(ops)


class TwoViewTransform:
    """Apply two (possibly different) view pipelines to one image.

    The image is converted once with :func:`to_rgb_uint8`; each call draws fresh random parameters
    for each view.

    Args:
        view1: Pipeline of the first view (the gated pass in the dual recipe).
        view2: Pipeline of the second view (the dense pass).

    Example:
        >>> views = build_ssl_views(crop_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
        >>> v1, v2 = views(pil_image)  # doctest: +SKIP
    """

    def __init__(
        self, view1: Callable[[Tensor], Tensor], view2: Callable[[Tensor], Tensor]
    ) -> None:
        self.view1 = view1
        self.view2 = view2

    def __call__(self, image: Any) -> tuple[Tensor, Tensor]:
        """Return ``(view1, view2)`` float32 tensors of shape ``(3, crop, crop)``."""
        x = to_rgb_uint8(image)
        return self.view1(x), self.view2(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(\n  view1={self.view1},\n  view2={self.view2})"


def build_ssl_views(
    *,
    crop_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    blur_prob_view1: float = 0.0,
    blur_prob_view2: float = 0.0,
    crop_scale: tuple[float, float] = (0.2, 1.0),
    solarize_prob: float = 0.1,
) -> TwoViewTransform:
    """Build the paper's two-view transform (blur off by default; CIFAR-100: view 2 blur p 0.2).

    Args:
        crop_size: Output side in pixels.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        blur_prob_view1: Gaussian blur probability of view 1 (gated pass).
        blur_prob_view2: Gaussian blur probability of view 2 (dense pass).
        crop_scale: Area range of RandomResizedCrop.
        solarize_prob: Solarisation probability of both views.

    Returns:
        A :class:`TwoViewTransform`.
    """
    common: dict[str, Any] = {
        "crop_size": crop_size,
        "mean": mean,
        "std": std,
        "crop_scale": crop_scale,
        "solarize_prob": solarize_prob,
    }
    return TwoViewTransform(
        build_ssl_view(blur_prob=blur_prob_view1, **common),
        build_ssl_view(blur_prob=blur_prob_view2, **common),
    )


def eval_crop_pct(image_size: int) -> float:
    """The center-crop fraction :func:`build_eval_transform` uses by default at ``image_size``."""
    return 0.875 if image_size >= 128 else 1.0


def eval_data_config(*, image_size: int, mean: Sequence[float], std: Sequence[float]) -> dict[str, Any]:
    """timm's data config of :func:`build_eval_transform` (input size, normalisation, bicubic
    resize, crop fraction): what a checkpoint records in ``config.json`` so that
    ``timm.data.resolve_data_config`` feeds the encoder what it was trained and evaluated on."""
    return {"input_size": (3, image_size, image_size), "mean": tuple(float(m) for m in mean),
            "std": tuple(float(s) for s in std), "interpolation": "bicubic",
            "crop_pct": eval_crop_pct(image_size), "crop_mode": "center"}


def build_eval_transform(
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_pct: float | None = None,
) -> Callable[[Any], Tensor]:
    """Deterministic evaluation transform: RGB, resize shorter side, center crop, normalise.

    The shorter side is resized (bicubic, antialiased) to ``round(image_size / crop_pct)`` and the
    center ``image_size`` square is kept, as in linear evaluation. ``crop_pct`` defaults to 0.875
    (256 -> 224) for ``image_size >= 128`` and to 1.0 below, where small datasets (CIFAR 32 px,
    STL-10 96 px) are evaluated at full frame.

    Args:
        image_size: Output side in pixels.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        crop_pct: Fraction of the resized image kept by the center crop, in ``(0, 1]``.

    Returns:
        A callable mapping any image (see :func:`to_rgb_uint8`) to float32 ``(3, size, size)``.
    """
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if crop_pct is None:
        crop_pct = eval_crop_pct(image_size)
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct!r}")
    _check_stats(mean, std)
    resize = round(image_size / crop_pct)
    return v2.Compose(
        [
            to_rgb_uint8,
            v2.Resize(resize, interpolation=InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )
