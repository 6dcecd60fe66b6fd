"""ViT MAC accounting against torch's FlopCounterMode (2 FLOPs per MAC), dense and on physically
sliced copies built from one sample's masks."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from timm.layers import GluMlp, SwiGLU, SwiGLUPacked
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import timm_gated_ssl as tgs
import timm_gated_ssl.compute.vit
from timm_gated_ssl.compute import cost_table, count_macs, gated_macs

SMALL = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 4}
VARIANTS: dict[str, tuple[str, dict]] = {
    "vit_cls_p8_head": ("vit_tiny_patch16_224", dict(SMALL, num_classes=5)),
    "vit_avg_nocls_p4": (
        "vit_small_patch16_224",
        dict(SMALL, patch_size=4, embed_dim=96, num_heads=3, class_token=False, global_pool="avg"),
    ),
    "vit_reg_qknorm_24px": (
        "vit_base_patch16_224", dict(SMALL, img_size=24, reg_tokens=3, qk_norm=True, init_values=0.5)
    ),
    "deit_distilled_head": ("deit_tiny_distilled_patch16_224", dict(SMALL, num_classes=5)),
    "vit_swiglu": ("vit_base_patch16_224", dict(SMALL, mlp_layer=SwiGLU)),
    "vit_glu_packed": (
        "vit_tiny_patch16_224", dict(SMALL, mlp_layer=SwiGLUPacked, act_layer=nn.SiLU, mlp_ratio=2.5)
    ),
}


def make(name: str) -> tuple[nn.Module, int]:
    arch, kwargs = VARIANTS[name]
    kwargs = dict(kwargs)
    kwargs.setdefault("num_classes", 0)
    model = timm.create_model(arch, **kwargs).eval()
    for block in model.blocks:
        block.attn.fused_attn = False  # FlopCounterMode does not count CPU SDPA; bmm it counts
    return model, kwargs["img_size"]


def flop_macs(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    assert counter.get_total_flops() % 2 == 0
    return counter.get_total_flops() // 2


def spread_gates(model: nn.Module) -> None:
    with torch.no_grad():
        for _, gate in tgs.iter_gates(model):
            gate.net.expand.weight.mul_(20.0)
            gate.net.norm.running_mean.normal_()  # non-trivial eval statistics


def _keep(linear: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    weight = linear.weight
    if rows is not None:
        weight = weight[rows]
    if cols is not None:
        weight = weight[:, cols]
    bias = linear.bias
    if bias is not None and rows is not None:
        bias = bias[rows]
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
    return out


def sliced_copy(model: nn.Module, sample: int) -> nn.Module:
    """An ungated copy whose blocks physically keep only ``sample``'s active heads and units."""
    masks = {k: tuple(m[sample].bool() for m in v) for k, v in tgs.gate_masks(model).items()}
    twin = copy.deepcopy(model)
    for name, gate in list(tgs.iter_gates(twin)):
        block = twin.get_submodule(name)
        for key, norm in gate.norms.items():  # the gated pass runs with the gated norm copies
            parent, _, leaf = key.replace("__", ".").rpartition(".")
            setattr(block.get_submodule(parent) if parent else block, leaf, norm)
    tgs.detach_gates(twin)
    for name, (heads, hidden) in masks.items():
        attn, mlp = twin.get_submodule(name).attn, twin.get_submodule(name).mlp
        d, dim = attn.head_dim, attn.qkv.in_features
        channels = heads.repeat_interleave(d)
        attn.qkv = _keep(attn.qkv, rows=channels.repeat(3))
        attn.proj = _keep(attn.proj, cols=channels)
        attn.num_heads, attn.attn_dim = int(heads.sum()), int(channels.sum())
        if isinstance(mlp, SwiGLU):
            mlp.fc1_g, mlp.fc1_x = _keep(mlp.fc1_g, rows=hidden), _keep(mlp.fc1_x, rows=hidden)
        elif isinstance(mlp, GluMlp):
            mlp.fc1 = _keep(mlp.fc1, rows=hidden.repeat(2))
        else:
            mlp.fc1 = _keep(mlp.fc1, rows=hidden)
        mlp.fc2 = _keep(mlp.fc2, cols=hidden)
        assert attn.qkv.in_features == dim
    return twin


