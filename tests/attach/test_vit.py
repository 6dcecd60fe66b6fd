"""Gates on timm Vision Transformers: a sweep over small ViT/DeiT variants, both modes."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from timm.layers import SwiGLU, SwiGLUPacked
from timm.models import vision_transformer as vt
from torch import nn

import timm_gated_ssl as tgs
from timm_gated_ssl.attach.vit import SUPPORTED

SMALL = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 4}

VARIANTS: dict[str, tuple[str, dict]] = {
    "vit_cls_p8": ("vit_tiny_patch16_224", dict(SMALL)),
    "vit_avg_nocls_p4": (
        "vit_small_patch16_224",
        dict(SMALL, patch_size=4, embed_dim=96, num_heads=3, class_token=False, global_pool="avg"),
    ),
    "vit_reg_qknorm_ls_24px": (
        "vit_base_patch16_224",
        dict(SMALL, img_size=24, reg_tokens=2, qk_norm=True, init_values=0.5, num_heads=2),
    ),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", dict(SMALL, embed_dim=192, num_heads=3)),
    "vit_swiglu_map": ("vit_base_patch16_224", dict(SMALL, mlp_layer=SwiGLU, global_pool="map")),
    "vit_glu_packed": (
        "vit_tiny_patch16_224", dict(SMALL, mlp_layer=SwiGLUPacked, act_layer=nn.SiLU, mlp_ratio=2.5)
    ),
}


def make(name: str, **overrides) -> nn.Module:
    arch, kwargs = VARIANTS[name]
    return timm.create_model(arch, num_classes=5, **dict(kwargs, **overrides))


def images(n: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size)


def size_of(name: str) -> int:
    return VARIANTS[name][1]["img_size"]


def out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = model(x)
    return torch.cat(y, 1) if isinstance(y, tuple) else y  # distilled models return two heads in train


def gates_on_half(model: nn.Module) -> None:
    """Spread the gate logits so that masks differ per sample (fresh gates are ~all on)."""
    with torch.no_grad():
        for _, gate in tgs.iter_gates(model):
            gate.net.expand.weight.mul_(20.0)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_dense_equals_original_and_detach_restores(name: str) -> None:
    model = make(name)
    reference = copy.deepcopy(model)
    keys = list(model.state_dict())
    x = images(size=size_of(name))
    tgs.attach_gates(model, budget=0.5)
    assert any(k.endswith("dyn_gate.net.reduce.weight") for k in model.state_dict())
    for train in (False, True):
        model.train(train), reference.train(train)
        assert torch.equal(out(model, x), out(reference, x))
    model.eval()
    gates_on_half(model)
    with tgs.gate_mode(model, "gated"):
        assert not torch.equal(model(x), reference.eval()(x))
    tgs.detach_gates(model)
    assert list(model.state_dict()) == keys
    assert torch.equal(model(x), reference(x))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("name", list(VARIANTS))
def test_forward_backward_both_modes_and_gate_grads(name: str) -> None:
    model = tgs.attach_gates(make(name), budget=0.5).train()
    x = images(size=size_of(name))
    block = model.blocks[0]
    gate = block.dyn_gate
    for mode in ("dense", "gated"):
        model.zero_grad(set_to_none=True)
        with tgs.gate_mode(model, mode):
            y = out(model, x)
        assert torch.isfinite(y).all()
        y.square().mean().backward()
        gate_grads = [p.grad for p in gate.net.parameters()]
        if mode == "dense":
            assert all(g is None for g in gate_grads)
            assert all(p.grad is None for p in gate.norms.parameters())
            assert block.norm1.weight.grad is not None
        else:
            assert all(g is not None and torch.isfinite(g).all() for g in gate_grads)
            assert gate.net.expand.weight.grad.abs().sum() > 0
            # separate norms: the gated pass trains the gated copies, not the dense norms
            assert gate.norms["norm1"].weight.grad is not None and block.norm1.weight.grad is None
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    masks = tgs.gate_masks(model)
    assert set(masks) == {f"blocks.{i}" for i in range(len(model.blocks))}
    heads, hidden = masks["blocks.0"]
    assert heads.shape == (3, block.attn.num_heads) and hidden.shape == (3, block.mlp.fc2.in_features)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_eval_deterministic_train_stochastic_deepcopy(name: str) -> None:
    model = tgs.attach_gates(make(name), budget=0.5)
    gates_on_half(model)
    x = images(size=size_of(name))
    tgs.set_gate_mode(model, "gated")
    model.eval()
    a, b = model(x), model(x)
    assert torch.equal(a, b)
    twin = copy.deepcopy(model)
    assert torch.equal(twin(x), a)
    assert twin.blocks[0].dyn_gate is not model.blocks[0].dyn_gate
    tgs.set_gate_mode(twin, "dense")
    assert tgs.get_gate_mode(model) == "gated"  # the copy's hooks belong to the copy
    model.train()
    draws = []
    for _ in range(2):
        out(model, x)
        draws.append(torch.cat([m for ms in tgs.gate_masks(model).values() for m in ms], 1))
    assert not torch.equal(*draws)


@pytest.mark.parametrize("name", ["vit_cls_p8", "vit_reg_qknorm_ls_24px"])
def test_fused_attention_kept_and_matches_unfused(name: str) -> None:
    model = tgs.attach_gates(make(name), budget=0.5).eval()
    gates_on_half(model)
    assert all(b.attn.fused_attn for b in model.blocks), "SDPA must stay on"
    unfused = copy.deepcopy(model)
    for b in unfused.blocks:
        b.attn.fused_attn = False
    x = images(size=size_of(name))
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention
    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)
    with tgs.gate_mode(model, "gated"), tgs.gate_mode(unfused, "gated"):
        torch.nn.functional.scaled_dot_product_attention = spy
        try:
            fused_out = model(x)
        finally:
            torch.nn.functional.scaled_dot_product_attention = original
        masks = [m.clone() for ms in tgs.gate_masks(model).values() for m in ms]
        reference = unfused(x)
        unfused_masks = [m for ms in tgs.gate_masks(unfused).values() for m in ms]
        assert all(torch.equal(m, r) for m, r in zip(masks, unfused_masks))
    assert len(calls) == len(model.blocks)
    assert 0 < sum(m.sum() for m in masks) < sum(m.numel() for m in masks)
    torch.testing.assert_close(fused_out, reference, rtol=1e-5, atol=1e-5)


def test_off_heads_and_units_contribute_nothing() -> None:
    model = tgs.attach_gates(make("vit_cls_p8"), budget=0.5).eval()
    seen = {}
    for i, block in enumerate(model.blocks):
        block.dyn_gate.logit_offset.fill_(1e6)  # every gate off
        block.attn.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(("attn", i), o))
        block.mlp.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(("mlp", i), o))
    with tgs.gate_mode(model, "gated"):
        model(images())
    for i, block in enumerate(model.blocks):
        assert torch.equal(seen["attn", i], block.attn.proj.bias.expand_as(seen["attn", i]))
        assert torch.equal(seen["mlp", i], block.mlp.fc2.bias.expand_as(seen["mlp", i]))


def test_head_mask_covers_head_major_channels() -> None:
    """Masking head j zeroes exactly channels [j*hd, (j+1)*hd) of proj's input."""
    model = tgs.attach_gates(make("vit_cls_p8"), budget=0.5).eval()
    block = model.blocks[0]
    captured = {}
    block.attn.proj.register_forward_pre_hook(lambda m, a: captured.__setitem__("x", a[0]))
    block.dyn_gate.compute_masks = lambda x: (
        torch.tensor([[1.0, 0.0, 1.0, 0.0]]).expand(x.shape[0], -1),
        torch.ones(x.shape[0], block.mlp.fc2.in_features),
    )
    with tgs.gate_mode(model, "gated"):
        model(images())
    hd = block.attn.head_dim
    x = captured["x"]
    assert x[..., hd:2 * hd].abs().sum() == 0 and x[..., 3 * hd:].abs().sum() == 0
    assert x[..., :hd].abs().sum() > 0 and x[..., 2 * hd:3 * hd].abs().sum() > 0


