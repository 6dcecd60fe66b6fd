"""export_at_budget: one plain timm model at a fixed fraction of the dense MACs.

Independent expectations: torch's FlopCounterMode on the plain models (never our cost tables),
the gated source run with every input forced to the kept channels, and BatchNorm statistics
recomputed from hooks on the norms' inputs.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import timm
import torch
from timm.models import save_for_hf
from timm.models.resnet import ResNet
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers import randomize_norms
from timm_gated_ssl import attach_gates, gate_mode, gate_offset, has_gates, iter_gates
from timm_gated_ssl.compact import export_at_budget, load_static
from timm_gated_ssl.errors import InvalidBudgetError
from timm_gated_ssl.gates.width import WidthGate

from .common import force_masks, gated_vit, randomize_gates, rel_err, spread_gates
from .test_compact_width import images

# small ResNets (one block per stage, narrow): BasicBlock, Bottleneck, the CIFAR stem
ARCHS: dict[str, tuple[str, dict]] = {
    "resnet18": ("resnet18", {"layers": (1, 1, 1, 1)}),
    "resnet50": ("resnet50", {"layers": (1, 1, 1, 1)}),
    "resnet18_cifar": ("resnet18_cifar", {"layers": (1, 1, 1, 1), "channels": [16, 32, 64, 128]}),
}
SIZE = 16


def _model(arch: str, gate_type: str = "width", *, seed: int = 0) -> nn.Module:
    """A gated model in eval mode with random norms and gates whose choices vary per input."""
    name, kwargs = ARCHS[arch]
    torch.manual_seed(seed)
    if arch == "resnet18_cifar":
        model = timm.create_model("gated_resnet18_cifar", num_classes=10, budget=0.3, gate_type=gate_type, **kwargs)
    else:
        model = attach_gates(timm.create_model(name, num_classes=10, **kwargs), budget=0.3, gate_type=gate_type)
    randomize_norms(model, seed=seed)
    randomize_gates(model, seed=seed)
    model.eval()
    return spread_gates(model, images(32, SIZE, seed=seed + 1))


def _conv_macs(model: nn.Module, size: int) -> int:
    """Convolution MACs per image, counted by torch (FLOPs / 2)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.randn(1, 3, size, size))
    return sum(v for op, v in counter.get_flop_counts()["Global"].items() if "convolution" in str(op)) // 2


def _data(size: int = SIZE, *, batches: int = 2, seed: int = 5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images(12, size, seed=seed + i), torch.arange(12) % 4) for i in range(batches)]


def _forced_equal(model: nn.Module, export, size: int) -> float:  # type: ignore[no-untyped-def]
    force_masks(model, {n: tuple(k.double() for k in ks) for n, ks in export.kept.items()})
    x = images(5, size, seed=11)
    with torch.no_grad(), gate_mode(model, "gated"):
        return rel_err(export.model(x), model(x))


# ------------------------------------------------------------------------------- ResNets
# a one-block-per-stage ResNet-50 spends 0.34 of its MACs outside the gated widths
@pytest.mark.parametrize(("arch", "budget"), [("resnet18", 0.3), ("resnet18", 0.5), ("resnet18_cifar", 0.3),
                                             ("resnet18_cifar", 0.5), ("resnet50", 0.5), ("resnet50", 0.7)])
def test_width_export_is_one_level_per_block_at_the_budget(arch: str, budget: float) -> None:
    model, size = _model(arch), SIZE
    export = export_at_budget(model, _data(), budget=budget)
    static = export.model
    assert isinstance(static, ResNet) and not has_gates(static)
    name, kwargs = ARCHS[arch]
    base = timm.create_model(name, num_classes=10, **kwargs)
    # counted by torch on the plain models, against the plain dense architecture
    assert export.macs == _conv_macs(static, size)
    assert export.dense_macs == _conv_macs(base, size)
    assert abs(export.macs / export.dense_macs - budget) <= 0.03
    for name, gate in iter_gates(model):
        assert isinstance(gate, WidthGate)
        kept = export.kept[name]
        levels = [gate.sizes[i].index(int(k.sum())) for i, k in enumerate(kept)]  # a level size...
        assert len(set(levels)) == 1  # ...the same level for every width of the block
        for k in kept:  # ...and a prefix
            assert bool(k[: int(k.sum())].all())
    assert _forced_equal(model, export, size) <= 1e-5


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_channel_export_keeps_the_most_used_channels(arch: str) -> None:
    model, size = _model(arch, "channel"), SIZE
    export = export_at_budget(model, _data(), budget=0.5)
    assert abs(export.mac_fraction - 0.5) <= 0.03
    assert export.macs == _conv_macs(export.model, size)
    for name, _ in iter_gates(model):
        for rate, kept in zip(export.firing_rates[name], export.kept[name]):
            if kept.any() and (~kept).any():  # every kept channel fires at least as often
                assert float(rate[kept].min()) >= float(rate[~kept].max()) - 1e-12
    assert _forced_equal(model, export, size) <= 1e-5


