"""compact(model) with width-gated ViTs: inputs grouped by level, head and unit prefixes run on weight views."""

from __future__ import annotations

import functools

import pytest
import timm
import torch
from timm.models import vision_transformer as vt

import timm_gated_ssl.models.vit  # noqa: F401  (registers the ViTs)
from tests.compute.test_vit_macs import flop_macs, sliced_copy
from timm_gated_ssl import attach_gates, gate_mode, has_gates, iter_gates
from timm_gated_ssl.compact import CompactVitWidthBlock, compact
from timm_gated_ssl.errors import UnsupportedModelError

from .common import VIT_ARCHS, VIT_SMALL, rel_err, spread_gates, width_vit


@functools.cache
def _model(arch: str) -> tuple[torch.nn.Module, int]:
    return width_vit(arch)  # shared by the tests that only read it


def _levels(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The level index of every input per block, from the masks of the last gated forward."""
    return {name: torch.tensor([gate.sizes[0].index(int(s)) for s in gate.masks[0].sum(1)])
            for name, gate in iter_gates(model)}


# class token, register tokens (+ qk_norm, layer scale), no class token with global_pool avg, at
# batch 1, 8 and 64; SwiGLU, GluMlp (packed SwiGLU) and shared norms at batch 1 and 8.
CASES = [(arch, batch) for arch in VIT_ARCHS for batch in (1, 8)] + [
    (arch, 64) for arch in ("vit", "vit_qknorm_ls_reg", "vit_avg_nocls")
]


@pytest.mark.parametrize("arch,batch", CASES)
def test_compact_matches_masked_width_gated_vit(arch: str, batch: int) -> None:
    model, size = _model(arch)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        dense = model(x)
        with gate_mode(model, "gated"):
            ref = model(x)
    levels = _levels(model)
    fast = compact(model)
    recorded: dict[str, torch.Tensor] = {}
    for name, module in fast.named_modules():
        if isinstance(module, CompactVitWidthBlock):
            module.gate.register_forward_hook(lambda m, a, out, n=name: recorded.__setitem__(n, out))
    with torch.no_grad():
        out = fast(x)
    assert [type(b) for b in fast.blocks] == [CompactVitWidthBlock] * VIT_SMALL["depth"]
    assert all(torch.equal(recorded[n], levels[n]) for n in levels)  # compact chose the gates' levels
    assert rel_err(out, ref) <= 1e-4
    assert rel_err(ref, dense) > 1e-2  # gating changes the output (gated norms, prefixes)
    if batch > 1:  # inputs of a batch really choose different levels, and not all the full width
        assert max(int(v.unique().numel()) for v in levels.values()) > 1
    full = VIT_SMALL["num_heads"]
    assert sum(float(model.get_submodule(n).dyn_gate.masks[0].sum()) for n in levels) < 0.95 * full * batch * len(levels)


def test_compact_runs_on_views_of_the_stored_weights() -> None:
    model, size = _model("vit_qknorm_ls_reg")
    fast = compact(model)
    stored = {t.untyped_storage().data_ptr() for t in (*fast.buffers(), *fast.parameters())}
    shared: list[bool] = []
    original = torch.nn.functional.linear

    def spy(inp, weight, *args, **kwargs):  # type: ignore[no-untyped-def]
        shared.append(weight.untyped_storage().data_ptr() in stored)
        return original(inp, weight, *args, **kwargs)

    torch.nn.functional.linear = spy
    try:
        with torch.no_grad():
            fast(torch.randn(16, 3, size, size))
    finally:
        torch.nn.functional.linear = original
    assert len(shared) > 4 * VIT_SMALL["depth"] and all(shared)  # no weight gathered or copied per call


@pytest.mark.parametrize("arch", ["vit", "vit_swiglu"])
def test_compact_macs_equal_a_physically_sliced_copy(arch: str) -> None:
    """At batch 1 compact runs exactly the matrix products of the network sliced to the input's level."""
    model, size = width_vit(arch)
    fast = compact(model)
    gate_cost = sum(gate.net.macs for _, gate in iter_gates(model))
    seen = set()
    for i in range(4):
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(i))
        with torch.no_grad(), gate_mode(model, "gated"):
            model(x)
        sliced = sliced_copy(model, 0)  # fused attention in both: the same attention count
        macs = flop_macs(fast, x)
        assert macs == flop_macs(sliced, x) + gate_cost
        seen.add(macs)
    assert len(seen) > 1  # different inputs ran different prefixes


def test_registered_width_vit_compacts() -> None:
    model = timm.create_model("gated_vit_tiny_patch4_32", gate_type="width", gate_levels=3, depth=2).eval()
    with torch.no_grad():
        for _, gate in iter_gates(model):
            gate.net.expand.weight.mul_(20.0)
    spread_gates(model, torch.randn(32, 3, 32, 32))
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad(), gate_mode(model, "gated"):
        ref = model(x)
    with torch.no_grad():
        assert rel_err(compact(model)(x), ref) <= 1e-4


def test_compact_leaves_source_untouched_and_refuses_what_it_cannot_run() -> None:
    model, _ = width_vit("vit_avg_nocls")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = compact(model)
    assert isinstance(fast, vt.VisionTransformer) and not has_gates(fast) and not fast.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in fast.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(NotImplementedError, match="attn_mask"):
        fast.blocks[0](torch.randn(1, 16, VIT_SMALL["embed_dim"]), is_causal=True)

    class OwnForward(vt.Block):
        def forward(self, x: torch.Tensor, **kwargs: object) -> torch.Tensor:
            return super().forward(x)

    other = attach_gates(timm.create_model("vit_tiny_patch16_224", block_fn=OwnForward, **VIT_SMALL), budget=0.5,
                         gate_type="width", levels=4)
    with pytest.raises(UnsupportedModelError, match="Block itself"):
        compact(other)
