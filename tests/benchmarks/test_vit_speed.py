"""benchmarks/vit_speed.py: what it times runs at the budget it names (MACs counted independently),
and the target is judged from the measured speed-ups (timing itself is never asserted)."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch

from tests.helpers import load_script

TINY = {"model": "vit_tiny_patch16_224", "size": 32, "levels": 3, "batches": (64,), "repeats": 1, "calib": 8}


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("benchmarks/vit_speed.py")


def test_the_variants_run_at_the_budget(bench: ModuleType) -> None:
    result = bench.measure({**TINY, "batches": (3,)}, budget=0.5, device=torch.device("cpu"), dtype="fp32")
    assert abs(result["gated_mac_fraction"] - 0.5) <= 0.05
    # torch's FlopCounterMode on the plain export and the plain model agrees with the export's own count
    assert result["fixed_flops_fraction"] == pytest.approx(result["fixed_mac_fraction"], abs=0.01)
    assert abs(result["fixed_mac_fraction"] - 0.5) <= 0.03 + 1e-9
    assert 1.0 <= result["level_groups_per_block"] <= TINY["levels"]
    assert all(heads <= 3 and units <= 768 for heads, units in result["fixed_widths"].values())
    timed = result["batch3"]
    assert timed["plain_images_per_s"] > 0 and timed["compact"]["speedup"] > 0 and timed["fixed"]["speedup"] > 0


def test_the_target_from_measured_speed_ups(bench: ModuleType) -> None:
    result = {"model": "vit_small_patch16_224", "budget": 0.5,
              "batch64": {"compact": {"speedup": 1.2}, "fixed": {"speedup": 1.61}}}
    found = {a["aim"].split(", ")[-1]: a for a in bench.aims(result)}
    assert found["compact: >= 1.5x the plain model's images/s"]["met"] is False
    assert found["fixed: >= 1.5x the plain model's images/s"] == {
        "aim": "vit_small_patch16_224 t_d 0.5, batch 64, fixed: >= 1.5x the plain model's images/s",
        "value": 1.61, "target": 1.5, "met": True}
    assert bench.aims({"model": "m", "budget": 0.5, "batch4": {}}) == []  # batch 64 not measured: no verdict


def test_tome_is_quoted_with_its_source(bench: ModuleType) -> None:
    line = bench.tome_line()
    assert "953 -> 1564 images/s (1.64x)" in line and "-2.11 points" in line and "github.com/facebookresearch/ToMe" in line
