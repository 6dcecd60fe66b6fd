"""The table printed at the end of pretraining, from metrics.json's values."""

from __future__ import annotations

from timm_gated_ssl.recipe.summary import training_summary

METRICS = {"steps": 44, "epochs": 4.0, "images_per_s": 110.16, "wall_time_s": 51.1, "world_size": 1,
           "knn_dense": 70.707, "knn_gated": 66.667, "mac_ratio": 0.2807, "dense_macs": 138854400,
           "gated_macs": 38971392.0, "mac_ratio_trained": 0.29, "init_from": None}


def test_a_gated_run_gets_a_dense_and_gated_row_and_the_next_command() -> None:
    text = training_summary(METRICS, output_dir="runs/my run", dataset="digits", budget=0.3)
    lines = text.splitlines()
    assert lines[0] == "training finished: 44 steps, 4.00 epochs in 51 s (110.2 images/s, 1 process(es))"
    assert "| dense | 70.71 | 1.389e+08 | 1.000 |" in lines
    assert "| gated (t_d 0.3) | 66.67 | 3.897e+07 | 0.281 |" in lines
    assert lines[-1] == ("next: python recipes/evaluate.py --checkpoint 'runs/my run' --dataset digits "
                         "--budgets 0.3 --fixed_budgets 0.3")
    assert "None" not in text


def test_without_a_monitor_the_budget_checks_fraction_is_shown() -> None:
    metrics = {k: v for k, v in METRICS.items() if k not in ("knn_dense", "knn_gated", "mac_ratio", "gated_macs")}
    text = training_summary({**metrics, "mac_ratio_calibrated": 0.301}, output_dir="o", dataset="d", budget=0.3)
    assert "| gated (t_d 0.3) | - | - | 0.301 |" in text
    assert "(no k-NN monitor ran: eval_split is null)" in text
    vanilla = training_summary({"steps": 3}, output_dir="o", dataset="d", budget=None)
    assert "gated" not in vanilla and "--budgets" not in vanilla and "| mode |" not in vanilla
