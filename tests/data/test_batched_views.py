"""Batched two-view augmentation: per-image parameters, seeded per image, v2's operations."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from timm_gated_ssl.data import batched_views as bv
from timm_gated_ssl.data.batched_views import (
    DRAWS_PER_VIEW,
    BatchedSSLView,
    build_batched_ssl_views,
)

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _images(n: int, size: tuple[int, int] = (20, 24), *, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=g) for _ in range(n)]


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(bv._brightness, TF.adjust_brightness), (bv._contrast, TF.adjust_contrast),
     (bv._saturation, TF.adjust_saturation)],
)
def test_colour_operations_match_torchvision_per_image(ours, theirs) -> None:
    x = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    factors = torch.tensor([0.6, 1.0, 1.25, 1.4])
    expected = torch.stack([theirs(x[i], float(factors[i])) for i in range(4)])
    torch.testing.assert_close(ours(x.clone(), factors), expected, atol=1e-6, rtol=0)


def test_hue_and_blur_match_torchvision_per_image() -> None:
    x = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    shifts = torch.tensor([-0.1, -0.02, 0.05, 0.1])
    expected = torch.stack([TF.adjust_hue(x[i], float(shifts[i])) for i in range(4)])
    torch.testing.assert_close(bv._hue(x.clone(), shifts), expected, atol=1e-5, rtol=0)
    sigmas = torch.tensor([0.1, 0.7, 1.3, 2.0])
    expected = torch.stack([TF.gaussian_blur(x[i], [5, 5], [float(s)] * 2) for i, s in enumerate(sigmas)])
    torch.testing.assert_close(bv._blur(x.clone(), sigmas, 5), expected, atol=1e-5, rtol=0)


def test_hue_matches_torchvision_on_ties_grey_and_saturated_pixels() -> None:
    """The closed-form HSV -> RGB against v2's six-sector table where the max channel is shared,
    the pixel is grey (no hue), or a channel sits at 0 or 1, at shifts across the full range."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 3, 8, 8, generator=g)
    x[0] = x[0, :1]  # grey: every channel equal
    x[1, 1] = x[1, 0]  # red == green
    x[2, 2] = x[2, 1]  # green == blue
    x[3] = (x[3] > 0.5).float()  # pure colours, black and white
    x[4, 0] = 1.0
    shifts = torch.tensor([0.1, -0.1, 0.5, -0.5, 0.25, -0.3])
    expected = torch.stack([TF.adjust_hue(x[i], float(shifts[i])) for i in range(6)])
    torch.testing.assert_close(bv._hue(x.clone(), shifts), expected, atol=1e-5, rtol=0)


def test_identity_settings_reproduce_the_normalised_image() -> None:
    view = BatchedSSLView(crop_size=16, mean=MEAN, std=STD, crop_scale=(1.0, 1.0), jitter_prob=0.0,
                          grayscale_prob=0.0, flip_prob=0.0, solarize_prob=0.0)
    images = _images(3, (16, 16))
    u = torch.rand(3, DRAWS_PER_VIEW, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    u[:, 10:20] = 0.5  # aspect ratio 1: the full square image fits at the first attempt
    out = view(images, u)
    expected = torch.stack([TF.normalize(img.float() / 255, list(MEAN), list(STD)) for img in images])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_crop_boxes_follow_random_resized_crop() -> None:
    view = BatchedSSLView(crop_size=8, mean=MEAN, std=STD)
    n = 4000
    u = torch.rand(n, DRAWS_PER_VIEW, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    heights, widths = torch.full((n,), 30), torch.full((n,), 40)
    top, left, h, w = view.crop_boxes(heights, widths, u).T
    assert bool(((top >= 0) & (left >= 0) & (top + h <= 30) & (left + w <= 40) & (h > 0) & (w > 0)).all())
    area = (h * w).double() / (30 * 40)
    assert 0.17 < float(area.min()) and float(area.max()) <= 1.0
    ratio = (w / h).double()
    assert float(ratio.min()) > 0.7 and float(ratio.max()) < 1.4
    # The same distribution as torchvision's own sampler (v1 get_params = v2's algorithm).
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    image = torch.zeros(3, 30, 40)
    ref = torch.tensor([RandomResizedCrop.get_params(image, [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(n)]).double()
    for ours, theirs in zip((top, left, h, w), ref.T):
        assert abs(float(ours.double().mean()) - float(theirs.mean())) < 0.04 * float(theirs.mean()) + 0.3
        assert abs(float(ours.double().std()) - float(theirs.std())) < 0.08 * float(theirs.std()) + 0.3
    # Images too elongated for any attempt fall back to a center crop clamped to the ratio range.
    top, left, h, w = view.crop_boxes(torch.tensor([10]), torch.tensor([200]), torch.ones(1, DRAWS_PER_VIEW,
                                                                                           dtype=torch.float64)).T
    assert (int(h), int(w), int(left)) == (10, round(10 * 4 / 3), (200 - round(10 * 4 / 3)) // 2)


def test_every_image_gets_its_own_parameters_and_keys_decide_them() -> None:
    views = build_batched_ssl_views(crop_size=16, mean=MEAN, std=STD, blur_prob_view2=0.5)
    same = _images(1)[0]
    a1, a2 = views([same] * 6, keys=list(range(6)))
    assert a1.shape == (6, 3, 16, 16) and a1.dtype == torch.float32
    flat = a1.flatten(1)
    assert all(not torch.equal(flat[i], flat[j]) for i in range(6) for j in range(i + 1, 6))
    assert not torch.equal(a1, a2)  # the two views differ
    # The same keys give the same views whatever the rest of the batch (exact resume).
    b1, b2 = views([_images(1, seed=9)[0], same, same], keys=[99, 2, 4])
    assert torch.equal(b1[1], a1[2]) and torch.equal(b1[2], a1[4]) and torch.equal(b2[1], a2[2])


def test_statistics_of_the_random_choices() -> None:
    # With solarize always on and the rest off, every pixel >= 128/255 is inverted.
    view = BatchedSSLView(crop_size=8, mean=(0, 0, 0), std=(1, 1, 1), crop_scale=(1.0, 1.0), jitter_prob=0.0,
                          grayscale_prob=1.0, flip_prob=0.0, solarize_prob=1.0)
    images = _images(2, (8, 8))
    u = torch.full((2, DRAWS_PER_VIEW), 0.5, dtype=torch.float64)
    out = view(images, u)
    gray = TF.rgb_to_grayscale(torch.stack(images).float() / 255, num_output_channels=3)
    expected = torch.where(gray >= 128 / 255, 1 - gray, gray)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    # Flip probability 0.5: about half of many draws flip.
    draws = bv.BatchedTwoViews.draws(range(2000))
    assert abs(float((draws[:, 2 * 10 + 2] < 0.5).double().mean()) - 0.5) < 0.05
    assert not math.isnan(float(draws.mean()))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="crop_size"):
        BatchedSSLView(crop_size=0, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="blur_prob"):
        BatchedSSLView(crop_size=8, mean=MEAN, std=STD, blur_prob=1.5)
    view = BatchedSSLView(crop_size=8, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="one row of"):
        view(_images(2), torch.rand(3, DRAWS_PER_VIEW, dtype=torch.float64))
