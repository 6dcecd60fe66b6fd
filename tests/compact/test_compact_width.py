"""compact(model) with width gates: inputs grouped by level, weight prefix views, exact at every batch size."""

from __future__ import annotations

import pytest
import timm
import torch

from tests.helpers import randomize_norms
from timm_gated_ssl import attach_gates, gate_mode, has_gates, iter_gates
from timm_gated_ssl.compact import (
    CompactWidthBasicBlock,
    CompactWidthBottleneck,
    compact,
    export_static,
)

from .common import rel_err, sharpen_width_gates, spread_gates

# BasicBlock, Bottleneck, grouped ResNeXt (whole groups), SE, blur-pool anti-aliasing, CIFAR stem
ARCHS = {
    "resnet18": ("resnet18", {"layers": (1, 1, 1, 1)}, 32),
    "resnet50": ("resnet50", {"layers": (1, 2, 1, 1)}, 32),
    "resnext50_32x4d": ("resnext50_32x4d", {"layers": (1, 1, 1, 1)}, 32),
    "seresnet18": ("seresnet18", {"layers": (1, 1, 1, 1)}, 32),
    "resnetblur18": ("resnetblur18", {"layers": (1, 1, 1, 1)}, 32),
    "resnet18_cifar": ("gated_resnet18_cifar", {"layers": (1, 1, 1, 1)}, 16),
}


def width_model(arch: str, *, seed: int = 0) -> tuple[torch.nn.Module, int]:
    """A width-gated model in eval mode with random norms and gates whose level varies per input."""
    name, kwargs, size = ARCHS[arch]
    torch.manual_seed(seed)
    if name.startswith("gated_"):
        model = timm.create_model(name, num_classes=10, budget=0.3, gate_type="width", **kwargs)
    else:
        model = attach_gates(timm.create_model(name, num_classes=10, **kwargs), budget=0.3, gate_type="width")
    randomize_norms(model, seed=seed)
    sharpen_width_gates(model, seed=seed)
    model.eval()
    spread_gates(model, images(32, size, seed=seed + 1))
    return model, size


def images(batch: int, size: int, *, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=gen) * (torch.rand(batch, 1, 1, 1, generator=gen) * 2 + 0.2)


CASES = [(arch, batch) for arch in ARCHS for batch in (1, 8)] + [("resnet18", 64), ("resnet50", 64)]


@pytest.mark.parametrize("arch,batch", CASES)
def test_compact_matches_masked_width_gated_model(arch: str, batch: int) -> None:
    model, size = width_model(arch)
    fast = compact(model)
    assert sum(isinstance(m, (CompactWidthBasicBlock, CompactWidthBottleneck)) for m in fast.modules()) == len(
        list(iter_gates(model))
    )
    x = images(batch, size, seed=7)
    with torch.no_grad(), gate_mode(model, "gated"):
        ref = model(x)
    levels = {name: gate.masks[0].sum(1) for name, gate in iter_gates(model)}
    with torch.no_grad():
        out = fast(x)
    assert rel_err(out, ref) <= 1e-5
    if batch > 1:  # images of a batch really choose different levels, and not all the full width
        assert max(int(v.unique().numel()) for v in levels.values()) > 1
    fraction = sum(float(v.sum()) for v in levels.values()) / sum(g.widths[0] * batch for _, g in iter_gates(model))
    assert fraction < 0.95


def test_compact_levels_equal_the_gates_and_run_on_views() -> None:
    model, size = width_model("resnet50")
    fast = compact(model)
    x = images(16, size, seed=3)
    recorded: dict[str, torch.Tensor] = {}
    for name, module in fast.named_modules():
        if isinstance(module, CompactWidthBottleneck):
            module.gate.register_forward_hook(lambda m, a, out, n=name: recorded.__setitem__(n, out))
    # every weight a level uses is a view of the stored weight: no copy made per call
    pointers: list[bool] = []
    original = torch.nn.functional.conv2d

    def spy(inp, weight, *args, **kwargs):  # type: ignore[no-untyped-def]
        stored = [*fast.buffers(), *fast.parameters()]
        pointers.append(any(weight.untyped_storage().data_ptr() == s.untyped_storage().data_ptr() for s in stored))
        return original(inp, weight, *args, **kwargs)

    torch.nn.functional.conv2d = spy
    try:
        with torch.no_grad():
            fast(x)
    finally:
        torch.nn.functional.conv2d = original
    with torch.no_grad(), gate_mode(model, "gated"):
        model(x)
    for name, gate in iter_gates(model):
        chosen = torch.tensor([gate.sizes[0].index(int(s)) for s in gate.masks[0].sum(1)])
        assert torch.equal(recorded[name], chosen), name
    assert pointers and all(pointers)


def test_compact_leaves_source_untouched() -> None:
    model, _ = width_model("resnet18")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = compact(model)
    assert not has_gates(fast) and not fast.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in fast.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_export_static_keeps_the_widest_prefix_used(arch: str) -> None:
    model, size = width_model(arch)
    calib = images(32, size, seed=5)
    export = export_static(model, [calib])
    with torch.no_grad(), gate_mode(model, "gated"):
        model(calib)
    for name, gate in iter_gates(model):
        widest = tuple(int(m.sum(1).max()) for m in gate.masks)
        assert export.widths[name] == widest, name
    # on an input that picks the widest level everywhere the static network equals the gated one
    with torch.no_grad():
        assert export.model(calib).shape == (32, 10)
    assert export.mac_fraction < 1.0
