"""benchmarks/heldout_budget.py: the aims judge the trained gates on held-out crops (hand-made rows)."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.helpers import load_script


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("benchmarks/heldout_budget.py")


def _row(seed: int, held: float | None, calibrated: bool) -> dict:
    return {"seed": seed, "steps": 66, "mac_ratio_trained": 0.31, "mac_ratio_heldout_trained_gates": held,
            "budget_calibrated": calibrated, "mac_ratio_heldout_final": held or 0.3, "knn_dense": 80.0, "knn_gated": 79.5}


def test_aims_per_seed(bench: ModuleType) -> None:
    found = bench.aims([_row(0, 0.3499, False), _row(1, 0.2449, False), _row(2, None, True)])
    assert [a["met"] for a in found] == [True, False, False]  # 0.0499 off is in, 0.0551 off is out
    assert found[0]["value"] == 0.3499 and found[2]["value"] is None  # calibrated at the end: a miss


def test_table_marks_a_calibrated_run(bench: ModuleType) -> None:
    text = bench.table([_row(0, 0.312, False), _row(2, None, True)])
    assert "| 0 | 66 | 0.310 | 0.312 | no | 80.0 / 79.5 |" in text
    assert "| 2 | 66 | 0.310 | - | yes | 80.0 / 79.5 |" in text
