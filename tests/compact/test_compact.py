"""compact(model) computes what the masked gated model computes, on the kept channels only."""

from __future__ import annotations

import pytest
import torch

from timm_gated_ssl import gate_mode, has_gates, iter_gates
from timm_gated_ssl.compact import CompactBasicBlock, CompactBottleneck, compact
from timm_gated_ssl.errors import NoGatesError

from .common import ARCHS, gated_model, rel_err


def _compact_masks(fast: torch.nn.Module) -> dict[str, tuple[torch.Tensor, ...]]:
    record: dict[str, tuple[torch.Tensor, ...]] = {}
    for name, module in fast.named_modules():
        if isinstance(module, (CompactBasicBlock, CompactBottleneck)):
            module.gate.register_forward_hook(lambda m, a, out, n=name: record.__setitem__(n, out))
    return record


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("batch", [1, 4])
def test_compact_matches_masked_gated_model(arch: str, batch: int) -> None:
    model, size = gated_model(arch)
    fast = compact(model)
    masks = _compact_masks(fast)
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad(), gate_mode(model, "gated"):
        ref = model(x)
    out = fast(x)
    # same decisions first (a logit within float rounding of 0 could flip; none should here)
    fractions = []
    for name, gate in iter_gates(model):
        for a, b in zip(gate.masks, masks[name]):
            assert torch.equal(a.bool(), b), name
            fractions.append(float(a.mean()))
    assert 0.1 < sum(fractions) / len(fractions) < 0.9  # gates really switch channels
    assert rel_err(out, ref) <= 1e-5


@pytest.mark.parametrize("strategy", ["per_sample", "group"])
@pytest.mark.parametrize("arch", ["resnet18_cifar", "resnext50_32x4d"])
def test_batch_strategies_agree(arch: str, strategy: str) -> None:
    model, size = gated_model(arch)
    x = torch.randn(3, 3, size, size)
    with torch.no_grad(), gate_mode(model, "gated"):
        ref = model(x)
    assert rel_err(compact(model, batch_strategy=strategy)(x), ref) <= 1e-5


def test_compact_leaves_source_untouched_and_has_no_gates() -> None:
    model, _size = gated_model("resnet50")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = compact(model)
    assert not has_gates(fast) and not fast.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in fast.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sum(isinstance(m, CompactBottleneck) for m in fast.modules()) == 5


def test_all_channels_off_and_all_on() -> None:
    model, size = gated_model("resnet50")
    x = torch.randn(2, 3, size, size)
    for offset in (1e6, -1e6):  # every gate off, then every gate on
        for _, gate in iter_gates(model):
            gate.logit_offset.fill_(offset)
        with torch.no_grad(), gate_mode(model, "gated"):
            ref = model(x)
        fast = compact(model)
        assert rel_err(fast(x[:1]), ref[:1]) <= 1e-5
        assert rel_err(fast(x), ref) <= 1e-5


def test_bad_input() -> None:
    import timm

    with pytest.raises(NoGatesError):
        compact(timm.create_model("resnet18"))
    model, _ = gated_model("resnet18")
    with pytest.raises(ValueError, match="union"):
        compact(model, batch_strategy="bogus")  # type: ignore[arg-type]


def test_grouped_conv_runs_narrower_than_full_width() -> None:
    """ResNeXt: the grouped conv2 runs on padded equal groups, fewer channels than the full width."""
    from timm_gated_ssl.compact.sliced_conv import SlicedConv

    model, size = gated_model("resnext50_32x4d")
    fast = compact(model)
    seen: list[tuple[int, int]] = []
    for module in fast.modules():
        if isinstance(module, SlicedConv):
            full = module.weight.shape[0]
            module.register_forward_hook(lambda m, a, out, full=full: seen.append((a[1].numel(), full)))
    fast(torch.randn(1, 3, size, size))
    assert len(seen) == 4
    assert all(rows <= full for rows, full in seen)
    assert sum(r for r, _ in seen) < sum(f for _, f in seen)


def test_gate_decides_in_float32_under_autocast() -> None:
    """Under bf16 autocast the gate still decides in float32 (same masks), and the block runs."""
    from timm_gated_ssl.compact import CompactGate

    model, size = gated_model("resnet18_cifar")
    fast = compact(model)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, size, size, generator=gen)
    gate = next(m for m in fast.modules() if isinstance(m, CompactGate))
    h = torch.randn(2, gate.w1t.shape[0], 8, 8, generator=gen)
    with torch.no_grad():
        ref = gate(h)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = gate(h)
            out = fast(x)
    assert all(torch.equal(a, b) for a, b in zip(ref, got))
    assert out.dtype == torch.bfloat16 and bool(out.isfinite().all())
    assert rel_err(out.float(), fast(x)) < 0.1
