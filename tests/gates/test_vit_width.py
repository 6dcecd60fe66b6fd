"""Width gates on ViTs: per input, a prefix of the heads and of the MLP hidden units per block."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

import timm_gated_ssl.models.vit  # noqa: F401  (registers the ViTs)
from tests.compact.common import VIT_SMALL, width_vit
from tests.compute.test_vit_macs import flop_macs, sliced_copy
from timm_gated_ssl import (
    BoundLoss,
    ComputeLoss,
    attach_gates,
    calibrate_budget,
    count_macs,
    gate_config,
    gate_masks,
    gate_mode,
    has_gates,
    iter_gates,
)
from timm_gated_ssl.gates import WidthGate


def _prefix_lengths(mask: torch.Tensor) -> torch.Tensor:
    """Length of each row's prefix; asserts the row is exactly ``[1] * s + [0] * (C - s)``."""
    lengths = mask.sum(dim=1).long()
    expected = (torch.arange(mask.shape[1])[None, :] < lengths[:, None]).to(mask.dtype)
    assert torch.equal(mask, expected), "a width-gate mask is not a 0/1 prefix"
    return lengths


@pytest.mark.parametrize("training", [True, False])
def test_vit_masks_are_prefixes_of_heads_and_units_at_one_level(training: bool) -> None:
    model, size = width_vit("vit_qknorm_ls_reg")
    model.train(training)
    with torch.no_grad(), gate_mode(model, "gated"):
        model(torch.randn(16, 3, size, size))
    distinct = 0
    for block, (heads, units) in gate_masks(model).items():
        gate = model.get_submodule(block).dyn_gate
        assert isinstance(gate, WidthGate) and gate.widths == (VIT_SMALL["num_heads"], 4 * VIT_SMALL["embed_dim"])
        assert gate.sizes == ((1, 2, 3, 4), (96, 192, 288, 384))
        head_level = [gate.sizes[0].index(int(s)) for s in _prefix_lengths(heads)]
        unit_level = [gate.sizes[1].index(int(s)) for s in _prefix_lengths(units)]
        assert head_level == unit_level  # one level per input and block, shared by both widths
        distinct = max(distinct, len(set(head_level)))
    assert distinct > 1  # the level really depends on the input


def test_registered_vit_takes_width_gates() -> None:
    for levels in (2, 3):
        model = timm.create_model("gated_vit_tiny_patch4_32", gate_type="width", gate_levels=levels, depth=2,
                                  num_classes=5)
        gates = [gate for _, gate in iter_gates(model)]
        assert len(gates) == 2 and all(isinstance(g, WidthGate) and g.pooling == "tokens" for g in gates)
        assert gate_config(model).gate_type == "width" and gate_config(model).levels == levels
        assert gates[0].sizes == {2: ((2, 3), (384, 768)), 3: ((1, 2, 3), (256, 512, 768))}[levels]
        x = torch.randn(2, 3, 32, 32)
        with gate_mode(model, "gated"):
            assert model(x).shape == (2, 5)
        assert model(x).shape == (2, 5)


def test_levels_that_do_not_fit_the_heads_are_refused_with_the_valid_range() -> None:
    with pytest.raises(ValueError, match=r"gate_levels=4 .*3 attention heads.* 2\.\.3"):
        timm.create_model("gated_vit_tiny_patch4_32", gate_type="width", gate_levels=4, depth=2)
    with pytest.raises(ValueError, match=r"gate_levels=8 .* 2\.\.3"):  # the default of 8 levels does not fit 3 heads
        timm.create_model("gated_vit_tiny_patch4_32", gate_type="width", depth=2)
    with pytest.raises(ValueError, match=">= 2"):
        timm.create_model("gated_vit_tiny_patch4_32", gate_type="width", gate_levels=1, depth=2)
    vit = timm.create_model("vit_tiny_patch16_224", **VIT_SMALL)  # 4 heads
    with pytest.raises(ValueError, match=r"block 'blocks\.0': gate_levels=5 .*4 attention heads.* 2\.\.4"):
        attach_gates(vit, budget=0.3, gate_type="width", levels=5)
    assert not has_gates(vit)  # nothing half-attached
    attach_gates(vit, budget=0.3, gate_type="width", levels=4)  # the largest that fits
    assert has_gates(vit)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_vit_width_macs_equal_a_physically_sliced_copy() -> None:
    model, size = width_vit("vit")
    for block in model.blocks:
        block.attn.fused_attn = False  # FlopCounterMode does not count CPU SDPA; bmm it counts
    x = torch.randn(4, 3, size, size)
    with torch.no_grad(), gate_mode(model, "gated"):
        gated_out = model(x)
    counted = count_macs(model, x, include_linear=True)
    gate_cost = sum(gate.net.macs for _, gate in iter_gates(model))
    assert len(set(counted.gated.tolist())) > 1  # the inputs chose different levels
    for i in range(x.shape[0]):
        sliced = sliced_copy(model, i)  # only sample i's kept heads and units, physically
        assert flop_macs(sliced, x[i : i + 1]) + gate_cost == counted.gated[i].item()
        torch.testing.assert_close(sliced(x[i : i + 1]), gated_out[i : i + 1], rtol=1e-4, atol=1e-5)


def test_budget_losses_and_calibration_reach_vit_width_gates() -> None:
    model, size = width_vit("vit")
    model.train()
    x = torch.randn(8, 3, size, size)
    with gate_mode(model, "gated"):
        model(x)
    loss = ComputeLoss(0.3)(model, x) + BoundLoss(0.3)(model, progress=0.0)
    loss.backward()
    assert all(g.net.expand.weight.grad is not None and g.net.expand.weight.grad.abs().sum() > 0
               for _, g in iter_gates(model))
    model.eval()
    images = torch.randn(32, 3, size, size, generator=torch.Generator().manual_seed(5))
    result = calibrate_budget(model, [images], 0.5, tol=0.05)
    assert abs(result.mac_fraction - 0.5) <= 0.05


def test_vit_width_gates_round_trip_through_local_dir(tmp_path: Path) -> None:
    model = timm.create_model("gated_vit_tiny_patch4_32", gate_type="width", gate_levels=3, depth=2).eval()
    timm.models.save_for_hf(model, tmp_path)
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert gate_config(loaded) == gate_config(model)
    assert all(isinstance(g, WidthGate) and g.levels == 3 for _, g in iter_gates(loaded))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), gate_mode(model, "gated"), gate_mode(loaded, "gated"):
        assert torch.equal(model(x), loaded(x))
