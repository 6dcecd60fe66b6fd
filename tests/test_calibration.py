"""calibrate_budget / set_budget: hitting the asked MAC fraction, the table, persistence, errors."""

from __future__ import annotations

import pytest
import timm
import torch

import timm_gated_ssl  # noqa: F401
from timm_gated_ssl import (
    InvalidBudgetError,
    NoGatesError,
    UncalibratedBudgetError,
    attach_gates,
    get_gate_mode,
    iter_gates,
)
from timm_gated_ssl.calibration import calibrate_budget, calibrated_budgets, set_budget
from timm_gated_ssl.compute import count_macs
from timm_gated_ssl.errors import CalibrationError


def tiny(**kwargs) -> torch.nn.Module:
    return timm.create_model("gated_resnet18_cifar", layers=(1, 1, 1, 1), budget=0.3, **kwargs)


def batches(n: int = 4, batch: int = 8, size: int = 16, seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, size, size, generator=gen) for _ in range(n)]


def fraction(model: torch.nn.Module, data: list[torch.Tensor]) -> float:
    counts = [count_macs(model, x) for x in data]
    return sum(float(c.gated.sum()) for c in counts) / sum(c.dense * len(c.gated) for c in counts)


@pytest.mark.parametrize("target", [0.15, 0.6])
def test_calibration_hits_target(target: float) -> None:
    model = tiny().train()
    data = batches()
    stats = model.bn1.running_mean.clone()
    result = calibrate_budget(model, data, target)
    assert abs(result.mac_fraction - target) <= 0.01
    assert abs(fraction(model, data) - target) <= 0.01  # what count_macs reports afterwards
    assert result.num_images == 32 and result.dense_macs == count_macs(model, data[0]).dense
    offsets = {float(g.logit_offset) for _, g in iter_gates(model)}
    assert offsets == {result.offset}
    # state restored
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(model.bn1.running_mean, stats) and get_gate_mode(model) == "dense"


def test_table_and_set_budget() -> None:
    model = tiny()
    data = batches()
    low = calibrate_budget(model, data, 0.2)
    high = calibrate_budget(model, data, 0.5)
    assert low.offset > high.offset
    assert calibrated_budgets(model) == {0.2: pytest.approx(low.offset), 0.5: pytest.approx(high.offset)}
    assert model.calibrated_budgets == {"0.2": low.offset, "0.5": high.offset}
    set_budget(model, 0.2)
    assert abs(fraction(model, data) - 0.2) <= 0.01
    set_budget(model, 0.5)
    assert abs(fraction(model, data) - 0.5) <= 0.01
    with pytest.raises(UncalibratedBudgetError, match=r"0\.3.*calibrated budgets: 0\.2, 0\.5"):
        set_budget(model, 0.3)
    with pytest.raises(InvalidBudgetError):
        set_budget(model, 0.0)
    uncalibrated = tiny()
    with pytest.raises(UncalibratedBudgetError, match="calibrated budgets: none"):
        set_budget(uncalibrated, 0.3)


def test_loader_formats_and_options() -> None:
    model = tiny()
    data = batches(n=2)
    as_tuples = [(x, torch.zeros(len(x))) for x in data]
    as_dicts = [{"image": x, "label": torch.zeros(len(x))} for x in data]
    a = calibrate_budget(model, as_tuples, 0.4, record=False)
    b = calibrate_budget(model, as_dicts, 0.4, record=False, cache=False)
    assert a.offset == b.offset and calibrated_budgets(model) == {}
    c = calibrate_budget(model, torch.utils.data.DataLoader(torch.cat(data), batch_size=8), 0.4, max_batches=1)
    assert c.num_images == 8


