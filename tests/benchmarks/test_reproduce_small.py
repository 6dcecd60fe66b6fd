"""benchmarks/reproduce_small.py: the aims are computed from the runs (hand-made rows here)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reproduce() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reproduce_small", ROOT / "benchmarks" / "reproduce_small.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduce_small"] = module
    spec.loader.exec_module(module)
    return module


def row(run: str, budget: float | None, **modes: Any) -> dict[str, Any]:
    variant = run.rsplit("_s", 1)[0] if "_s" in run else run
    return {"run": run, "variant": variant, "protocol": "main", "budget": budget, "schedule": "v0.2", **modes}


def gated_row(run: str, budget: float, dense: float, gated: float, mac: float, mac_cal: float) -> dict[str, Any]:
    return row(run, budget, dense={"linear_top1": dense},
               gated={"linear_top1": gated, "mac_fraction": mac},
               gated_calibrated={"linear_top1": gated, "mac_fraction": mac_cal})


def test_aims_average_the_seeds_and_judge_each_target(reproduce: ModuleType) -> None:
    rows = [row("vanilla", None, vanilla={"linear_top1": 87.0}), row("vanilla_s1", None, vanilla={"linear_top1": 86.0}),
            gated_row("dual_td0.3", 0.3, 85.0, 84.0, 0.29, 0.305),
            gated_row("dual_td0.3_s1", 0.3, 85.4, 83.0, 0.335, 0.299)]
    found = {a["aim"]: a for a in reproduce.aims(rows, {0.3: "dual_td0.3"})}
    gap = found["gated >= dense - 1.0 (linear top-1, t_d 0.3)"]
    assert gap["value"] == pytest.approx(83.5 - 85.2) and gap["met"] is False  # mean gap 1.7 > 1.0
    dense = found["dense >= vanilla - 1.5 (t_d 0.3)"]
    assert dense["value"] == pytest.approx(85.2 - 86.5) and dense["met"] is True
    before = found["MAC fraction before calibration within +-0.03 of 0.3"]
    assert before["value"] == pytest.approx(0.335) and before["met"] is False  # the worst seed counts
    after = found["MAC fraction after calibration within +-0.01 of 0.3"]
    assert after["value"] == pytest.approx(0.305) and after["met"] is True


def test_a_run_the_recipe_calibrated_is_judged_by_what_training_reached(reproduce: ModuleType) -> None:
    """The recipe calibrates gates that end further than ``budget_tolerance`` from t_d, so the
    evaluated checkpoint is already calibrated; the before-calibration aim reads the miss it found."""
    rows = [gated_row("dual_td0.5", 0.5, 85.0, 84.5, 0.499, 0.5)]
    assert reproduce.aims(rows, {0.5: "dual_td0.5"})[2]["met"] is True
    rows[0]["recipe_calibrated_from"] = 0.558
    before = reproduce.aims(rows, {0.5: "dual_td0.5"})[2]
    assert before["aim"].startswith("MAC fraction before") and before["value"] == pytest.approx(0.558)
    assert before["met"] is False
    assert reproduce._mac_cell(rows[0]) == "0.499 (recipe-calibrated from 0.558)"


def test_missing_runs_are_listed_not_judged(reproduce: ModuleType) -> None:
    found = reproduce.aims([gated_row("dual_td0.1", 0.1, 80.0, 79.0, 0.1, 0.1)], {0.1: "dual_td0.1", 0.5: "dual_td0.5"})
    assert all(a["met"] is None and a["missing"] for a in found if "0.5" in a["aim"])
    dense = next(a for a in found if a["aim"] == "dense >= vanilla - 1.5 (t_d 0.1)")
    assert dense["met"] is None and dense["missing"] == ["vanilla"]


def test_variant_aims_cover_the_other_gated_main_runs(reproduce: ModuleType) -> None:
    rows = [row("vanilla", None, vanilla={"linear_top1": 86.0}),
            gated_row("dual_td0.3", 0.3, 85.0, 84.0, 0.3, 0.3),
            gated_row("width_td0.3", 0.3, 85.5, 85.0, 0.285, 0.285)]
    others = reproduce.variant_aims(rows)
    assert list(others) == ["width_td0.3"]
    assert [a["met"] for a in others["width_td0.3"]] == [True, True, True, False]  # 0.015 off after


def test_merge_keeps_published_runs_and_lets_new_evaluations_replace_them(reproduce: ModuleType) -> None:
    published = [row("vanilla", None, vanilla={"linear_top1": 86.0}),
                 gated_row("dual_td0.3", 0.3, 85.0, 84.0, 0.3, 0.3),
                 {**row("paper_td0.3", 0.3), "protocol": "pilot"}]
    local = [gated_row("dual_td0.3", 0.3, 85.5, 84.5, 0.3, 0.3), gated_row("width_td0.1", 0.1, 84.0, 83.0, 0.1, 0.1)]
    merged = reproduce.merge_rows(local, published)
    assert [(r["protocol"], r["run"]) for r in merged] == [
        ("pilot", "paper_td0.3"), ("main", "dual_td0.3"), ("main", "vanilla"), ("main", "width_td0.1")]
    assert merged[1]["dense"]["linear_top1"] == 85.5  # the new evaluation, not the published one


def length_row(run: str, protocol: str, steps: int, dense: float, gated: float) -> dict[str, Any]:
    return {**gated_row(run, 0.3, dense, gated, 0.3, 0.3), "protocol": protocol, "seed": 0, "steps": steps,
            "gap": round(dense - gated, 2)}


def test_over_length_fits_the_gap_per_doubling_of_the_steps(reproduce: ModuleType) -> None:
    rows = [length_row("study_noise_cosine", "pilot", 120, 80.0, 77.0),
            length_row("dual_td0.3", "long", 480, 84.0, 83.0),
            {**row("vanilla", None, vanilla={"linear_top1": 85.0}), "protocol": "long", "seed": 0},
            {**length_row("dual_td0.3_s1", "long", 480, 80.0, 70.0), "seed": 1}]  # not seed 0: left out
    found = reproduce.over_length(rows)
    assert [(p["protocol"], p["gap"]) for p in found["points"]] == [("pilot", 3.0), ("long", 1.0)]
    assert found["points"][1]["dense_minus_vanilla"] == -1.0
    (trend,) = found["trends"]  # one vanilla point: no dense-vanilla fit
    # 3.0 -> 1.0 over two doublings (120 -> 480): -1 per doubling, the aim 1.0 after 2 doublings
    assert trend["per_doubling"] == pytest.approx(-1.0)
    assert trend["steps_to_aim"] == 120 * 2**2


def test_over_length_says_never_when_the_gap_grows(reproduce: ModuleType) -> None:
    rows = [length_row("paper_td0.3", "pilot", 120, 80.0, 78.0), length_row("paper_td0.3", "main", 240, 82.0, 79.0)]
    (trend,) = reproduce.over_length(rows)["trends"]
    assert trend["setting"] == "paper" and trend["per_doubling"] == pytest.approx(1.0)
    assert trend["steps_to_aim"] is None
    assert "never (moves away)" in reproduce.tables(rows, [], {}, [], reproduce.over_length(rows))


def test_tables_head_each_protocol_with_its_steps_and_batch_size(reproduce: ModuleType) -> None:
    rows = [{**gated_row("dual_td0.3", 0.3, 85.0, 84.0, 0.3, 0.3), "seed": 0, "steps": 118,
             "config": {"batch_size": 512}}]
    assert "**Protocol `main`** (118 steps of 512)" in reproduce.tables(rows, [], {}, [])
    spec = importlib.util.spec_from_file_location("reproduce_gpu", ROOT / "benchmarks" / "reproduce_gpu.py")
    assert spec is not None and spec.loader is not None
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    assert gpu.gpu_table(rows).startswith("**Full Fashion-MNIST, one GPU** (118 steps of 512)")


def test_plot_draws_one_series_set_per_gate_type(reproduce: ModuleType, tmp_path: Path) -> None:
    from timm_gated_ssl.eval.plots import tradeoff_figure

    channel, width = {"config": {"model_kwargs": {}}}, {"config": {"model_kwargs": {"gate_type": "width"}}}
    rows = [row("vanilla", None, vanilla={"linear_top1": 87.0}),
            {**gated_row("dual_td0.1", 0.1, 84.0, 82.0, 0.12, 0.10), **channel},
            {**gated_row("dual_td0.3", 0.3, 85.0, 84.0, 0.28, 0.30), **channel},
            {**gated_row("dual_td0.3_s1", 0.3, 85.4, 83.0, 0.30, 0.31), **channel},
            {**gated_row("width_td0.3", 0.3, 85.5, 85.0, 0.29, 0.30), **width},
            {**gated_row("width_td0.5", 0.5, 85.8, 85.2, 0.48, 0.50), **width},
            {**gated_row("anchored_td0.3", 0.3, 86.0, 70.0, 0.28, 0.30), **channel},  # an option: tables only
            {**gated_row("width_td0.1", 0.1, 80.0, 60.0, 0.2, 0.2), **width, "protocol": "pilot"}]  # not main
    ax = tradeoff_figure(reproduce.tradeoff_points(rows)).axes[0]
    series = {line.get_label(): ([round(float(v), 4) for v in line.get_xdata()], list(line.get_ydata()))
              for line in ax.lines}
    assert list(series) == ["channel gates, calibrated to $t_d$", "channel gates, trained threshold",
                            "dense, channel gates", "width gates, calibrated to $t_d$",
                            "width gates, trained threshold", "dense, width gates", "vanilla SSL baseline"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(series)
    # Each variant is one point, the mean over its seeds (dual_td0.3: (0.30 + 0.31) / 2, (84 + 83) / 2).
    assert series["channel gates, calibrated to $t_d$"] == ([0.1, 0.305], [82.0, 83.5])
    assert series["channel gates, trained threshold"] == ([0.12, 0.29], [82.0, 83.5])
    assert series["dense, channel gates"][1] == [84.0, 85.2]
    assert series["width gates, calibrated to $t_d$"] == ([0.3, 0.5], [85.0, 85.2])
    assert series["dense, width gates"][1] == [85.5, 85.8]
    assert series["vanilla SSL baseline"] == ([1.0], [87.0])
    colours = {label: line.get_color() for label, line in zip(series, ax.lines)}
    assert colours["channel gates, calibrated to $t_d$"] != colours["width gates, calibrated to $t_d$"]

    # With one gate type the figure is the plain one: no family in the legend.
    channel_only = [r for r in rows if not r["variant"].startswith("width")]
    legend = [t.get_text() for t in tradeoff_figure(reproduce.tradeoff_points(channel_only)).axes[0]
              .get_legend().get_texts()]
    assert legend == ["gated, calibrated to $t_d$", "gated, trained threshold", "dense", "vanilla SSL baseline"]
    reproduce.plot(rows, tmp_path / "tradeoff.png")
    assert (tmp_path / "tradeoff.png").read_bytes().startswith(b"\x89PNG")


def test_gate_type_comes_from_the_recorded_config(reproduce: ModuleType) -> None:
    assert reproduce.gate_type_of({"config": {"model_kwargs": {"gate_type": "width", "gate_levels": 8}}}) == "width"
    assert reproduce.gate_type_of({"config": {"model_kwargs": {}}}) == "channel"
    assert reproduce.gate_type_of({}) == "channel"
    assert reproduce.PLOTTED == ("dual", "width")


def test_runs_of_the_old_schedule_are_shown_but_not_judged(reproduce: ModuleType) -> None:
    old = {**gated_row("dual_td0.3", 0.3, 85.0, 80.0, 0.3, 0.3), "schedule": "v0.1"}
    found = reproduce.aims([old], {0.3: "dual_td0.3"})
    assert all(a["met"] is None and "dual_td0.3" in a["missing"] for a in found)
    assert reproduce.schedule_of({"steps": 350}) == "v0.1"
    assert reproduce.schedule_of({"steps": 350, "final_lr": 0.0}) == "v0.2"


def test_precision_flag_picks_accelerates_mixed_precision(reproduce: ModuleType, tmp_path: Path) -> None:
    def precision(cmd: list[str]) -> str:
        return cmd[cmd.index("--mixed_precision") + 1]

    assert precision(reproduce.train_command("dual_td0.3", "pilot", tmp_path)) == "bf16"
    assert precision(reproduce.train_command("dual_td0.3", "pilot", tmp_path, precision="fp32")) == "no"
    with pytest.raises(SystemExit, match="unknown precision 'fp16'; valid: bf16, fp32"):
        reproduce.train_command("dual_td0.3", "pilot", tmp_path, precision="fp16")


def _pair(variant: str, seed: int, dense: float, gated: float, mac: float = 0.3) -> dict[str, Any]:
    name = variant if seed == 0 else f"{variant}_s{seed}"
    return {**gated_row(name, 0.3, dense, gated, mac, mac), "variant": variant, "seed": seed,
            "gap": round(dense - gated, 2)}


def test_paired_differences_per_seed_and_the_default_they_support(reproduce: ModuleType) -> None:
    import _seeds

    rows = [_pair("width_td0.3", 0, 85.0, 84.5), _pair("dual_td0.3", 0, 85.2, 83.7),
            _pair("width_td0.3", 1, 84.8, 84.0), _pair("dual_td0.3", 1, 84.9, 83.9),
            _pair("width_td0.3", 2, 85.1, 84.2)]  # seed 2 has no channel partner: left out
    (paired,) = _seeds.paired_gate_types(rows, budgets=(0.3,))
    assert paired["seeds"] == [0, 1]
    assert paired["gated_linear"]["differences"] == [pytest.approx(0.8), pytest.approx(0.1)]
    assert paired["gap"]["differences"] == [pytest.approx(0.5 - 1.5), pytest.approx(0.8 - 1.0)]
    assert paired["gated_linear"]["mean"] == pytest.approx(0.45)
    assert paired["width_at_least_as_good"] is True
    assert _seeds.choose_default([paired], min_seeds={0.3: 2})["gate_type"] == "width"
    # Two paired seeds where the plan asks for three (MIN_SEEDS): not decided for width yet.
    decision = _seeds.choose_default([paired])
    assert decision["gate_type"] == "channel" and "more paired seeds (t_d 0.3: 2 of 3)" in decision["reason"]

    # One seed where channel gates are better decides against width gates, naming the numbers.
    rows[3] = _pair("dual_td0.3", 1, 84.9, 84.3)
    (paired,) = _seeds.paired_gate_types(rows, budgets=(0.3,))
    decision = _seeds.choose_default([paired])
    assert decision["gate_type"] == "channel" and "t_d 0.3: gated [0.8, -0.3]" in decision["reason"]
    # A budget without paired runs keeps channel gates and says which.
    missing = _seeds.paired_gate_types(rows, budgets=(0.1,))
    assert _seeds.choose_default(missing) == {"gate_type": "channel", "reason": "no paired runs at t_d 0.1"}
    assert "| 0.1 |  |" in "\n".join(_seeds.paired_table(missing, _seeds.choose_default(missing)))


def test_over_length_never_fits_across_schedules(reproduce: ModuleType) -> None:
    rows = [{**length_row("paper_td0.3", "pilot", 120, 80.0, 78.0), "schedule": "v0.1"},
            length_row("paper_td0.3", "main", 240, 82.0, 79.0)]
    found = reproduce.over_length(rows)
    assert [p["schedule"] for p in found["points"]] == ["v0.1", "v0.2"] and found["trends"] == []


def test_only_evaluated_runs_replace_published_logs(reproduce: ModuleType, tmp_path: Path) -> None:
    """A run that failed to train leaves a log and no evaluation: the published log of that run
    (the row the report keeps) must not be overwritten by the failure's."""
    out, logs = tmp_path / "out", tmp_path / "logs"
    (out / "main" / "eval_width_td0.5").mkdir(parents=True)
    (out / "main" / "eval_width_td0.5" / "results.json").write_text("{}")
    (out / "main" / "width_td0.5.log").write_text("trained\n")
    (out / "main" / "dual_td0.1.log").write_text("ModuleNotFoundError\n")  # failed before training
    logs.mkdir()
    (logs / "main_dual_td0.1.log").write_text("published\n")
    rows = [{"run": "width_td0.5", "protocol": "main"}, {"run": "dual_td0.1", "protocol": "main"}]
    assert reproduce.copy_logs(rows, out, logs) == [logs / "main_width_td0.5.log"]
    assert (logs / "main_width_td0.5.log").read_text() == "trained\n"
    assert (logs / "main_dual_td0.1.log").read_text() == "published\n"