def head_macs(model: nn.Module) -> int:
    heads = [getattr(model, n, None) for n in ("head", "head_dist")]
    return sum(h.in_features * h.out_features for h in heads if isinstance(h, nn.Linear))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_dense_macs_equal_flop_counter(name: str) -> None:
    model, size = make(name)
    x = torch.randn(1, 3, size, size)
    expected = flop_macs(model, x)
    tgs.attach_gates(model, budget=0.5)
    assert flop_macs(model, x) == expected  # gates change nothing in dense mode
    assert count_macs(model, x, include_linear=True).dense == expected
    # default convention: every block matmul and the patch embedding, no classifier head
    assert count_macs(model, x).dense == expected - head_macs(model)
    for block in model.blocks:  # the fused SDPA path is counted the same
        block.attn.fused_attn = True
    assert count_macs(model, x, include_linear=True).dense == expected


@pytest.mark.parametrize("name", list(VARIANTS))
def test_a_plain_vit_counts_its_blocks(name: str) -> None:
    """Without gates (a timm model as users have it, or a fixed-budget export) the blocks' matrix
    products count as in the dense mode of a gated model: not the patch embedding alone."""
    model, size = make(name)
    x = torch.randn(1, 3, size, size)
    expected = flop_macs(model, x)
    assert count_macs(model, x).dense == expected - head_macs(model)
    assert count_macs(model, x, include_linear=True).dense == expected


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")  # a sample with no head on
@pytest.mark.parametrize("separate_bn", [True, False])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_gated_macs_equal_sliced_copy(name: str, separate_bn: bool) -> None:
    model, size = make(name)
    tgs.attach_gates(model, budget=0.5, separate_bn=separate_bn)
    spread_gates(model)
    x = torch.randn(4, 3, size, size)
    with tgs.gate_mode(model, "gated"), torch.no_grad():
        gated_out = model(x)  # eval: deterministic masks, the same count_macs draws
    density = torch.cat([m for ms in tgs.gate_masks(model).values() for m in ms], 1).mean()
    assert 0.05 < density < 0.95, "masks should be mixed for this test to mean something"
    result = count_macs(model, x, include_linear=True)
    no_head = count_macs(model, x)
    torch.testing.assert_close(no_head.gated, result.gated - head_macs(model), rtol=0, atol=0)
    gate_cost = sum(gate.net.macs for _, gate in tgs.iter_gates(model))
    assert result.gate_macs == gate_cost
    assert result.gated.shape == (4,) and len(set(result.gated.tolist())) > 1
    for i in range(x.shape[0]):
        sliced = sliced_copy(model, i)
        assert flop_macs(sliced, x[i:i + 1]) + gate_cost == result.gated[i].item()
        torch.testing.assert_close(sliced(x[i:i + 1]), gated_out[i:i + 1], rtol=1e-4, atol=1e-5)
    assert torch.all(result.ratio < 1)


def test_gate_cost_equals_flop_counter() -> None:
    model, size = make("vit_cls_p8_head")
    tgs.attach_gates(model, budget=0.5)
    x = torch.randn(1, 3, size, size)
    dense = flop_macs(model, x)
    with tgs.gate_mode(model, "gated"):  # masking multiplies, it does not remove matmuls
        assert flop_macs(model, x) - dense == count_macs(model, x).gate_macs


