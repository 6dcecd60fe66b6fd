"""What input a model takes, checked before a MAC count runs it (so the message names the
expected shape instead of a convolution's internal error)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputShapeError

__all__ = ["check_images", "check_input_size", "expected_input"]


def expected_input(model: nn.Module) -> tuple[int | None, tuple[int, int] | None]:
    """``(channels, fixed (H, W) or None)`` of a timm model's input.

    Channels come from the first convolution (the stem, or a ViT's patch embedding); a fixed size
    from a ViT patch embedding that is strict about it.
    """
    channels = next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    size = None
    embed = getattr(model, "patch_embed", None)
    if embed is not None and getattr(embed, "strict_img_size", False) and not getattr(embed, "dynamic_img_pad", False):
        img_size = getattr(embed, "img_size", None)
        if img_size is not None:
            size = (int(img_size[0]), int(img_size[1]))
    return channels, size


def _shape_text(channels: int | None, size: tuple[int, int] | None) -> str:
    c = "C" if channels is None else str(channels)
    h, w = ("H", "W") if size is None else size
    return f"(B, {c}, {h}, {w})"


def check_input_size(model: nn.Module, size: Sequence[int], *, caller: str) -> tuple[int, ...]:
    """Check a per-image ``(C, H, W)`` against the model. Returns it as a tuple of ints."""
    channels, fixed = expected_input(model)
    expected = _shape_text(channels, fixed)
    size = tuple(int(s) for s in size)
    if len(size) != 3 or any(s < 1 for s in size):
        raise InputShapeError(f"{caller} expects images of shape {expected}; got a per-image size {size}")
    if channels is not None and size[0] != channels:
        raise InputShapeError(f"{caller} expects images of shape {expected}: {channels} channels, got {size[0]} "
                              f"(per-image size {size})")
    if fixed is not None and tuple(size[1:]) != fixed:
        raise InputShapeError(f"{caller} expects images of shape {expected} (this ViT has a fixed input size), "
                              f"got {size[1]}x{size[2]}")
    return size


def check_images(model: nn.Module, images: object, *, caller: str) -> tuple[int, ...]:
    """Check a batch against the model: a float tensor ``(B, C, H, W)`` with the model's channels
    (and size, for a fixed-size ViT) on the model's device. Returns the per-image size.

    Raises:
        InputShapeError: Naming the expected shape and what was given.
    """
    channels, fixed = expected_input(model)
    expected = _shape_text(channels, fixed)
    if not isinstance(images, torch.Tensor):
        raise InputShapeError(f"{caller} expects a tensor of images of shape {expected}, got a "
                              f"{type(images).__name__}")
    shape = tuple(images.shape)
    if images.dim() != 4:
        hint = ": add the batch dimension with images.unsqueeze(0)" if images.dim() == 3 else ""
        raise InputShapeError(f"{caller} expects a batch of images of shape {expected}, got shape {shape}{hint}")
    if images.shape[0] < 1:
        raise InputShapeError(f"{caller} got an empty batch of shape {shape}")
    if not images.is_floating_point():
        raise InputShapeError(f"{caller} expects float images (normalised as in training), got dtype "
                              f"{images.dtype}")
    check_input_size(model, shape[1:], caller=caller)
    reference = next(model.parameters(), None)
    if reference is not None and reference.device != images.device:
        raise InputShapeError(f"{caller}: the images are on {images.device} and the model on "
                              f"{reference.device}; move one to the other")
    return shape[1:]
