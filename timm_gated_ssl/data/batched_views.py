"""The two-view SSL augmentation of :mod:`~timm_gated_ssl.data.views`, applied to a whole batch.

Same recipe (VICReg/BYOL, as used by Krishna et al., BMVC 2023): RandomResizedCrop scale
(0.2, 1.0), ratio (3/4, 4/3), bicubic antialiased; horizontal flip p 0.5; ColorJitter(0.4, 0.4,
0.2, 0.1) in a random order with p 0.8; grayscale p 0.2; optional Gaussian blur (sigma in
[0.1, 2.0]); solarize p 0.1; normalisation (Bardes et al., arXiv:2105.04906, App. C.1; Grill et al.,
arXiv:2006.07733, Table 6). ``torchvision.transforms.v2`` draws ONE set of random parameters per
call, so batching it would give every image of a batch the same crop and colours; here every image
gets its own parameters and the operations still run once per batch:

* the random numbers of an image come from its own ``torch.Generator`` seeded by an integer key
  (the recipe uses ``(seed, epoch, index)``), a fixed number of draws per view, so a batch's
  augmentation does not depend on how the batch was put together, on workers, prefetching or the
  global RNG, and a resumed run reproduces an uninterrupted one exactly;
* the crop + resize runs per image (images may differ in size), on ``uint8``, as v2 does; flip,
  the four jitter operations (each on the images that drew it at that position of their random
  order), grayscale, blur (one depthwise convolution with a kernel per image), solarisation and
  normalisation run on the float batch.

The colour operations are computed in float instead of v2's ``uint8`` with rounding after each
step, so values differ from :func:`~timm_gated_ssl.data.views.build_ssl_view` by at most a few
levels of 255; the parameter distributions are v2's. Every operation is device-agnostic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from .views import _blur_kernel_size, _check_prob, _check_stats

__all__ = ["DRAWS_PER_VIEW", "BatchedSSLView", "BatchedTwoViews", "build_batched_ssl_views"]

_ATTEMPTS = 10  # RandomResizedCrop's rejection-sampling attempts (torchvision's)
# Uniform draws per view: crop 2 x 10 attempts + 2 offsets, flip 1, jitter 1 + 4 factors + 4 for
# the order, grayscale 1, blur 2, solarize 1.
DRAWS_PER_VIEW = 2 * _ATTEMPTS + 2 + 1 + 9 + 1 + 2 + 1
_GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision


def _gray(x: Tensor) -> Tensor:
    r, g, b = x.unbind(dim=-3)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(-3)


def _per_image(factor: Tensor) -> Tensor:
    return factor.view(-1, 1, 1, 1)


# The colour operations may work in place on ``x`` (the caller passes a gathered copy).
def _brightness(x: Tensor, f: Tensor) -> Tensor:
    return x.mul_(_per_image(f)).clamp_(0, 1)


def _blend(x: Tensor, other: Tensor, f: Tensor) -> Tensor:
    """``f * x + (1 - f) * other``, clamped to [0, 1] (torchvision's ``_blend``), in place."""
    f = _per_image(f)
    return x.mul_(f).add_(other * (1 - f)).clamp_(0, 1)


def _contrast(x: Tensor, f: Tensor) -> Tensor:
    return _blend(x, _gray(x).mean(dim=(-3, -2, -1), keepdim=True), f)


def _saturation(x: Tensor, f: Tensor) -> Tensor:
    return _blend(x, _gray(x), f)


def _hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue by ``shift`` (fraction of a turn) per image.

    RGB -> HSV as torchvision's ``_rgb2hsv``; HSV -> RGB with the closed form
    ``c_n = v - v * s * clamp(min(k_n, 4 - k_n), 0, 1)``, ``k_n = (n + 6h) mod 6`` for
    ``n = 5, 3, 1`` (red, green, blue), which equals torchvision's six-sector table and needs
    three elementwise passes instead of eighteen stacked candidates.
    """
    r, g, b = x.unbind(dim=-3)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    eqc = maxc == minc
    cr = maxc - minc
    s = cr / torch.where(eqc, 1.0, maxc)
    cr_div = torch.where(eqc, 1.0, cr)
    h = torch.where(maxc == r, (g - b) / cr_div,
                    torch.where(maxc == g, 2.0 + (b - r) / cr_div, 4.0 + (r - g) / cr_div))
    h6 = (h + 6.0 + 6.0 * shift.view(-1, 1, 1)) % 6.0  # hue in sectors, rotated, in [0, 6)
    vs = maxc * s
    out = torch.empty_like(x)
    for channel, n in enumerate((5.0, 3.0, 1.0)):
        k = (h6 + n) % 6.0
        torch.sub(maxc, vs * torch.minimum(k, 4.0 - k).clamp_(0, 1), out=out.select(-3, channel))
    return out.clamp_(0, 1)


_JITTER_OPS = (_brightness, _contrast, _saturation, _hue)


def _blur(x: Tensor, sigma: Tensor, kernel: int) -> Tensor:
    """Gaussian blur with one sigma per image: a separable depthwise convolution, reflect-padded."""
    n, c, h, w = x.shape
    half = (kernel - 1) / 2
    grid = torch.linspace(-half, half, kernel, device=x.device, dtype=x.dtype)
    k1d = torch.exp(-0.5 * (grid.view(1, -1) / sigma.view(-1, 1).to(x.dtype)) ** 2)
    k1d = (k1d / k1d.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (n*c, kernel)
    pad = kernel // 2
    mode = "reflect" if pad < min(h, w) else "replicate"
    flat = F.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode=mode)
    flat = F.conv2d(flat, k1d.view(n * c, 1, kernel, 1), groups=n * c)
    flat = F.conv2d(flat, k1d.view(n * c, 1, 1, kernel), groups=n * c)
    return flat.view(n, c, h, w)


class BatchedSSLView:
    """One view's augmentation for a batch, with per-image random parameters.

    Arguments and defaults are those of :func:`~timm_gated_ssl.data.views.build_ssl_view`.
    Call it with the batch's ``uint8`` ``(3, H, W)`` images and a ``(B, DRAWS_PER_VIEW)`` float64
    tensor of uniform draws (one row per image); it returns float32 ``(B, 3, crop, crop)``.
    """

    def __init__(
        self,
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
    ) -> None:
        if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < 1:
            raise ValueError(f"crop_size must be a positive int, got {crop_size!r}")
        if not 0.0 < crop_scale[0] <= crop_scale[1] <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale!r}")
        for name, p in (("blur_prob", blur_prob), ("jitter_prob", jitter_prob),
                        ("grayscale_prob", grayscale_prob), ("flip_prob", flip_prob),
                        ("solarize_prob", solarize_prob)):
            _check_prob(name, p)
        _check_stats(mean, std)
        self.crop_size = crop_size
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.log_ratio = (math.log(3 / 4), math.log(4 / 3))
        self.blur_prob, self.jitter_prob, self.grayscale_prob = blur_prob, jitter_prob, grayscale_prob
        self.flip_prob, self.solarize_prob = flip_prob, solarize_prob
        self.blur_kernel = _blur_kernel_size(crop_size)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1)

    # ----------------------------------------------------------------------------- parameters
    def crop_boxes(self, heights: Tensor, widths: Tensor, u: Tensor) -> Tensor:
        """``(B, 4)`` int64 ``top, left, h, w`` of RandomResizedCrop, torchvision's sampling.

        Up to 10 attempts of area ``U(scale) * H * W`` and log-uniform aspect ratio; the first one
        that fits is taken, else a center crop clamped to the ratio range.
        """
        H, W = heights.double().unsqueeze(1), widths.double().unsqueeze(1)
        low, high = self.crop_scale
        area = H * W * (low + u[:, :_ATTEMPTS] * (high - low))
        ratio = torch.exp(self.log_ratio[0] + u[:, _ATTEMPTS:2 * _ATTEMPTS] * (self.log_ratio[1] - self.log_ratio[0]))
        w = torch.round(torch.sqrt(area * ratio))
        h = torch.round(torch.sqrt(area / ratio))
        fits = (w > 0) & (h > 0) & (w <= W) & (h <= H)
        first = fits.to(torch.int8).argmax(dim=1, keepdim=True)
        any_fit = fits.any(dim=1)
        h_ok, w_ok = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
        H1, W1 = H.squeeze(1), W.squeeze(1)
        in_ratio = W1 / H1
        min_r, max_r = 3 / 4, 4 / 3
        w_fb = torch.where(in_ratio < min_r, W1, torch.where(in_ratio > max_r, torch.round(H1 * max_r), W1))
        h_fb = torch.where(in_ratio < min_r, torch.round(W1 / min_r), torch.where(in_ratio > max_r, H1, H1))
        h_sel = torch.where(any_fit, h_ok, h_fb)
        w_sel = torch.where(any_fit, w_ok, w_fb)
        top = torch.where(any_fit, torch.floor(u[:, 2 * _ATTEMPTS] * (H1 - h_sel + 1)),
                          torch.div(H1 - h_sel, 2, rounding_mode="floor"))
        left = torch.where(any_fit, torch.floor(u[:, 2 * _ATTEMPTS + 1] * (W1 - w_sel + 1)),
                           torch.div(W1 - w_sel, 2, rounding_mode="floor"))
        return torch.stack([top, left, h_sel, w_sel], dim=1).long()

    # ------------------------------------------------------------------------------ apply
    def __call__(self, images: Sequence[Tensor], u: Tensor) -> Tensor:
        if len(images) != u.shape[0] or u.shape[1] != DRAWS_PER_VIEW:
            raise ValueError(f"need one row of {DRAWS_PER_VIEW} draws per image; got {len(images)} "
                             f"images and draws of shape {tuple(u.shape)}")
        heights = torch.tensor([img.shape[-2] for img in images])
        widths = torch.tensor([img.shape[-1] for img in images])
        boxes = self.crop_boxes(heights, widths, u).tolist()
        size = [self.crop_size, self.crop_size]
        crops = [
            TF.resized_crop(img, top, left, h, w, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
            for img, (top, left, h, w) in zip(images, boxes)
        ]
        x = torch.stack(crops).float().div_(255.0)
        device = x.device
        u = u.to(device)
        col = 2 * _ATTEMPTS + 2
        flip = u[:, col] < self.flip_prob
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        jitter = u[:, col + 1] < self.jitter_prob
        factors = (0.6 + 0.8 * u[:, col + 2], 0.6 + 0.8 * u[:, col + 3], 0.8 + 0.4 * u[:, col + 4],
                   -0.1 + 0.2 * u[:, col + 5])
        order = u[:, col + 6:col + 10].argsort(dim=1)  # a random permutation of the 4 operations per image
        for position in range(4):
            for op_index, op in enumerate(_JITTER_OPS):
                chosen = (jitter & (order[:, position] == op_index)).nonzero().squeeze(1)
                if chosen.numel():
                    x[chosen] = op(x[chosen], factors[op_index][chosen].to(x.dtype))
        gray = (u[:, col + 10] < self.grayscale_prob).nonzero().squeeze(1)
        if gray.numel():
            x[gray] = _gray(x[gray]).expand(-1, 3, -1, -1)
        if self.blur_prob > 0:
            blur = (u[:, col + 11] < self.blur_prob).nonzero().squeeze(1)
            if blur.numel():
                sigma = 0.1 + 1.9 * u[blur, col + 12]
                x[blur] = _blur(x[blur], sigma, self.blur_kernel)
        solarize = (u[:, col + 13] < self.solarize_prob).view(-1, 1, 1, 1)
        x = torch.where(solarize & (x >= 128 / 255), 1.0 - x, x)
        return (x - self.mean.to(device)) / self.std.to(device)


class BatchedTwoViews:
    """Two :class:`BatchedSSLView` pipelines over one batch, with per-image seeded parameters.

    Args:
        view1: Pipeline of the first view (the gated pass in the dual recipe).
        view2: Pipeline of the second view (the dense pass).

    Example:
        >>> views = build_batched_ssl_views(crop_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
        >>> v1, v2 = views(list_of_uint8_images, keys=[11, 12, 13])  # doctest: +SKIP
    """

    def __init__(self, view1: BatchedSSLView, view2: BatchedSSLView) -> None:
        self.view1, self.view2 = view1, view2

    @staticmethod
    def draws(keys: Sequence[int]) -> Tensor:
        """``(B, 2 * DRAWS_PER_VIEW)`` uniforms, row ``i`` from a generator seeded with ``keys[i]``."""
        rows = []
        for key in keys:
            generator = torch.Generator().manual_seed(int(key) % (2**63))
            rows.append(torch.rand(2 * DRAWS_PER_VIEW, generator=generator, dtype=torch.float64))
        return torch.stack(rows)

    def __call__(self, images: Sequence[Tensor], keys: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Return ``(view1, view2)``, float32 ``(B, 3, crop, crop)`` each."""
        u = self.draws(keys)
        return self.view1(images, u[:, :DRAWS_PER_VIEW]), self.view2(images, u[:, DRAWS_PER_VIEW:])

    def collate(self, batch: Sequence[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
        """A ``DataLoader`` ``collate_fn`` over ``(uint8 image, key)`` samples."""
        images, keys = zip(*batch)
        return self(list(images), list(keys))


def build_batched_ssl_views(
    *,
    crop_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    blur_prob_view1: float = 0.0,
    blur_prob_view2: float = 0.0,
    crop_scale: tuple[float, float] = (0.2, 1.0),
    solarize_prob: float = 0.1,
) -> BatchedTwoViews:
    """The batched counterpart of :func:`~timm_gated_ssl.data.views.build_ssl_views` (same arguments)."""
    common = {"crop_size": crop_size, "mean": mean, "std": std, "crop_scale": crop_scale,
              "solarize_prob": solarize_prob}
    return BatchedTwoViews(BatchedSSLView(blur_prob=blur_prob_view1, **common),
                           BatchedSSLView(blur_prob=blur_prob_view2, **common))
