"""benchmarks/finetune.py: the frozen probe and the fine-tunes read from the files the recipes write,
and the aims computed from them (hand-made values)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.helpers import load_script
from timm_gated_ssl.results import EvaluationResult, ModeEvaluation


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("benchmarks/finetune.py")


def test_probe_reads_the_uncalibrated_rows_of_an_evaluation(bench: ModuleType, tmp_path: Path) -> None:
    result = EvaluationResult(model_name="gated_resnet18_cifar", dataset="digits", entries=(
        ModeEvaluation("dense", budget=0.3, linear_top1=80.88, linear_top1_std=0.28, mac_fraction=1.0),
        ModeEvaluation("gated", budget=0.3, linear_top1=73.40, linear_top1_std=0.71, mac_fraction=0.309),
        ModeEvaluation("gated", budget=0.5, linear_top1=79.0, linear_top1_std=0.5, mac_fraction=0.5, calibrated=True),
    ))
    path = tmp_path / "results.json"
    path.write_text(json.dumps(result.to_dict()))
    probe = bench.probe_of(path)
    assert probe == {"dense": {"top1": 80.88, "std": 0.28, "mac_fraction": 1.0},
                     "gated": {"top1": 73.40, "std": 0.71, "mac_fraction": 0.309}}


def test_finetuned_reads_the_heads_of_metrics(bench: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"  # the keys recipes/finetune.py writes (linear mode, 3 seeds)
    path.write_text(json.dumps({"mode": "linear", "top1_dense": 81.1, "top1_dense_std": 0.4, "mac_fraction_dense": 1.0,
                                "top1_gated": 73.7, "top1_gated_std": 0.9, "mac_fraction_gated": 0.31,
                                "top1_gated_t0.5": 78.0, "top1_gated_t0.5_std": 0.2, "mac_fraction_gated_t0.5": 0.5}))
    assert bench.finetuned_of(path) == {"dense": {"top1": 81.1, "std": 0.4, "mac_fraction": 1.0},
                                        "gated": {"top1": 73.7, "std": 0.9, "mac_fraction": 0.31}}


def _row() -> dict[str, Any]:
    run = {"steps": 10, "train_seconds": 60.0, "seconds": 70.0, "load_average_at_start": 1.5, "command": "x"}
    return {"checkpoint": "quickstart", "probe": {"dense": {"top1": 80.0, "std": 0.3, "mac_fraction": 1.0},
                                                  "gated": {"top1": 75.0, "std": 0.5, "mac_fraction": 0.31}},
            "finetune": {"linear": {**run, "heads": {"dense": {"top1": 78.5, "std": 0.2, "mac_fraction": 1.0},
                                                     "gated": {"top1": 72.0, "std": 0.4, "mac_fraction": 0.31}}},
                         "full": {**run, "heads": {"dense": {"top1": 86.0, "std": None, "mac_fraction": 1.0},
                                                   "gated": {"top1": 81.25, "std": None, "mac_fraction": 0.3}}}}}


def test_aims_judge_each_head_against_its_modes_probe(bench: ModuleType) -> None:
    found = {a["aim"]: a for a in bench.aims([_row()])}
    assert len(found) == 4
    dense = found["quickstart: linear fine-tune, dense >= frozen probe - 2"]
    assert dense["value"] == -1.5 and dense["met"]
    gated = found["quickstart: linear fine-tune, gated >= frozen probe - 2"]
    assert gated["value"] == -3.0 and not gated["met"]  # against the gated probe (75), not the dense one
    assert found["quickstart: full fine-tune, gated >= frozen probe - 2"]["value"] == 6.25


def test_tables_show_the_difference_from_the_probe(bench: ModuleType) -> None:
    text = bench.table([_row()])
    assert "| quickstart | gated | 75.00 ± 0.50 | 72.00 ± 0.40 (-3.00) | 81.25 (+6.25) | 0.300 |" in text
    assert "| quickstart | full | 10 | 60 | 70 | 1.5 |" in bench.times_table([_row()])
    assert "**no**" in bench.aims_table(bench.aims([_row()]))


def test_a_missing_reproduction_run_is_named_with_the_command(bench: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="reproduce_small.py --protocol main --runs dual_td0.3"):
        bench.fashion_mnist(tmp_path, "dual_td0.3", tmp_path / "out")


def test_the_readme_line_names_the_measured_numbers(bench: ModuleType) -> None:
    row = {**_row(), "date": "2026-12-07"}
    text = bench.expected(row)
    assert "probe 80.0 % dense / 75.0 % gated" in text
    assert "(3 seeds) 78.5 % dense / 72.0 % gated in 1 min 10 s" in text
    assert "full fine-tune 86.0 % dense / 81.2 % gated at 0.300 of the dense MACs" in text