def test_norms_per_mode() -> None:
    model = tgs.attach_gates(make("vit_reg_qknorm_ls_24px"), budget=0.5)
    norms = model.blocks[0].dyn_gate.norms
    assert set(norms) == {"norm1", "norm2", "attn__q_norm", "attn__k_norm"}
    shared = tgs.attach_gates(make("vit_cls_p8"), budget=0.5, separate_bn=False)
    assert len(shared.blocks[0].dyn_gate.norms) == 0
    model.eval()
    x = images(size=24)
    dense = model(x)
    with torch.no_grad():
        norms["norm1"].weight.mul_(3.0)
    assert torch.equal(model(x), dense)  # dense mode untouched by the gated copies
    with torch.no_grad():
        for _, gate in tgs.iter_gates(model):
            gate.logit_offset.fill_(-1e6)  # every gate on: only the norm copies differ
    with tgs.gate_mode(model, "gated"):
        assert not torch.allclose(model(x), dense)
    with torch.no_grad():
        norms["norm1"].weight.div_(3.0)
    with tgs.gate_mode(model, "gated"):
        torch.testing.assert_close(model(x), dense)


def test_gradient_checkpointing_records_masks_once() -> None:
    model = tgs.attach_gates(make("vit_cls_p8"), budget=0.5).train()
    model.set_grad_checkpointing(True)
    x = images()
    with tgs.gate_mode(model, "gated"):
        y = model(x)
        recorded = {k: tuple(m.clone() for m in v) for k, v in tgs.gate_masks(model).items()}
        y.sum().backward()
    after = tgs.gate_masks(model)
    assert all(torch.equal(a, b) for k in recorded for a, b in zip(recorded[k], after[k]))
    assert model.blocks[0].dyn_gate.net.expand.weight.grad is not None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"block_fn": vt.ResPostBlock}, "ResPostBlock"),
        ({"block_fn": vt.ParallelScalingBlock}, "ParallelScalingBlock"),
        ({"scale_attn_norm": True}, "scale_norm"),
        ({"scale_mlp_norm": True}, "hidden norm"),
    ],
)
def test_unsupported_vit_variants_raise_type_error(kwargs: dict, match: str) -> None:
    model = timm.create_model("vit_tiny_patch16_224", **dict(SMALL, **kwargs))
    with pytest.raises(TypeError, match=match) as info:
        tgs.attach_gates(model, budget=0.5)
    assert SUPPORTED in str(info.value)
    assert not tgs.has_gates(model)


def test_unsupported_model_lists_vit_family() -> None:
    with pytest.raises(TypeError, match="vit: timm Vision Transformer"):
        tgs.attach_gates(nn.Sequential(nn.Linear(2, 2)), budget=0.5)
