"""Two-view augmentations and the evaluation transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from timm_gated_ssl.data import build_eval_transform, build_ssl_view, build_ssl_views, to_rgb_uint8

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _rgb(h: int = 32, w: int = 32, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    return (x.float() / 255 - mean) / std


def test_shapes_and_dtypes() -> None:
    views = build_ssl_views(crop_size=24, mean=MEAN, std=STD, blur_prob_view2=1.0)
    v1, v2_ = views(_rgb(40, 50))
    assert v1.shape == v2_.shape == (3, 24, 24)
    assert v1.dtype == v2_.dtype == torch.float32


def test_per_sample_and_per_view_randomness() -> None:
    views = build_ssl_views(crop_size=32, mean=MEAN, std=STD)
    img = _rgb()
    outs = [views(img) for _ in range(3)]
    assert not torch.equal(outs[0][0], outs[0][1])
    assert not torch.equal(outs[0][0], outs[1][0])


def test_deterministic_with_seed() -> None:
    views = build_ssl_views(crop_size=32, mean=MEAN, std=STD, blur_prob_view1=0.5)
    img = _rgb()
    torch.manual_seed(123)
    a = views(img)
    torch.manual_seed(123)
    b = views(img)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def _only(**probs: float) -> v2.Compose:
    base = {"jitter_prob": 0.0, "grayscale_prob": 0.0, "flip_prob": 0.0, "solarize_prob": 0.0}
    base.update(probs)
    # scale (1, 1) on a square image with aspect ratio range containing 1 keeps the full frame
    return build_ssl_view(crop_size=16, mean=MEAN, std=STD, crop_scale=(1.0, 1.0), **base)


def test_identity_flip_solarize_grayscale_against_hand_expectations() -> None:
    x = to_rgb_uint8(_rgb(16, 16))
    torch.manual_seed(0)
    torch.testing.assert_close(_only()(x), _normalise(x))
    torch.testing.assert_close(_only(flip_prob=1.0)(x), _normalise(x.flip(-1)))
    solarized = torch.where(x >= 128, 255 - x, x)
    torch.testing.assert_close(_only(solarize_prob=1.0)(x), _normalise(solarized))
    gray = (
        _only(grayscale_prob=1.0)(x) * torch.tensor(STD)[:, None, None]
        + torch.tensor(MEAN)[:, None, None]
    )
    torch.testing.assert_close(gray[0], gray[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(gray[1], gray[2], atol=1e-5, rtol=0)


def test_jitter_probability_is_about_point_eight() -> None:
    x = to_rgb_uint8(_rgb(16, 16))
    view = _only(jitter_prob=0.8)
    torch.manual_seed(0)
    changed = sum(not torch.allclose(view(x), _normalise(x), atol=1e-4) for _ in range(100))
    assert 65 <= changed <= 95


def test_blur_kernel_scales_with_crop() -> None:
    def kernel(crop: int) -> list[int]:
        view = build_ssl_view(crop_size=crop, mean=MEAN, std=STD, blur_prob=0.5)
        return next(
            list(t.transforms[0].kernel_size)
            for t in view.transforms
            if isinstance(t, v2.RandomApply) and isinstance(t.transforms[0], v2.GaussianBlur)
        )

    assert kernel(32) == [3, 3]
    assert kernel(96) == [9, 9]
    assert kernel(224) == [23, 23]
    no_blur = build_ssl_view(crop_size=32, mean=MEAN, std=STD)
    assert not any("GaussianBlur" in repr(t) for t in no_blur.transforms)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "1", "CMYK", "I;16"])
def test_any_pil_mode_becomes_rgb(mode: str) -> None:
    img = (
        _rgb(9, 7).convert(mode)
        if mode != "I;16"
        else Image.fromarray(np.full((9, 7), 65535, dtype=np.uint16))
    )
    x = to_rgb_uint8(img)
    assert x.shape == (3, 9, 7) and x.dtype == torch.uint8
    v1, _ = build_ssl_views(crop_size=8, mean=MEAN, std=STD)(img)
    assert v1.shape == (3, 8, 8)


def test_to_rgb_values() -> None:
    gray = Image.fromarray(np.full((4, 5), 100, dtype=np.uint8), "L")
    assert torch.equal(to_rgb_uint8(gray), torch.full((3, 4, 5), 100, dtype=torch.uint8))
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 7
    assert torch.equal(to_rgb_uint8(rgba)[:, 0, 0], torch.tensor([200, 0, 0], dtype=torch.uint8))
    assert torch.equal(
        to_rgb_uint8(torch.full((1, 2, 2), 0.5)), torch.full((3, 2, 2), 128, dtype=torch.uint8)
    )
    assert to_rgb_uint8(np.zeros((6, 3), dtype=np.uint8)).shape == (3, 6, 3)
    with pytest.raises(ValueError, match="channels"):
        to_rgb_uint8(torch.zeros(5, 4, 4))
    with pytest.raises(TypeError, match="list"):
        to_rgb_uint8([1, 2])


def test_eval_transform() -> None:
    small = to_rgb_uint8(_rgb(32, 32))
    out = build_eval_transform(image_size=32, mean=MEAN, std=STD)(small)
    torch.testing.assert_close(out, _normalise(small), atol=1e-5, rtol=0)
    big = build_eval_transform(image_size=224, mean=MEAN, std=STD)
    a = big(_rgb(300, 400).convert("L"))
    assert a.shape == (3, 224, 224)
    torch.testing.assert_close(a, big(_rgb(300, 400).convert("L")))


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"blur_prob_view1|blur_prob must be in \[0, 1\], got 1.5"):
        build_ssl_views(crop_size=32, mean=MEAN, std=STD, blur_prob_view1=1.5)
    with pytest.raises(ValueError, match="crop_size must be a positive int, got 0"):
        build_ssl_views(crop_size=0, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="3 values"):
        build_ssl_views(crop_size=8, mean=(0.5,), std=STD)
    with pytest.raises(ValueError, match="crop_scale"):
        build_ssl_view(crop_size=8, mean=MEAN, std=STD, crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="crop_pct"):
        build_eval_transform(image_size=8, mean=MEAN, std=STD, crop_pct=1.5)
