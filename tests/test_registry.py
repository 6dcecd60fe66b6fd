"""The one extension idiom: every gate type and block family is found by key, never by list order."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import timm
import torch

import timm_gated_ssl  # noqa: F401
from timm_gated_ssl import attach_gates, compact, count_macs, gate_mode, iter_gates
from timm_gated_ssl.attach import FAMILIES
from timm_gated_ssl.compact import STATIC_EXPORTERS
from timm_gated_ssl.compact.resnet import compact_resnet_block
from timm_gated_ssl.compact.runtime import COMPACT_BUILDERS
from timm_gated_ssl.compute import BLOCK_COSTS
from timm_gated_ssl.gates import GATE_CLASSES, GATE_TYPES, BlockGate, GateConfig, WidthGate
from timm_gated_ssl.registry import Registry, RegistryKeyError

CHANNELS = {"channels": [8, 16, 32, 64]}


def test_registry_refuses_a_key_twice_and_names_the_registered_ones() -> None:
    registry: Registry[int] = Registry("thing")
    registry.add("a", 1)
    assert registry.register("b")(2) == 2 and registry.keys() == ["a", "b"] and registry["b"] == 2
    with pytest.raises(ValueError, match="a thing is already registered under 'a'"):
        registry.add("a", 3)
    with pytest.raises(RegistryKeyError, match="no thing is registered under 'c'; registered: 'a', 'b'"):
        registry["c"]
    assert registry.remove("a") == 1 and "a" not in registry


def test_every_built_in_gate_type_and_family_is_registered_everywhere() -> None:
    assert GATE_TYPES == ("channel", "width")
    assert GATE_CLASSES["channel"] is BlockGate and GATE_CLASSES["width"] is WidthGate
    assert set(FAMILIES) == {"resnet", "vit"} == set(BLOCK_COSTS) == set(STATIC_EXPORTERS)
    for gate_type, cls in GATE_CLASSES.items():
        for family in cls.families or FAMILIES.keys():
            assert (gate_type, family) in COMPACT_BUILDERS


@pytest.mark.parametrize("gate_type", ["channel", "width"])
def test_attach_builds_the_registered_class_and_records_the_family(gate_type: str) -> None:
    model = timm.create_model("gated_resnet18_cifar", num_classes=0, gate_type=gate_type, **CHANNELS)
    gates = [gate for _, gate in iter_gates(model)]
    assert len(gates) == 8 and all(type(g) is GATE_CLASSES[gate_type] and g.family == "resnet" for g in gates)


class _HalfGate(BlockGate):
    """A new gate type: channel gates whose second half of every width is always off."""

    def compute_masks(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        masks = super().compute_masks(x)
        return tuple(torch.cat([m[:, : m.shape[1] // 2], torch.zeros_like(m[:, m.shape[1] // 2:])], 1)
                     for m in masks)


@pytest.fixture
def half_gate_type() -> Iterator[list[str]]:
    """Register ``half`` with its own compact builder (which records that it was used)."""
    used: list[str] = []

    def builder(block, gate, strategy):  # type: ignore[no-untyped-def]
        used.append(type(gate).__name__)
        return compact_resnet_block(block, gate, strategy)

    GATE_CLASSES.add("half", _HalfGate)
    COMPACT_BUILDERS.add(("half", "resnet"), builder)
    try:
        yield used
    finally:
        GATE_CLASSES.remove("half")
        COMPACT_BUILDERS.remove(("half", "resnet"))


def test_a_new_gate_type_plugs_in_at_one_place(half_gate_type: list[str]) -> None:
    """Registered after the channel builder (which would accept these blocks under list order),
    the new type's own builder is the one compact uses, and MACs count its masks."""
    torch.manual_seed(0)
    model = attach_gates(timm.create_model("resnet18", num_classes=0, **CHANNELS), budget=0.5,
                         gate_type="half").eval()
    assert {type(g) for _, g in iter_gates(model)} == {_HalfGate}
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), gate_mode(model, "gated"):
        expected = model(images)
    with torch.no_grad():
        got = compact(model)(images[:1])
    assert half_gate_type and set(half_gate_type) == {"_HalfGate"}
    torch.testing.assert_close(got, expected[:1], rtol=1e-4, atol=1e-4)
    for block in count_macs(model, images).blocks.values():  # at most half of every gated width
        assert float(block.gated.max()) <= block.dense / 2 + block.gate


def test_gate_config_accepts_exactly_the_registered_types(half_gate_type: list[str]) -> None:
    assert GateConfig(gate_type="half").gate_type == "half"
    with pytest.raises(ValueError, match="unknown gate_type 'slim'; valid gate types: channel, width, half"):
        GateConfig(gate_type="slim")
