"""benchmarks/fixed_budget.py: the aims and tables are computed from the measured rows (hand-made here)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from tests.helpers import load_script


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("benchmarks/fixed_budget.py")


def _row(run: str, gate_type: str, budget: float, gated: float, fixed: float, fraction: float) -> dict[str, Any]:
    norm = {"knn_fixed": 70.0, "knn_gated_calibrated": 70.5, "mac_fraction": fraction}
    return {"run": run, "gate_type": gate_type, "budget": budget, "dense": {"linear_top1": 85.0},
            "gated": {"linear_top1": gated, "mac_fraction": budget + 0.002},
            "fixed": {"linear_top1": fixed, "mac_fraction": fraction}, "norm_batches_check": {"0": norm, "8": norm}}


def _timing(ratio: float) -> dict[str, Any]:
    return {"pytorch": {"dense_ms": 10.0, "ratio": ratio}, "onnxruntime": {"dense_ms": 8.0, "ratio": ratio - 0.1}}


def test_aims_from_rows(bench: ModuleType) -> None:
    accuracy = {"rows": [_row("width_td0.3", "width", 0.3, 84.4, 84.66, 0.296),
                         _row("width_td0.5", "width", 0.5, 85.0, 83.5, 0.50),
                         _row("dual_td0.3", "channel", 0.3, 83.0, 83.1, 0.34)]}
    latency = {"results": [{"model": "resnet18 (width gates)", "img_size": 224, "mac_fraction": 0.3, "batch1": _timing(0.6),
                            "batch64": _timing(0.5)},
                           {"model": "cifar_stem", "img_size": 28, "mac_fraction": 0.3, "batch1": _timing(0.9),
                            "batch64": _timing(0.9)}]}
    found = {a["aim"]: a for a in bench.aims(accuracy, latency)}
    gap3 = found["width fixed-budget linear >= dynamic gated - 1.0 at t_d 0.3"]
    assert gap3["value"] == 0.26 and gap3["met"]
    gap5 = found["width fixed-budget linear >= dynamic gated - 1.0 at t_d 0.5"]
    assert gap5["value"] == -1.5 and not gap5["met"]
    assert not found["channel fixed-budget MAC fraction within 0.03 of t_d 0.3"]["met"]  # 0.34
    assert found["width fixed-budget MAC fraction within 0.03 of t_d 0.3"]["met"]
    assert not any("channel fixed-budget linear" in a for a in found)  # the accuracy aim is the width gates'
    onnx = found["resnet18 (width gates) 224 px, batch 64, onnxruntime: fixed / dense latency <= 0.45"]
    torch_aim = found["resnet18 (width gates) 224 px, batch 64, pytorch: fixed / dense latency <= 0.45"]
    assert (onnx["value"], onnx["met"], torch_aim["value"], torch_aim["met"]) == (0.4, True, 0.5, False)
    assert len(found) == 7  # no latency aim from the CIFAR-stem model
    table = bench.latency_table(latency)
    assert "| resnet18 (width gates) | 224 | 0.300 | 64 | 10.00 | 0.500 | 8.00 | 0.400 |" in table
    assert "| width_td0.5 | width | 0.5 | 85.00 | 85.00 | 83.50 | -1.50 |" in bench.accuracy_table(accuracy)


def test_an_aim_without_its_run_is_listed_as_not_measured(bench: ModuleType) -> None:
    accuracy = {"rows": [_row("width_td0.3_s2", "width", 0.3, 84.8, 85.06, 0.296)]}
    found = {a["aim"]: a for a in bench.aims(accuracy, None)}
    missing = found["width fixed-budget linear >= dynamic gated - 1.0 at t_d 0.5"]
    assert missing["met"] is None and missing["value"] is None and "t_d 0.5" in missing["missing"]
    assert found["width fixed-budget linear >= dynamic gated - 1.0 at t_d 0.3"]["met"]
    assert "| width fixed-budget linear >= dynamic gated - 1.0 at t_d 0.5 | - | not measured |" in bench.aims_table(
        list(found.values()))



def test_published_accuracy_rows_are_kept_beside_new_ones(bench: ModuleType) -> None:
    old = {"rows": [_row("width_td0.3_s2", "width", 0.3, 84.8, 85.1, 0.296),
                    _row("width_td0.5", "width", 0.5, 84.0, 83.0, 0.5)], "command": "python old"}
    new = {"rows": [{**_row("width_td0.5", "width", 0.5, 85.0, 84.8, 0.49), "command": "python new"}]}
    merged = bench.merge_rows(new, old)
    assert [(r["run"], r["command"]) for r in merged["rows"]] == [("width_td0.3_s2", "python old"),
                                                                  ("width_td0.5", "python new")]
    assert merged["rows"][1]["fixed"]["linear_top1"] == 84.8  # the new measurement replaces the old one
    assert bench.merge_rows(None, old) is old and bench.merge_rows(new, None) is new
