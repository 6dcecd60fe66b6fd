"""benchmarks/latency_gpu.py runs end to end on the CPU (the check before a GPU run), with the
fixed-budget export among its variants at the budget it names."""

from __future__ import annotations

import pytest

from tests.helpers import load_script


@pytest.mark.parametrize("gate_type", ["channel", "width"])
def test_the_prepared_gpu_script_runs_here(gate_type: str) -> None:
    bench = load_script("benchmarks/latency_gpu.py")
    result = bench.bench("gated_resnet18_cifar", 16, 0.3, [2], 1, False, gate_type, "cpu")
    assert set(result["batch2"]) == {"baseline", "dense", "masked", "compact", "static", "fixed"}
    assert abs(result["mac_fraction_fixed"] - 0.3) <= 0.03
    assert abs(result["mac_fraction_calib"] - 0.3) <= 0.05