def test_the_usage_is_measured_at_the_calibrated_budget_and_the_source_is_untouched() -> None:
    model, size = _model("resnet18"), SIZE
    offset, data = float(gate_offset(model)), _data(size)
    model.train()
    low = export_at_budget(model, data, budget=0.3)
    high = export_at_budget(model, data, budget=0.6)
    assert model.training and float(gate_offset(model)) == offset
    assert low.gated_macs is not None and high.gated_macs is not None
    assert abs(low.gated_macs / low.dense_macs - 0.3) <= 0.01  # the calibrated gated mode's cost
    assert abs(high.gated_macs / high.dense_macs - 0.6) <= 0.01
    assert sum(map(sum, high.widths.values())) > sum(map(sum, low.widths.values()))
    assert low.num_calibration_images == 24


def test_norm_batches_reestimate_the_batchnorm_statistics_on_the_data() -> None:
    model = _model("resnet18_cifar")
    data = _data(batches=4)
    kept = export_at_budget(model, data, budget=0.5)
    fresh = export_at_budget(model, data, budget=0.5, norm_batches=3)
    assert fresh.widths == kept.widths
    # independent: the mean over 3 train-mode batches of each norm's per-batch input mean
    probe = copy.deepcopy(kept.model)
    means: dict[str, list[torch.Tensor]] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a, n=n: means.setdefault(n, []).append(a[0].mean((0, 2, 3))))
             for n, m in probe.named_modules() if isinstance(m, nn.BatchNorm2d)]
    probe.load_state_dict(fresh.model.state_dict())  # same weights; batch statistics in train mode
    probe.train()
    with torch.no_grad():
        for x, _ in data[:3]:
            probe(x)
    for h in hooks:
        h.remove()
    for name, m in fresh.model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            torch.testing.assert_close(m.running_mean, torch.stack(means[name]).mean(0), rtol=1e-4, atol=1e-5)
    assert not fresh.model.training
    before = {k: v for k, v in kept.model.state_dict().items() if "running" in k}
    assert any(not torch.equal(before[k], fresh.model.state_dict()[k]) for k in before)


def test_round_trip_through_timm_save_and_load(tmp_path: Path) -> None:
    model, size = _model("resnet18_cifar"), SIZE
    export = export_at_budget(model, _data(size), budget=0.3)
    save_for_hf(export.model, tmp_path / "fixed", safe_serialization=True)
    loaded = load_static(str(tmp_path / "fixed")).eval()
    x = images(3, size, seed=2)
    with torch.no_grad():
        assert rel_err(loaded(x), export.model(x)) <= 1e-6


def test_accuracy_is_reported_for_source_and_export() -> None:
    model, size = _model("resnet18_cifar"), SIZE
    export = export_at_budget(model, _data(size), budget=0.5, eval_loader=_data(size, seed=20))
    assert export.accuracy_gated is not None and export.accuracy_static is not None
    assert 0.0 <= export.accuracy_static <= 100.0


# ----------------------------------------------------------------------------------- ViTs
def test_vit_channel_export_at_the_budget() -> None:
    model, size = gated_vit("vit")
    export = export_at_budget(model, _data(size), budget=0.5, tol=0.05)
    assert abs(export.mac_fraction - 0.5) <= 0.05
    assert export.model.__class__.__name__ == "VisionTransformer" and not has_gates(export.model)
    assert _forced_equal(model, export, size) <= 1e-4


# --------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("budget", [0.0, 1.5, -0.1])
def test_budgets_outside_the_unit_interval_are_refused(budget: float) -> None:
    model, size = _model("resnet18_cifar"), SIZE
    with pytest.raises(InvalidBudgetError, match=r"\(0, 1\]"):
        export_at_budget(model, _data(size), budget=budget)


def test_a_budget_below_the_cheapest_export_names_the_valid_range() -> None:
    model, size = _model("resnet18_cifar"), SIZE
    with pytest.raises(InvalidBudgetError, match=r"below the cheapest .* valid budgets are \[0\.\d{3}, 1\]"):
        export_at_budget(model, _data(size), budget=0.05)


def test_units_too_coarse_for_the_tolerance_are_refused_with_the_reachable_costs() -> None:
    torch.manual_seed(0)
    model = attach_gates(timm.create_model("resnet18", num_classes=0, layers=(1, 1, 1, 1)), budget=0.5,
                         gate_type="width", levels=2).eval()
    spread_gates(model, images(32, SIZE, seed=1))  # two levels: each unit is half a block
    with pytest.raises(InvalidBudgetError, match=r"no fixed-budget export is within tol=0.001 .* valid budgets lie in"):
        export_at_budget(model, _data(), budget=0.7, tol=0.001)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tol": 0.0}, "tol must be in"), ({"norm_batches": -1}, "norm_batches must be"),
    ({"max_batches": 0}, "max_batches must be"),
])
def test_bad_options_are_refused(kwargs: dict, message: str) -> None:
    model, size = _model("resnet18_cifar"), SIZE
    with pytest.raises(ValueError, match=message):
        export_at_budget(model, _data(size), budget=0.3, **kwargs)
