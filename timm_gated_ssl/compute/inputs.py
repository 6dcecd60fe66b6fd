"""What input a model takes, checked before a MAC count runs it (so the message names the
expected shape instead of a convolution's internal error)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from ..errors import InputShapeError

__all__ = ["check_batch_shape", "check_images", "check_input_size", "expected_input"]


def expected_input(model: nn.Module) -> tuple[int | None, tuple[int, int] | None]:
    """``(channels, fixed (H, W) or None)`` of a timm model's input.

    Channels come from the first convolution (the stem, or a ViT's patch embedding); a fixed size
    from a ViT patch embedding that is strict about it. timm's ``PatchEmbed`` asserts the exact
    ``img_size`` whenever ``strict_img_size`` is set, with or without ``dynamic_img_pad`` (padding
    only applies to non-strict embeddings); ``dynamic_img_size=True`` turns strictness off, so such
    a ViT has no fixed size here either.
    """
    channels = next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    size = None
    embed = getattr(model, "patch_embed", None)
    if embed is not None and getattr(embed, "strict_img_size", False):
        img_size = getattr(embed, "img_size", None)
        if img_size is not None:
            size = (int(img_size[0]), int(img_size[1]))
    return channels, size


def _shape_text(channels: int | None, size: tuple[int, int] | None) -> str:
    c = "C" if channels is None else str(channels)
    h, w = ("H", "W") if size is None else size
    return f"(B, {c}, {h}, {w})"


def _check_size(channels: int | None, fixed: tuple[int, int] | None, size: Sequence[int], *,
                caller: str) -> tuple[int, ...]:
    """:func:`check_input_size` once the model's expected input is known."""
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


def check_input_size(model: nn.Module, size: Sequence[int], *, caller: str) -> tuple[int, ...]:
    """Check a per-image ``(C, H, W)`` against the model. Returns it as a tuple of ints."""
    channels, fixed = expected_input(model)
    return _check_size(channels, fixed, size, caller=caller)


def check_batch_shape(model: nn.Module, images: object, *, caller: str) -> tuple[int, ...]:
    """Check only the shape of a batch: a tensor ``(B, C, H, W)`` with the model's channels (and
    size, for a fixed-size ViT). Returns the per-image size.

    This is the part of :func:`check_images` that a model's own forward runs on every call: it
    reads shapes only (no dtype, device or batch-size policy, which torch and autocast decide).

    Raises:
        InputShapeError: Naming the expected shape and what was given.
    """
    channels, fixed = expected_input(model)
    if not isinstance(images, torch.Tensor):
        raise InputShapeError(f"{caller} expects a tensor of images of shape {_shape_text(channels, fixed)}, "
                              f"got a {type(images).__name__}")
    shape = tuple(images.shape)
    if len(shape) != 4:
        hint = ": add the batch dimension with images.unsqueeze(0)" if len(shape) == 3 else ""
        raise InputShapeError(f"{caller} expects a batch of images of shape {_shape_text(channels, fixed)}, "
                              f"got shape {shape}{hint}")
    return _check_size(channels, fixed, shape[1:], caller=caller)


def check_images(model: nn.Module, images: object, *, caller: str) -> tuple[int, ...]:
    """Check a batch against the model: a float tensor ``(B, C, H, W)`` with the model's channels
    (and size, for a fixed-size ViT) on the model's device. Returns the per-image size.

    Raises:
        InputShapeError: Naming the expected shape and what was given.
    """
    size = check_batch_shape(model, images, caller=caller)
    batch = cast(torch.Tensor, images)  # check_batch_shape refused anything else
    if batch.shape[0] < 1:
        raise InputShapeError(f"{caller} got an empty batch of shape {tuple(batch.shape)}")
    if not batch.is_floating_point():
        raise InputShapeError(f"{caller} expects float images (normalised as in training), got dtype "
                              f"{batch.dtype}")
    reference = next(model.parameters(), None)
    if reference is not None and reference.device != batch.device:
        raise InputShapeError(f"{caller}: the images are on {batch.device} and the model on "
                              f"{reference.device}; move one to the other")
    return size
