"""EvaluationResult: JSON round trip, markdown table, validation."""

from __future__ import annotations

import json

import pytest

from timm_gated_ssl.results import SCHEMA_VERSION, EvaluationResult, ModeEvaluation


def _result() -> EvaluationResult:
    return EvaluationResult(
        model_name="resnet18_gated",
        dataset="cifar10",
        entries=(
            ModeEvaluation(mode="vanilla", linear_top1=91.11, macs=5.6e8, mac_fraction=1.0),
            ModeEvaluation(
                mode="dense",
                budget=0.3,
                knn_top1=88.0,
                knn1_top1=86.5,
                linear_top1=90.38,
                linear_top1_std=0.12,
                linear_runs=5,
                macs=5.6e8,
                mac_fraction=1.0,
            ),
            ModeEvaluation(
                mode="gated",
                budget=0.3,
                knn_top1=87.5,
                knn1_top1=86.0,
                linear_top1=90.27,
                linear_top1_std=0.1,
                linear_runs=5,
                macs=1.88e8,
                mac_fraction=0.3357,
            ),
        ),
    )


def test_round_trip_through_json() -> None:
    result = _result()
    data = json.loads(json.dumps(result.to_dict()))
    assert data["schema_version"] == SCHEMA_VERSION
    gated = data["entries"][2]
    assert gated["flops_reduction"] == pytest.approx(0.6643)
    assert data["entries"][0]["flops_reduction"] == 0.0
    assert data["entries"][0]["knn_top1"] is None
    assert EvaluationResult.from_dict(data) == result


def test_markdown_table() -> None:
    md = _result().to_markdown()
    lines = md.strip().splitlines()
    assert "`resnet18_gated`" in lines[0] and "`cifar10`" in lines[0]
    assert lines[2].startswith("| mode | t_d | linear top-1")
    assert lines[3] == "|---|---|---|---|---|---|---|---|"
    assert lines[4] == "| vanilla | - | 91.11 | - | - | 5.600e+08 | 1.0000 | 0.00% |"
    assert lines[6] == (
        "| gated | 0.3 | 90.27 ± 0.10 (5 runs) | 87.50 | 86.00 | 1.880e+08 | 0.3357 | 66.43% |"
    )
    assert len(lines) == 7


def test_tradeoff_points() -> None:
    points = _result().tradeoff_points()
    assert [p.kind for p in points] == ["vanilla", "dense", "gated"]
    assert points[2].label == "gated t_d=0.3" and points[2].accuracy == 90.27
    knn_points = _result().tradeoff_points(metric="knn_top1")
    assert [p.kind for p in knn_points] == ["dense", "gated"]  # vanilla has no k-NN value
    with pytest.raises(ValueError, match="metric must be one of"):
        _result().tradeoff_points(metric="top5")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "sparse"}, "mode must be one of"),
        ({"mode": "gated", "budget": 0.0}, r"budget must be in \(0, 1\]"),
        ({"mode": "gated", "budget": 1.5}, r"budget must be None or a number in \[0.0, 1.0\]"),
        ({"mode": "dense", "linear_top1": 101.0}, "linear_top1 must be None or a number"),
        ({"mode": "dense", "knn_top1": float("nan")}, "knn_top1 must be"),
        ({"mode": "dense", "linear_runs": 0}, "linear_runs must be None or an integer >= 1"),
        ({"mode": "dense", "mac_fraction": 0.0}, "mac_fraction must be > 0"),
        ({"mode": "dense", "macs": -1.0}, "macs must be"),
    ],
)
def test_bad_entries(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ModeEvaluation(**kwargs)


def test_bad_dicts() -> None:
    data = _result().to_dict()
    with pytest.raises(ValueError, match="schema_version 99"):
        EvaluationResult.from_dict({**data, "schema_version": 99})
    with pytest.raises(ValueError, match=r"unknown EvaluationResult keys \['extra'\]"):
        EvaluationResult.from_dict({**data, "extra": 1})
    with pytest.raises(ValueError, match=r"needs the keys \['dataset'\]"):
        EvaluationResult.from_dict({"model_name": "m"})
    with pytest.raises(ValueError, match=r"unknown ModeEvaluation keys \['top1'\]"):
        ModeEvaluation.from_dict({"mode": "dense", "top1": 1.0})
    with pytest.raises(ValueError, match="needs a 'mode' key"):
        ModeEvaluation.from_dict({"budget": 0.3})
    with pytest.raises(ValueError, match="disagrees with mac_fraction"):
        ModeEvaluation.from_dict({"mode": "gated", "mac_fraction": 0.4, "flops_reduction": 0.5})
    with pytest.raises(TypeError, match="entries\\[0\\] must be a ModeEvaluation"):
        EvaluationResult(model_name="m", dataset="d", entries=({"mode": "dense"},))  # type: ignore[arg-type]


def test_the_records_sit_below_evaluation_and_the_old_paths_still_work() -> None:
    """The results package imports only the standard library and itself (no torch, matplotlib or
    evaluation code), so any layer can read a result; the old import paths give the same objects."""
    import ast
    import sys
    from pathlib import Path

    import timm_gated_ssl.results as package

    for path in Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
                assert node.module.split(".")[0] in sys.stdlib_module_names, (path.name, node.module)
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                assert node.level == 1, (path.name, node.module)  # nothing from above results/
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] in sys.stdlib_module_names for a in node.names), path.name
    from timm_gated_ssl.eval import report
    from timm_gated_ssl.eval.plots import TradeoffPoint as OldPoint
    from timm_gated_ssl.results import TradeoffPoint

    assert report.EvaluationResult is EvaluationResult and OldPoint is TradeoffPoint