def test_all_off_sample_counts_only_patch_embed_and_gates() -> None:
    model, size = make("vit_cls_p8_head")
    tgs.attach_gates(model, budget=0.5)
    masks = {n: (torch.zeros(2, g.widths[0]), torch.zeros(2, g.widths[1])) for n, g in tgs.iter_gates(model)}
    table = cost_table(model, (3, size, size))
    embed = model.patch_embed.proj
    patches = (size // 8) ** 2
    expected = patches * embed.out_channels * embed.in_channels * 64 + table.gate_macs
    assert table.gated(masks).tolist() == [expected] * 2


def test_gated_macs_are_differentiable() -> None:
    model, size = make("vit_cls_p8_head")
    tgs.attach_gates(model, budget=0.5).train()
    x = torch.randn(4, 3, size, size)
    with tgs.gate_mode(model, "gated"):
        model(x)
    ratio = gated_macs(model, x) / cost_table(model, x).dense
    ratio.mean().backward()
    assert model.blocks[0].dyn_gate.net.expand.weight.grad.abs().sum() > 0


def test_vit_tiny_224_dense_total() -> None:
    """ViT-Ti/16 at 224 px: 1,253,491,200 MACs without the head (1.25 GMACs, as usually quoted)."""
    model = tgs.attach_gates(timm.create_model("vit_tiny_patch16_224", num_classes=0).eval(), budget=0.5)
    x = torch.randn(1, 3, 224, 224)
    assert count_macs(model, x).dense == 1_253_491_200
    for block in model.blocks:
        block.attn.fused_attn = False
    assert flop_macs(model, x) == 1_253_491_200


def test_budget_loss_moves_vit_ratio_toward_target() -> None:
    from timm_gated_ssl.budget import BudgetLoss, gated_param_groups

    model, size = make("vit_cls_p8_head")
    tgs.attach_gates(model, budget=0.2).train()
    groups = {g["name"]: g for g in gated_param_groups(model)}
    gate_weights = {id(p) for _, g in tgs.iter_gates(model) for p in g.net.parameters() if p.ndim > 1}
    assert {id(p) for p in groups["gates"]["params"]} == gate_weights
    optimizer = torch.optim.Adam([p for _, g in tgs.iter_gates(model) for p in g.parameters()], lr=0.05)
    loss_fn = BudgetLoss()  # the model's budget, 0.2
    ratios = []
    tgs.set_gate_mode(model, "gated")
    for _ in range(15):
        x = torch.randn(8, 3, size, size)
        model(x)
        out = loss_fn(model, x, progress=0.0)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        ratios.append(out.mac_ratio.item())
    assert abs(ratios[-1] - 0.2) < abs(ratios[0] - 0.2) - 0.1, ratios


def test_calibrate_budget_on_vit() -> None:
    from timm_gated_ssl.calibration import calibrate_budget, set_budget

    model, size = make("vit_cls_p8_head")
    tgs.attach_gates(model, budget=0.5)
    spread_gates(model)
    loader = [(torch.randn(8, 3, size, size), torch.zeros(8)) for _ in range(2)]
    images = torch.cat([b[0] for b in loader])
    for target in (0.3, 0.6):
        calibrate_budget(model, loader, target)
        assert abs(count_macs(model, images).mean_ratio - target) <= 0.01
    set_budget(model, 0.3)
    assert abs(count_macs(model, images).mean_ratio - 0.3) <= 0.01


def test_calibrated_registered_vit_round_trips(tmp_path) -> None:
    from timm.models import save_for_hf

    import timm_gated_ssl.models.vit  # noqa: F401
    from timm_gated_ssl.calibration import calibrate_budget, set_budget

    model = timm.create_model("gated_vit_tiny_patch4_32", depth=2, num_classes=0, budget=0.4).eval()
    spread_gates(model)
    images = torch.randn(16, 3, 32, 32)
    calibrate_budget(model, [images], 0.4)
    calibrate_budget(model, [images], 0.7)
    save_for_hf(model, tmp_path)
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert set(loaded.calibrated_budgets) == {"0.4", "0.7"}
    set_budget(loaded, 0.4)
    assert abs(count_macs(loaded, images).mean_ratio - 0.4) <= 0.01
