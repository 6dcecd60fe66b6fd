"""timm_gated_ssl.hub.card: the model card's metadata, tables, snippet and citation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from timm_gated_ssl.hub.card import BIBTEX, build_model_card, load_results

ARGS = {"budget": 0.3, "separate_bn": True, "calibrated_budgets": {"0.3": 0.1, "0.5": -0.2}}


def _reparse(card: ModelCard) -> ModelCard:
    return ModelCard(str(card))  # what ModelCard.load does with the downloaded README.md


def test_card_metadata_and_model_index(results_dict: dict) -> None:
    card = _reparse(build_model_card(repo_id="org/gated-r18", architecture="gated_resnet18_cifar",
                                     model_args=ARGS, results=results_dict, ssl_method="VICReg"))
    data = card.data
    assert data.library_name == "timm" and data.license == "apache-2.0"
    assert data.pipeline_tag == "image-feature-extraction"
    assert {"self-supervised", "dynamic-computation", "channel-gating", "timm",
            "image-feature-extraction", "vicreg"} <= set(data.tags)
    assert data.datasets == ["uoft-cs/cifar10"]
    by_config = {(r.metric_config, r.metric_type, r.metric_name.split(" [")[0]): r.metric_value
                 for r in data.eval_results}
    assert by_config[("dense-t0.3", "accuracy", "Linear-probe top-1 (%)")] == 90.38
    assert by_config[("gated-t0.3", "accuracy", "Linear-probe top-1 (%)")] == 90.27
    assert by_config[("gated-t0.5", "accuracy", "Linear-probe top-1 (%)")] == 90.40
    assert by_config[("gated-t0.3", "macs", "MACs per image")] == pytest.approx(1.87e8)
    assert by_config[("gated-t0.3", "flops_reduction", "FLOPs reduction (%)")] == pytest.approx(66.43)
    assert ("gated-t0.5", "accuracy", "1-NN top-1 (%)") not in by_config  # None is left out
    assert {r.dataset_type for r in data.eval_results} == {"uoft-cs/cifar10"}
    assert {r.dataset_split for r in data.eval_results} == {"test"}


def test_card_body_has_table_snippet_plot_and_citation(results_dict: dict) -> None:
    text = str(build_model_card(repo_id="org/gated-r18", architecture="gated_resnet18_cifar",
                                model_args=ARGS, results=results_dict, tradeoff_plot="tradeoff.png"))
    assert "| gated | 0.3 | 90.27 |" in text and "66.43%" in text  # the budget table
    assert "![accuracy vs compute](tradeoff.png)" in text
    assert 'timm.create_model("hf-hub:org/gated-r18", pretrained=True, budget=0.3)' in text
    assert "import timm_gated_ssl" in text
    assert "Calibrated budgets (pass one as `budget=`): 0.3, 0.5" in text
    assert BIBTEX in text and "2301.09164" in text


def test_card_without_results() -> None:
    card = _reparse(build_model_card(repo_id="org/m", architecture="gated_resnet18", results=None))
    assert card.data.eval_results is None and "model-index" not in str(card)
    assert "No evaluation results" in card.text and "tradeoff" not in card.text


def test_load_results_accepts_object_dict_and_json(results_dict: dict, tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results_dict))
    from_dict, from_file = load_results(results_dict), load_results(path)
    assert from_dict == from_file == load_results(from_dict)
    with pytest.raises(ValueError):
        load_results({"dataset": "cifar10"})  # no model_name


@pytest.mark.parametrize("content", [b"architecture: resnet18\n", b"\xff\xfe\x00binary"])
def test_load_results_names_a_file_that_is_not_json(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"config.yaml is not a JSON file .*results.json that recipes/evaluate.py"):
        load_results(path)


@pytest.mark.parametrize(("payload", "reason"), [([1, 2], "holds a JSON list"),
                                                 ({"steps": 3}, r"does not hold evaluation results \(unknown")])
def test_load_results_names_a_json_file_of_something_else(tmp_path: Path, payload: object, reason: str) -> None:
    path = tmp_path / "metrics.json"  # e.g. the training metrics instead of the evaluation results
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=rf"metrics.json {reason}.*recipes/evaluate.py --output_dir"):
        load_results(path)


def test_trained_and_calibrated_entries_at_one_budget_get_distinct_configs() -> None:
    """A run trained at t_d 0.3 and also calibrated to 0.3 reports two operating points."""
    from timm_gated_ssl.results import EvaluationResult, ModeEvaluation

    results = EvaluationResult(
        model_name="gated_resnet18_cifar", dataset="cifar10",
        entries=(
            ModeEvaluation(mode="gated", budget=0.3, knn_top1=89.0, mac_fraction=0.34),
            ModeEvaluation(mode="gated", budget=0.3, knn_top1=88.5, mac_fraction=0.30,
                           calibrated=True, calibration_mac_fraction=0.30, gate_offset=0.2),
        ),
    )
    card = _reparse(build_model_card(repo_id="org/m", architecture="gated_resnet18_cifar",
                                     model_args=ARGS, results=results))
    knn = {r.metric_config: r.metric_value for r in card.data.eval_results
           if r.metric_name.startswith("k-NN")}
    assert knn == {"gated-t0.3": 89.0, "gated-calibrated-t0.3": 88.5}


def test_card_names_the_encoder_a_post_hoc_run_started_from(tmp_path: Path) -> None:
    import timm

    from timm_gated_ssl.hub.push import stage_checkpoint
    from timm_gated_ssl.recipe.outputs import export_model

    text = str(build_model_card(repo_id="org/m", architecture="gated_resnet18", init_from="resnet18.a1_in1k"))
    assert "- Initialised from: `resnet18.a1_in1k`" in text
    assert "Initialised from" not in str(build_model_card(repo_id="org/m", architecture="gated_resnet18"))
    # the recipe records init_from in config.json; the staged card reads it from there
    model = timm.create_model("gated_resnet18_cifar", channels=[8, 16, 32, 64], num_classes=0)
    (tmp_path / "ckpt").mkdir()
    export_model(model, tmp_path / "ckpt", model_args={"num_classes": 0, "channels": [8, 16, 32, 64]},
                 extra={"init_from": "local-dir:runs/my_encoder"})
    (tmp_path / "stage").mkdir()
    stage_checkpoint(tmp_path / "ckpt", tmp_path / "stage", repo_id="org/m")
    assert "- Initialised from: `local-dir:runs/my_encoder`" in (tmp_path / "stage" / "README.md").read_text()
