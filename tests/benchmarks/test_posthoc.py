"""benchmarks/posthoc.py: aims and kept rows computed from hand-made rows."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.helpers import load_script


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("benchmarks/posthoc.py")


def _row(run: str, dense: float, gated: float | None = None, mac: float = 0.0, budget: float | None = 0.3) -> dict[str, Any]:
    return {"run": run, "steps": 30, "budget": budget, "dense": {"linear_top1": dense, "mac_fraction": 1.0},
            "gated": None if gated is None else {"linear_top1": gated, "mac_fraction": mac}, "gated_calibrated": None}


def test_aims_from_rows(bench: ModuleType) -> None:
    rows = {"init_vanilla": _row("init_vanilla", 83.5, budget=None),
            "posthoc_td0.3": _row("posthoc_td0.3", 82.9, 82.0, 0.34),
            "distill_width_td0.3": _row("distill_width_td0.3", 83.5, 83.0, 0.29),
            "distill_width_td0.3_s1": _row("distill_width_td0.3_s1", 83.5, 82.4, 0.32),
            "scratch_width_td0.3": _row("scratch_width_td0.3", 82.0, 82.5, 0.30)}
    found = {a["aim"]: (a["value"], a["met"]) for a in bench.aims(rows)}
    assert found["posthoc_td0.3: gated - init dense (linear)"] == (-1.5, False)
    assert found["posthoc_td0.3: dense - init dense (linear)"] == (-0.6, False)  # not frozen: within 0.5
    assert found["posthoc_td0.3: MAC fraction before calibration - t_d"] == (0.04, False)
    assert "posthoc_td0.3: gated - scratch_td0.3 gated at equal total steps (linear)" not in found  # no such run
    assert found["distill_width_td0.3: gated - init dense (linear)"] == (-0.5, True)
    assert found["distill_width_td0.3: dense - init dense (linear)"] == (0.0, True)  # frozen: unchanged
    assert found["distill_width_td0.3_s1: MAC fraction before calibration - t_d"] == (0.02, True)
    assert found["distill_width_td0.3: gated - scratch_width_td0.3 gated at equal total steps (linear)"] == (0.5, True)
    assert found["distill_width_td0.3_s1: gated - scratch_width_td0.3 gated at equal total steps (linear)"] == (-0.1, False)


def test_schedule_a_and_b_aims_against_hand_computed_values(bench: ModuleType) -> None:
    rows = {"init_vanilla": _row("init_vanilla", 84.0, budget=None),
            "posthoc_td0.3": _row("posthoc_td0.3", 83.7, 83.2, 0.335),
            "frozen_td0.5": _row("frozen_td0.5", 84.0, 82.5, 0.49, budget=0.5),
            "frozen_td0.3": _row("frozen_td0.3", 83.9, 83.0, 0.31),
            "scratch_td0.3": _row("scratch_td0.3", 83.0, 81.9, 0.29)}
    found = {a["aim"]: a for a in bench.aims(rows)}
    gap = found["posthoc_td0.3: gated - init dense (linear)"]
    assert gap["value"] == -0.8 and gap["met"]  # 83.2 - 84.0
    drift = found["posthoc_td0.3: dense - init dense (linear)"]
    assert drift["value"] == -0.3 and drift["met"]
    mac = found["posthoc_td0.3: MAC fraction before calibration - t_d"]
    assert mac["value"] == 0.035 and not mac["met"]  # 0.335 is 0.035 over 0.3
    equal = found["posthoc_td0.3: gated - scratch_td0.3 gated at equal total steps (linear)"]
    assert equal["value"] == 1.3 and equal["met"]
    # a frozen dense mode must be the init's exactly: -0.1 is within the co-training margin, not here
    assert found["frozen_td0.3: dense - init dense (linear)"]["value"] == -0.1
    assert not found["frozen_td0.3: dense - init dense (linear)"]["met"]
    assert found["frozen_td0.5: dense - init dense (linear)"]["met"]  # 84.0 == 84.0
    assert not found["frozen_td0.5: gated - init dense (linear)"]["met"]  # -1.5
    assert "frozen_td0.5: gated - scratch_td0.3 gated at equal total steps (linear)" not in found  # t_d 0.3 only
    assert len(found) == 4 + 4 + 3


def test_supervised_runs_are_judged_against_their_own_init(bench: ModuleType) -> None:
    rows = {"init_vanilla": _row("init_vanilla", 83.5, budget=None),
            "init_supervised": _row("init_supervised", 88.0, budget=None),
            "sup_distill_width_td0.3": _row("sup_distill_width_td0.3", 88.0, 87.5, 0.3),
            "scratch_width_td0.3": _row("scratch_width_td0.3", 82.0, 82.5, 0.30)}
    found = {a["aim"]: a["value"] for a in bench.aims(rows)}
    assert found == {"sup_distill_width_td0.3: gated - init dense (linear)": -0.5,
                     "sup_distill_width_td0.3: dense - init dense (linear)": 0.0,
                     "sup_distill_width_td0.3: MAC fraction before calibration - t_d": 0.0}  # no scratch pair


def test_seeds_and_unknown_runs(bench: ModuleType) -> None:
    sizes, args, seed = bench.spec("distill_width_td0.3_s2")
    assert seed == 2 and "--freeze_dense" in args and sizes == bench.POSTHOC_STEPS
    cmd = bench.train_command("distill_width_td0.3_s2", Path("out"))
    assert cmd[cmd.index("--seed") + 1] == "2" and cmd[cmd.index("--init_from") + 1] == str(Path("out") / "init_vanilla")
    with pytest.raises(SystemExit, match="unknown run 'distill_td0.7'"):
        bench.spec("distill_td0.7")


def test_published_rows_are_kept_only_beside_the_same_init(bench: ModuleType, tmp_path: Path) -> None:
    init = _row("init_vanilla", 83.14, budget=None)
    earlier = {"runs": [init, _row("frozen_td0.3", 83.14, 74.9, 0.46)], "commands": {"frozen_td0.3": "cmd"}}
    path = tmp_path / "posthoc.json"
    path.write_text(json.dumps(earlier))
    rows, commands = bench.published(path, init)
    assert set(rows) == {"init_vanilla", "frozen_td0.3"} and commands == {"frozen_td0.3": "cmd"}
    assert bench.published(path, _row("init_vanilla", 83.55, budget=None)) == ({}, {})  # another init
    assert bench.published(tmp_path / "missing.json", init) == ({}, {})


def test_table_rows(bench: ModuleType) -> None:
    rows = {"init_vanilla": _row("init_vanilla", 83.5, budget=None),
            "distill_width_td0.3": _row("distill_width_td0.3", 83.5, 83.0, 0.29)}
    rows["distill_width_td0.3"]["gated"]["knn_top1"] = 73.8
    text = bench.table(rows, bench.aims(rows))
    assert "| init_vanilla | 30 | 83.50 | - | - | - | - | - | - |" in text
    assert "| distill_width_td0.3 | 30 | 83.50 | 83.00 | - | 73.80 | 0.2900 | - | - |" in text
    assert "| distill_width_td0.3: gated - init dense (linear) | -0.5 | >= -1.0 | yes |" in text
