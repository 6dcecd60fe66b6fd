"""compact(model) on gated ViTs computes what the masked gated model computes, on kept heads/units only."""

from __future__ import annotations

import functools

import pytest
import timm
import torch
from timm.layers import Attention
from timm.models import vision_transformer as vt

from timm_gated_ssl import attach_gates, gate_mode, has_gates, iter_gates
from timm_gated_ssl.compact import BATCH_STRATEGIES, CompactVitBlock, compact
from timm_gated_ssl.errors import UnsupportedModelError

from .common import VIT_ARCHS, VIT_SMALL, gated_vit, randomize_gates, rel_err, spread_gates


@functools.cache
def _model(arch: str) -> tuple[torch.nn.Module, int]:
    return gated_vit(arch)  # shared by the tests that only read it


def _compact_masks(fast: torch.nn.Module) -> dict[str, tuple[torch.Tensor, ...]]:
    record: dict[str, tuple[torch.Tensor, ...]] = {}
    for name, module in fast.named_modules():
        if isinstance(module, CompactVitBlock):
            module.gate.register_forward_hook(lambda m, a, out, n=name: record.__setitem__(n, out))
    return record


def _check(model: torch.nn.Module, x: torch.Tensor, strategy: str) -> None:
    with torch.no_grad(), gate_mode(model, "gated"):
        ref = model(x)
    fast = compact(model, batch_strategy=strategy)
    with torch.no_grad():
        out = fast(x)
    assert rel_err(out, ref) <= 1e-5, strategy


@pytest.mark.parametrize("strategy", BATCH_STRATEGIES)
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("arch", list(VIT_ARCHS))
def test_compact_matches_masked_gated_model(arch: str, batch: int, strategy: str) -> None:
    model, size = _model(arch)
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        dense = model(x)
        with gate_mode(model, "gated"):
            ref = model(x)
    fast = compact(model, batch_strategy=strategy)
    masks = _compact_masks(fast)
    with torch.no_grad():
        out = fast(x)
    fractions, disagree = [], False
    for name, gate in iter_gates(model):
        for a, b in zip(gate.masks, masks[name]):
            assert torch.equal(a.bool(), b), name  # same decisions (none within rounding of 0 here)
            fractions.append(float(a.mean()))
            disagree |= bool((b != b[:1]).any())
    assert 0.1 < sum(fractions) / len(fractions) < 0.9  # gates really switch heads and units
    assert disagree or batch == 1  # samples differ: union has per-sample zeroing to do
    assert rel_err(ref, dense) > 1e-2  # gating changes the output (gated norms, masks)
    assert rel_err(out, ref) <= 1e-5


def test_compact_leaves_source_untouched_and_has_no_gates() -> None:
    model, _ = gated_vit("vit_qknorm_ls_reg")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = compact(model)
    assert isinstance(fast, vt.VisionTransformer) and not has_gates(fast) and not fast.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in fast.modules())
    assert not any(p.requires_grad for p in fast.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [type(b) for b in fast.blocks] == [CompactVitBlock] * VIT_SMALL["depth"]


@pytest.mark.parametrize("arch", ["vit", "vit_swiglu"])
def test_blocks_with_every_head_or_unit_off(arch: str) -> None:
    model, size = gated_vit(arch)
    heads = model.blocks[0].attn.num_heads
    with torch.no_grad():  # block 0: no head ever fires; block 1: no MLP unit ever fires
        model.blocks[0].dyn_gate.net.expand.weight[:heads] = 0
        model.blocks[1].dyn_gate.net.expand.weight[heads:] = 0
    x = torch.randn(4, 3, size, size)
    with torch.no_grad(), gate_mode(model, "gated"):
        model(x)
    assert not model.blocks[0].dyn_gate.masks[0].any() and model.blocks[0].dyn_gate.masks[1].any()
    assert not model.blocks[1].dyn_gate.masks[1].any() and model.blocks[1].dyn_gate.masks[0].any()
    for strategy in BATCH_STRATEGIES:
        _check(model, x, strategy)
        _check(model, x[:1], strategy)
    for offset in (1e6, -1e6):  # every gate off, then every gate on
        for _, gate in iter_gates(model):
            gate.logit_offset.fill_(offset)
        _check(model, x, "union")
        _check(model, x[:1], "union")


def test_some_samples_without_any_head() -> None:
    model, size = gated_vit("vit", seed=3)
    for _, gate in iter_gates(model):
        gate.logit_offset.fill_(1.0)  # few heads on: some samples have none, others some
    x = torch.randn(8, 3, size, size)
    with torch.no_grad(), gate_mode(model, "gated"):
        model(x)
    heads = [gate.masks[0].sum(1) for _, gate in iter_gates(model)]
    assert any(bool((h == 0).any() and (h > 0).any()) for h in heads)
    for strategy in BATCH_STRATEGIES:
        _check(model, x, strategy)


def test_attention_gate_rows_are_sliced() -> None:
    """timm's optional sigmoid gate on the attention output (``Attention(gated=True)``)."""
    model = timm.create_model("vit_tiny_patch16_224", num_classes=10, **VIT_SMALL)
    for block in model.blocks:
        block.attn = Attention(96, num_heads=4, qkv_bias=True, gated=True)
    model = attach_gates(model, budget=0.5).eval()
    randomize_gates(model)
    spread_gates(model, torch.randn(32, 3, 32, 32))
    _check(model, torch.randn(4, 3, 32, 32), "union")


def test_bad_input() -> None:
    model, _ = _model("vit")
    with pytest.raises(ValueError, match="per_sample"):
        compact(model, batch_strategy="bogus")  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError, match="attn_mask"):
        compact(model).blocks[0](torch.randn(1, 17, 96), is_causal=True)

    class OwnForward(vt.Block):
        def forward(self, x: torch.Tensor, **kwargs: object) -> torch.Tensor:
            return super().forward(x)

    other = attach_gates(timm.create_model("vit_tiny_patch16_224", block_fn=OwnForward, **VIT_SMALL), budget=0.5)
    with pytest.raises(UnsupportedModelError, match="Block itself"):
        compact(other)