def test_errors() -> None:
    model = tiny()
    data = batches(n=1)
    for bad in (0.0, -0.1, 1.5, float("nan"), "0.3"):
        with pytest.raises(InvalidBudgetError, match="target"):
            calibrate_budget(model, data, bad)  # type: ignore[arg-type]
    with pytest.raises(CalibrationError, match="no images"):
        calibrate_budget(model, [], 0.3)
    with pytest.raises(CalibrationError, match="no images"):
        calibrate_budget(model, [], 0.3, cache=False)
    with pytest.raises(NoGatesError):
        calibrate_budget(timm.create_model("resnet10t"), data, 0.3)
    with pytest.raises(NoGatesError):
        set_budget(timm.create_model("resnet10t"), 0.3)
    before = [float(g.logit_offset) for _, g in iter_gates(model)]
    with pytest.raises(CalibrationError, match="unreachable.*never gated"):
        calibrate_budget(model, data, 0.01)
    assert [float(g.logit_offset) for _, g in iter_gates(model)] == before  # left untouched
    with pytest.raises(TypeError, match="cannot find images"):
        calibrate_budget(model, ["not an image"], 0.3)
    with pytest.raises(CalibrationError, match="within"):
        calibrate_budget(model, [data[0][:1]], 0.3, tol=1e-6, max_evaluations=12)


def test_round_trip_through_timm_save_for_hf(tmp_path) -> None:
    model = tiny()
    data = batches(n=2)
    r3 = calibrate_budget(model, data, 0.3)
    r5 = calibrate_budget(model, data, 0.5)
    set_budget(model, 0.3)
    timm.models.save_for_hf(model, tmp_path)  # plain timm export: the table rides in model_args
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    assert calibrated_budgets(loaded) == {0.3: pytest.approx(r3.offset), 0.5: pytest.approx(r5.offset)}
    assert {float(g.logit_offset) for _, g in iter_gates(loaded)} == {r3.offset}
    set_budget(loaded, 0.5)
    assert abs(fraction(loaded, data) - r5.mac_fraction) < 1e-9
    # a fresh build with a calibrated budget applies its offset
    fresh = tiny(calibrated_budgets=model.calibrated_budgets)
    assert {float(g.logit_offset) for _, g in iter_gates(fresh)} == {r3.offset}


def test_hook_gated_model_keeps_table_as_attribute() -> None:
    model = attach_gates(timm.create_model("resnet10t"), budget=0.3)
    data = batches(n=2, size=32)
    result = calibrate_budget(model, data, 0.35)
    assert model.calibrated_budgets == {"0.35": result.offset}
    assert "calibrated_budgets" not in getattr(model, "_model_args", {})  # resnet10t takes no such kwarg
    set_budget(model, 0.35)
    assert abs(fraction(model, data) - 0.35) <= 0.01


@pytest.mark.parametrize(("gate_type", "levels"), [("channel", 8), ("width", 2), ("width", 4), ("width", 8)])
def test_mac_floor_is_the_never_gated_cost_plus_the_narrowest_level(gate_type: str, levels: int) -> None:
    from timm_gated_ssl import mac_floor
    from timm_gated_ssl.compute.core import cost_table

    model = tiny(gate_type=gate_type, gate_levels=levels, channels=[8, 16, 32, 64])
    table = cost_table(model, (3, 16, 16))
    blocks = sum(b.dense for b in table.blocks)
    never_gated = table.dense + table.gate_macs - blocks  # stem, downsample convs, gates
    # channel gates all off: the blocks cost nothing; width gates: every block at 1/levels of its
    # MACs (both convs of a basic block lose the same fraction of one side; widths divide by levels)
    expected = (never_gated + (0 if gate_type == "channel" else blocks / levels)) / table.dense
    for _, gate in iter_gates(model):
        gate.logit_offset.fill_(0.5)  # a calibrated operating point, to be left as it was
    assert mac_floor(model, (3, 16, 16)) == pytest.approx(expected, rel=1e-9)
    assert all(float(g.logit_offset) == 0.5 for _, g in iter_gates(model))
    with pytest.raises(CalibrationError, match=f"uses {expected:.4f} of the dense MACs"):
        calibrate_budget(model, batches(n=1), expected - 0.03)  # the same floor, found on data
