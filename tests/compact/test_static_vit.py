"""export_static on gated ViTs: a plain timm VisionTransformer with fewer heads and MLP units, equal to
the source with the removed ones off, that saves and loads through timm."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from timm.models import save_for_hf
from timm.models import vision_transformer as vt

from timm_gated_ssl import gate_mode, has_gates, iter_gates
from timm_gated_ssl.compact import export_static, load_static
from timm_gated_ssl.compact.static_vit import narrow_vit

from .common import VIT_SMALL, force_masks, gated_vit, randomize_gates, rel_err

SIZE = VIT_SMALL["img_size"]


def _calib(n: int = 2) -> list[torch.Tensor]:
    return [torch.randn(4, 3, SIZE, SIZE) for _ in range(n)]


def _silence_heads(model: torch.nn.Module, block: int) -> None:
    """No head of ``block`` ever fires (its head logits are -offset for every input)."""
    heads = model.blocks[block].attn.num_heads
    with torch.no_grad():
        model.blocks[block].dyn_gate.net.expand.weight[:heads] = 0


@pytest.mark.parametrize(
    "arch", ["vit", "vit_qknorm_ls_reg", "vit_avg_nocls", "vit_swiglu", "vit_glu_packed", "vit_shared_norms"]
)
def test_static_matches_source_with_removed_heads_and_units_off(arch: str) -> None:
    model, _ = gated_vit(arch, never=0.4)
    _silence_heads(model, 0)
    result = export_static(model, _calib())
    static = result.model
    assert type(static) is vt.VisionTransformer and not has_gates(static)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in static.modules())
    # block 0 keeps one (dead) head; units were removed everywhere; the modules are that narrow
    assert result.widths["blocks.0"][0] == 1
    for name, (heads, units) in result.widths.items():
        block = static.get_submodule(name)
        assert block.attn.num_heads == heads and block.mlp.fc2.in_features == units
        assert units < result.full_widths[name][1]
    assert result.macs < result.dense_macs and 0 < result.mac_fraction < 1
    x = torch.randn(3, 3, SIZE, SIZE)
    force_masks(model, result.firing_rates)
    with torch.no_grad(), gate_mode(model, "gated"):  # gated mode: the gated norm set
        ref = model(x)
        out = static(x)
    assert rel_err(out, ref) <= 1e-5


def test_threshold_keeps_fewer_heads_and_units() -> None:
    model, _ = gated_vit("vit_qknorm_ls_reg")
    calib = [torch.randn(8, 3, SIZE, SIZE)]
    loose = export_static(model, calib)
    strict = export_static(model, calib, min_firing_rate=0.5)
    assert sum(map(sum, strict.widths.values())) < sum(map(sum, loose.widths.values()))
    force_masks(model, strict.firing_rates, 0.5)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad(), gate_mode(model, "gated"):
        assert rel_err(strict.model(x), model(x)) <= 1e-5


def test_macs_count_like_the_gated_source() -> None:
    model, _ = gated_vit("vit_glu_packed")
    for _, gate in iter_gates(model):
        gate.logit_offset.fill_(-1e6)  # everything fires: the static model is the dense one
    full = export_static(model, _calib(1))
    assert full.widths == full.full_widths
    assert full.macs == full.dense_macs and full.gated_macs > full.dense_macs  # gates cost extra


@pytest.mark.parametrize("arch", ["vit_qknorm_ls_reg", "vit_avg_nocls", "vit_glu_packed"])
def test_round_trip_through_timm_save_and_load(arch: str, tmp_path: Path) -> None:
    model, _ = gated_vit(arch, never=0.4)
    _silence_heads(model, 1)
    static = export_static(model, _calib()).model
    save_for_hf(static, tmp_path, safe_serialization=True)
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert type(loaded) is type(static)
    a, b = static.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(static(x), loaded(x))
        assert torch.equal(load_static(str(tmp_path)).eval()(x), static(x))


def test_accuracy_report_and_errors() -> None:
    model, _ = gated_vit("vit")
    images = torch.randn(8, 3, SIZE, SIZE)
    with torch.no_grad(), gate_mode(model, "gated"):
        labels = model(images).argmax(-1)
    result = export_static(model, [images], eval_loader=[(images, labels)])
    with torch.no_grad():  # the static model runs every head/unit any image used: its own decisions
        agree = float((result.model(images).argmax(-1) == labels).float().mean()) * 100
    assert result.accuracy_gated == 100.0 and result.accuracy_static == pytest.approx(agree)
    assert result.accuracy_change == pytest.approx(agree - 100.0)
    assert result.summary()["widths"]["blocks.0"] == list(result.widths["blocks.0"])
    with pytest.raises(ValueError, match="min_firing_rate"):
        export_static(model, [images], min_firing_rate=-0.1)
    with pytest.raises(ValueError, match="no images"):
        export_static(model, [])
    with pytest.raises(ValueError, match="widths lists 2 blocks but the model has 12"):
        export_static(model, [images], base="vit_small_patch16_224", base_kwargs={"img_size": SIZE})
    with pytest.raises(ValueError, match="does not match the gated model"):
        small = {"img_size": SIZE, "patch_size": 8, "depth": 2}
        export_static(model, [images], base="vit_small_patch16_224", base_kwargs=small)
    with pytest.raises(ValueError, match=r"\[heads, hidden units\]"):
        narrow_vit(timm.create_model("vit_tiny_patch16_224", **VIT_SMALL), [[5, 10], [1, 1]])
    with pytest.raises(TypeError, match="VisionTransformer base"):
        timm.create_model("static_vit", base="resnet18", widths=[])
    gate = model.blocks[1].dyn_gate  # a block without a gate cannot be narrowed
    gate.remove_hooks(model.blocks[1])
    del model.blocks[1]._modules["dyn_gate"]
    with pytest.raises(TypeError, match=r"ungated: \['blocks.1'\]"):
        export_static(model, [images])


def test_registered_gated_vit_exports_from_its_plain_base(tmp_path: Path) -> None:
    """``gated_vit_tiny_patch4_32`` -> ``vit_tiny_patch4_32`` (32 px by its own default, gate kwargs dropped)."""
    model = timm.create_model("gated_vit_tiny_patch4_32", depth=2, budget=0.3).eval()
    randomize_gates(model)
    result = export_static(model, _calib(1))
    static = result.model
    save_for_hf(static, tmp_path)
    assert static.patch_embed.img_size == (32, 32)
    assert static.pretrained_cfg["architecture"] == "static_vit"
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(load_static(str(tmp_path)).eval()(x), static(x))