def test_summarise_reads_a_checkpoint_the_recipe_calibrated(reproduce: ModuleType, tmp_path: Path) -> None:
    """Its evaluation lists the exported gates as ``calibrated`` (they carry the recipe's offset)
    beside the evaluation's own calibration: the first is the run's ``gated`` row."""
    def entry(mode: str, top1: float, mac: float, calibrated: bool, calibration: float | None) -> dict[str, Any]:
        return {"mode": mode, "budget": 0.5, "linear_top1": top1, "knn_top1": top1 - 5, "mac_fraction": mac,
                "calibrated": calibrated, "calibration_mac_fraction": calibration}

    (tmp_path / "eval_width_td0.5").mkdir()
    (tmp_path / "eval_width_td0.5" / "results.json").write_text(json.dumps({"entries": [
        entry("dense", 74.16, 1.0, False, None), entry("gated", 72.18, 0.4971, True, None),
        entry("gated", 72.21, 0.4974, True, 0.5018)]}))
    (tmp_path / "width_td0.5").mkdir()
    (tmp_path / "width_td0.5" / "metrics.json").write_text(json.dumps({
        "steps": 350, "images_per_s": 60.0, "wall_time_s": 1500.0, "final_lr": 0.0,
        "budget_calibrated": True, "mac_ratio_trained": 0.5583}))
    (tmp_path / "width_td0.5" / "config.yaml").write_text("budget: 0.5\n")
    row = reproduce.summarise("width_td0.5", "main", tmp_path)
    assert row["gated"]["linear_top1"] == 72.18 and row["gated_calibrated"]["linear_top1"] == 72.21
    assert row["gap"] == pytest.approx(1.98) and row["recipe_calibrated_from"] == 0.5583
    assert reproduce.before_calibration(row) == 0.5583
