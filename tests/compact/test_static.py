"""export_static: a plain narrower timm ResNet equal to the source with removed channels off."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from timm.models import save_for_hf
from timm.models.resnet import ResNet

from timm_gated_ssl import gate_mode, has_gates, iter_gates
from timm_gated_ssl.compact import export_static, load_static

from .common import gated_model, rel_err


def _force_masks(model: torch.nn.Module, rates: dict, min_rate: float = 0.0) -> None:
    """Make every gate emit the static keep-set for every sample (tests only)."""
    for name, gate in iter_gates(model):
        keep = [((r > 0) & (r >= min_rate)).float() for r in rates[name]]
        gate.compute_masks = lambda x, keep=keep: tuple(k.expand(x.shape[0], -1) for k in keep)


@pytest.mark.parametrize("arch", ["resnet18_cifar", "resnet50", "resnext50_32x4d", "resnetblur18"])
def test_static_matches_source_with_removed_channels_off(arch: str) -> None:
    model, size = gated_model(arch, never=0.4)
    calib = [torch.randn(4, 3, size, size) for _ in range(2)]
    result = export_static(model, calib)
    static = result.model
    assert isinstance(static, ResNet) and not has_gates(static)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in static.modules())
    # something was removed, and the kept widths are what the state dict holds
    assert sum(map(sum, result.widths.values())) < sum(map(sum, result.full_widths.values()))
    assert result.macs < result.dense_macs
    x = torch.randn(3, 3, size, size)
    _force_masks(model, result.firing_rates)
    with torch.no_grad(), gate_mode(model, "gated"):  # gated mode: the gated norm set
        ref = model(x)
        out = static(x)
    assert rel_err(out, ref) <= 1e-5


def test_threshold_keeps_fewer_channels() -> None:
    model, size = gated_model("resnet18_cifar")
    calib = [torch.randn(8, 3, size, size)]
    loose = export_static(model, calib)
    strict = export_static(model, calib, min_firing_rate=0.5)
    assert sum(map(sum, strict.widths.values())) < sum(map(sum, loose.widths.values()))
    _force_masks(model, strict.firing_rates, 0.5)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad(), gate_mode(model, "gated"):
        assert rel_err(strict.model(x), model(x)) <= 1e-5


@pytest.mark.parametrize("arch", ["resnet18_cifar", "resnext50_32x4d"])
def test_round_trip_through_timm_save_and_load(arch: str, tmp_path: Path) -> None:
    model, size = gated_model(arch, never=0.4)
    static = export_static(model, [torch.randn(4, 3, size, size)]).model
    save_for_hf(static, tmp_path, safe_serialization=True)
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert type(loaded) is type(static)
    a, b = static.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(static(x), loaded(x))
        assert torch.equal(load_static(str(tmp_path)).eval()(x), static(x))


def test_accuracy_report_and_errors() -> None:
    model, size = gated_model("resnet18_cifar")
    images = torch.randn(8, 3, size, size)
    with torch.no_grad(), gate_mode(model, "gated"):
        labels = model(images).argmax(-1)
    result = export_static(model, [images], eval_loader=[(images, labels)])
    assert result.accuracy_gated == 100.0 and result.accuracy_static == 100.0
    assert result.accuracy_change == 0.0
    assert result.summary()["num_calibration_images"] == 8
    with pytest.raises(ValueError, match="min_firing_rate"):
        export_static(model, [images], min_firing_rate=1.5)
    with pytest.raises(ValueError, match="no images"):
        export_static(model, [])


def test_accuracy_of_a_headless_encoder_is_knn() -> None:
    """An encoder (num_classes=0) outputs features: the export scores them by two-fold k-NN."""
    import timm
    import torch.nn.functional as F

    from tests.helpers import randomize_norms
    from timm_gated_ssl.compact.static_common import accuracy

    from .common import randomize_gates

    model = timm.create_model("gated_resnet18_cifar", num_classes=0, budget=0.5)
    randomize_gates(randomize_norms(model))
    model.eval()
    size = 16
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(12, 3, size, size, generator=gen)
    labels = torch.arange(12) % 3
    with torch.no_grad(), gate_mode(model, "gated"):
        feats = F.normalize(model(images), dim=-1)
    # by hand: each query's neighbours are the other half, weighted exp(sim / 0.07), k = 6 (the half)
    correct = 0
    for q in range(12):
        bank = [i for i in range(12) if i % 2 != q % 2]
        votes = torch.zeros(3)
        for i in bank:
            votes[labels[i]] += torch.exp(feats[q] @ feats[i] / 0.07)
        correct += int(votes.argmax() == labels[q])
    with gate_mode(model, "gated"):
        got = accuracy(model, [(images[:5], labels[:5]), (images[5:], labels[5:])], torch.device("cpu"))
    assert got == pytest.approx(100.0 * correct / 12)
    result = export_static(model, [images], eval_loader=[(images, labels)])
    assert result.accuracy_gated == pytest.approx(got)
    assert result.accuracy_static is not None and 0.0 <= result.accuracy_static <= 100.0
    with pytest.raises(ValueError, match="at least 4"):
        accuracy(model, [(images[:3], labels[:3])], torch.device("cpu"))


def test_export_static_names_the_families_it_supports() -> None:
    from timm_gated_ssl.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="ResNets and VisionTransformers, got Sequential"):
        export_static(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), [torch.randn(1, 3, 8, 8)])
