"""evaluate_checkpoint end to end on a tiny saved checkpoint (digits at 16 px), and its bad inputs."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from timm.models import save_for_hf
from torch.utils.data import DataLoader

import timm_gated_ssl
from timm_gated_ssl.calibration import calibrated_budgets, set_budget
from timm_gated_ssl.compute import count_macs
from timm_gated_ssl.data import EvalDataset, build_eval_transform, load_image_dataset
from timm_gated_ssl.errors import InvalidBudgetError, NoGatesError
from timm_gated_ssl.eval import EvaluationResult, evaluate_checkpoint, protocol_data
from timm_gated_ssl.hub.errors import CheckpointError, UnknownArchitectureError

WIDTHS = [8, 16, 32, 64]
GATED_WIDTHS = [8, 8, 16, 16, 32, 32, 64, 64]  # two BasicBlocks per stage
BUDGETS = (0.5, 0.8)
TOL = 0.01
FAST = {
    "dataset": "digits",
    "image_size": 16,
    "max_train": 200,
    "linear_epochs": 5,
    "linear_seeds": (0,),
    "batch_size": 128,
    "progress": False,
}


def _tiny(name: str, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, channels=WIDTHS, num_classes=0, **kwargs)
    # timm zero-initialises each block's last BN scale, which makes the gates irrelevant
    # (block output = shortcut); random scales give the gated mode its own features.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    save_for_hf(_tiny("gated_resnet18_cifar", budget=0.5), root / "gated", safe_serialization=True)
    save_for_hf(_tiny("resnet18_cifar"), root / "vanilla", safe_serialization=True)
    return {"gated": root / "gated", "vanilla": root / "vanilla", "root": root}


@pytest.fixture(scope="module")
def evaluated(checkpoints: dict[str, Path]) -> tuple[EvaluationResult, Path]:
    torch.set_num_threads(1)
    out = checkpoints["root"] / "eval"
    result = evaluate_checkpoint(
        checkpoints["gated"],
        budgets=BUDGETS,
        vanilla=checkpoints["vanilla"],
        output_dir=out,
        calibration_tol=TOL,
        **FAST,
    )
    return result, out


def test_files_and_json_round_trip(evaluated: tuple[EvaluationResult, Path]) -> None:
    result, out = evaluated
    for name in ("results.json", "results.md", "tradeoff.png", "channel_usage.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    data = json.loads((out / "results.json").read_text())
    assert EvaluationResult.from_dict(data) == result
    for entry in data["entries"]:
        assert entry["flops_reduction"] == pytest.approx(1 - entry["mac_fraction"], abs=1e-12)
    md = (out / "results.md").read_text()
    assert md.startswith(result.to_markdown())
    assert "| gated (calibrated) | 0.8 |" in md and "| layer4.1 | 64 |" in md
    protocol = data["protocol"]
    assert protocol["num_train"] == 200 and protocol["num_test"] == 297
    assert protocol["num_calibration"] == 150 and "held out" in protocol["calibration"]
    assert protocol["image_size"] == 16 and protocol["linear_seeds"] == [0]


def test_entries(evaluated: tuple[EvaluationResult, Path]) -> None:
    result, _ = evaluated
    kinds = [(e.mode, e.budget, e.calibrated) for e in result.entries]
    assert kinds == [
        ("dense", 0.5, False),
        ("gated", 0.5, False),
        ("gated", 0.5, True),
        ("gated", 0.8, True),
        ("vanilla", None, False),
    ]
    dense, own, *calibrated, vanilla = result.entries
    assert dense.mac_fraction == 1.0 and vanilla.mac_fraction == 1.0
    assert vanilla.macs == dense.macs  # same widths and stem
    for entry in result.entries:
        for value in (entry.knn_top1, entry.knn1_top1, entry.linear_top1):
            assert value is not None and 0 <= value <= 100
        assert entry.linear_runs == 1 and entry.flops_reduction == 1 - entry.mac_fraction
    assert own.gate_offset == 0.0 and own.calibration_mac_fraction is None
    assert own.linear_top1 != dense.linear_top1 or own.knn_top1 != dense.knn_top1
    for entry in calibrated:  # realised on the calibration data within the tolerance
        assert abs(entry.calibration_mac_fraction - entry.budget) <= TOL
        assert abs(entry.mac_fraction - entry.budget) < 0.1  # and close on the test split
    assert calibrated[0].mac_fraction < calibrated[1].mac_fraction


def test_channel_usage_counts_sum_to_widths(evaluated: tuple[EvaluationResult, Path]) -> None:
    result, out = evaluated
    for entry in result.entries:
        if entry.mode != "gated":
            assert entry.channel_usage is None
            continue
        assert [u.channels for u in entry.channel_usage] == GATED_WIDTHS
        assert [u.block for u in entry.channel_usage][:2] == ["layer1.0", "layer1.1"]
    stored = json.loads((out / "results.json").read_text())["entries"][1]["channel_usage"]
    assert [u["always_off"] + u["always_on"] + u["dynamic"] for u in stored] == GATED_WIDTHS


def test_macs_match_count_macs_and_model_state_is_restored(
    evaluated: tuple[EvaluationResult, Path], checkpoints: dict[str, Path]
) -> None:
    result, _ = evaluated
    model = timm.create_model(f"local-dir:{checkpoints['gated']}", pretrained=True).eval()
    info = load_image_dataset("digits", split="test", image_size=16)
    rows = EvalDataset(
        info.dataset, build_eval_transform(image_size=16, mean=info.mean, std=info.std)
    )
    images = torch.cat([x for x, _ in DataLoader(rows, batch_size=300)])
    count = count_macs(model, images)
    own = result.entries[1]
    assert own.macs == pytest.approx(count.mean_gated, rel=1e-6)
    assert own.mac_fraction == pytest.approx(count.mean_ratio, rel=1e-6)
    assert result.entries[0].macs == count.dense

    # a module passed in: threshold, calibration table and train flag come back unchanged;
    # export_dir gets the checkpoint with the calibrated budget in config.json, and the files
    model.train()
    export = checkpoints["root"] / "export"
    small = evaluate_checkpoint(
        model,
        **{**FAST, "max_train": 60, "linear_epochs": 1},
        budgets=(0.8,),
        calibration_size=100,
        export_dir=export,
    )
    assert [e.calibrated for e in small.entries] == [False, False, True]
    assert model.training and calibrated_budgets(model) == {}
    assert all(float(g.logit_offset) == 0.0 for _, g in timm_gated_ssl.iter_gates(model))
    assert {"config.json", "model.safetensors", "results.json", "tradeoff.png"} <= {
        p.name for p in export.iterdir()
    }
    reloaded = timm.create_model(f"local-dir:{export}", pretrained=True)
    assert calibrated_budgets(reloaded) == {0.8: small.entries[2].gate_offset}
    set_budget(reloaded, 0.8)
    assert float(next(iter(timm_gated_ssl.iter_gates(reloaded)))[1].logit_offset) == pytest.approx(
        small.entries[2].gate_offset
    )


# ------------------------------------------------------------------------------ bad input
def test_checkpoint_directory_errors(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    with pytest.raises(CheckpointError, match="is not a directory"):
        evaluate_checkpoint(tmp_path / "missing", **FAST)
    with pytest.raises(CheckpointError, match="no config.json"):
        evaluate_checkpoint(tmp_path, **FAST)
    (tmp_path / "config.json").write_text((checkpoints["gated"] / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"no weights .*model\.safetensors"):
        evaluate_checkpoint(tmp_path, **FAST)


def test_unregistered_architecture(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    config = json.loads((checkpoints["gated"] / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architecture": "gated_nonet99"}))
    (tmp_path / "model.safetensors").write_bytes(
        (checkpoints["gated"] / "model.safetensors").read_bytes()
    )
    with pytest.raises(
        UnknownArchitectureError, match=r"'gated_nonet99'.*import timm_gated_ssl.*gated_resnet18"
    ):
        evaluate_checkpoint(tmp_path, **FAST)


@pytest.mark.parametrize("budget", [0.0, 1.5, -0.2, math.nan])
def test_budgets_outside_unit_interval(budget: float, checkpoints: dict[str, Path]) -> None:
    with pytest.raises(InvalidBudgetError, match=r"must be in \(0, 1\]"):
        evaluate_checkpoint(checkpoints["gated"], budgets=(0.5, budget), **FAST)


def test_ungated_checkpoint_with_budgets(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(NoGatesError, match=r"resnet18_cifar\) has no gates.*budgets \[0.3\]"):
        evaluate_checkpoint(checkpoints["vanilla"], budgets=(0.3,), **FAST)


def test_split_without_labels(
    monkeypatch: pytest.MonkeyPatch, checkpoints: dict[str, Path]
) -> None:
    def unlabelled(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        info = load_image_dataset(*args, **kwargs)  # type: ignore[arg-type]
        if kwargs.get("split") == "test":
            return info
        return replace(
            info, dataset=info.dataset.remove_columns("label"), label_column=None, num_classes=None
        )

    monkeypatch.setattr(protocol_data, "load_image_dataset", unlabelled)
    with pytest.raises(
        ValueError, match=r"train split 'train' of 'digits' has no labels.*train_split="
    ):
        evaluate_checkpoint(checkpoints["gated"], **FAST)


def test_calibration_on_the_test_split_is_refused(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="is the test split"):
        evaluate_checkpoint(checkpoints["gated"], budgets=(0.5,), calibration_split="test", **FAST)


def test_recipe_cli(checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from tests.helpers import load_script

    recipe = load_script("recipes/evaluate.py")
    args = [
        "--dataset",
        "digits",
        "--image_size",
        "16",
        "--max_train",
        "60",
        "--linear_epochs",
        "1",
        "--linear_seeds",
        "0",
        "--cpu",
        "--no_progress",
    ]
    assert recipe.cli(["--checkpoint", str(checkpoints["vanilla"]), "--budgets", "2", *args]) == 2
    assert "error: each budget must be in (0, 1]" in capsys.readouterr().err
    assert recipe.cli(["--checkpoint", str(checkpoints["vanilla"]), *args]) == 0
    assert "| vanilla | - |" in capsys.readouterr().out


def test_a_calibration_that_lands_on_an_evaluated_offset_reuses_its_passes(
    monkeypatch: pytest.MonkeyPatch, checkpoints: dict[str, Path]
) -> None:
    """Eval-mode gates are deterministic: a calibrated budget whose offset is the checkpoint's own
    gives the same features, so the split passes are not run twice (dense + one gated pair)."""
    from types import SimpleNamespace

    from timm_gated_ssl.eval import checkpoint as module

    extracted: list[str] = []
    real_extract = module._extract

    def counting_extract(*args: object, **kwargs: object) -> object:
        extracted.append(str(kwargs.get("desc")))
        return real_extract(*args, **kwargs)

    # Every budget "calibrates" to the checkpoint's own offset (0.0) with some fraction.
    monkeypatch.setattr(module, "calibrate_budget",
                        lambda *a, **k: SimpleNamespace(offset=0.0, mac_fraction=0.42))
    monkeypatch.setattr(module, "_extract", counting_extract)
    result = evaluate_checkpoint(checkpoints["gated"], budgets=(0.7, 0.9), **FAST)
    assert len(extracted) == 4, extracted  # dense train/test, gated train/test: nothing repeated
    gated = [e for e in result.entries if e.mode == "gated"]
    assert [e.calibrated for e in gated] == [False, True, True]
    assert len({(e.linear_top1, e.knn_top1, e.mac_fraction) for e in gated}) == 1
    assert [e.calibration_mac_fraction for e in gated] == [None, 0.42, 0.42]


# ------------------------------------------------------------------------ one row builder
def test_every_entry_is_the_row_evaluate_features_gives_for_its_passes(
    monkeypatch: pytest.MonkeyPatch, checkpoints: dict[str, Path]
) -> None:
    """One path to a row: each entry of evaluate_checkpoint is one evaluate_features call, and
    evaluate_features on the same features (and the same compute) gives an identical row."""
    from timm_gated_ssl.eval import checkpoint as module
    from timm_gated_ssl.eval import entries as entries_module
    from timm_gated_ssl.eval import evaluate_features
    from timm_gated_ssl.eval.channel_usage import channel_usage_from_masks

    passes: dict[str, Any] = {}
    real_extract = module._extract

    def recording_extract(*args: object, **kwargs: object) -> Any:
        passes[str(kwargs["desc"])] = split = real_extract(*args, **kwargs)
        return split

    built: list[object] = []
    real_evaluate = entries_module.evaluate_features

    def recording_evaluate(*args: Any, **kwargs: Any) -> Any:
        built.append(row := real_evaluate(*args, **kwargs))
        return row

    monkeypatch.setattr(module, "_extract", recording_extract)
    monkeypatch.setattr(entries_module, "evaluate_features", recording_evaluate)
    result = evaluate_checkpoint(
        checkpoints["gated"], budgets=(0.8,), vanilla=checkpoints["vanilla"], **FAST
    )
    assert list(result.entries) == built  # no row is made any other way
    dense, own, calibrated, vanilla = result.entries
    assert dense.macs is not None

    def row(tag: str, **kwargs: Any) -> object:
        train, test = passes[f"{tag} train"].features, passes[f"{tag} test"].features
        return evaluate_features(
            train, test, num_classes=10, knn_k=20, linear_seeds=FAST["linear_seeds"],
            linear_epochs=FAST["linear_epochs"], dense_macs=dense.macs, **kwargs,
        )

    def gated(tag: str) -> dict[str, Any]:
        test = passes[f"{tag} test"]
        return {"macs": dense.macs * float(test.fraction.mean()),
                "channel_usage": channel_usage_from_masks(test.masks)}

    assert row("dense", mode="dense", budget=0.5, macs=dense.macs) == dense
    assert row("gated t_d=0.5", mode="gated", budget=0.5, gate_offset=0.0, **gated("gated t_d=0.5")) == own
    assert row(
        "gated t_d=0.8 cal", mode="gated", budget=0.8, calibrated=True,
        calibration_mac_fraction=calibrated.calibration_mac_fraction,
        gate_offset=calibrated.gate_offset, **gated("gated t_d=0.8 cal"),
    ) == calibrated
    assert row("vanilla", mode="vanilla", macs=dense.macs) == vanilla


def test_a_failed_calibration_leaves_the_model_as_it_was(checkpoints: dict[str, Path]) -> None:
    from timm_gated_ssl.errors import CalibrationError

    model = timm.create_model(f"local-dir:{checkpoints['gated']}", pretrained=True).train()
    with pytest.raises(CalibrationError, match="target 0.001 is unreachable"):
        evaluate_checkpoint(model, budgets=(0.001,), **FAST)
    assert model.training
    assert all(float(g.logit_offset) == 0.0 for _, g in timm_gated_ssl.iter_gates(model))


def test_fixed_budget_rows_are_the_plain_export_evaluated_like_every_row(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``fixed`` row per fixed budget: the plain model export_at_budget gives on the calibration
    slice, its MACs counted by torch on that plain model, in the table and the model card."""
    from torch.utils.flop_counter import FlopCounterMode

    from timm_gated_ssl.compact import fixed_budget
    from timm_gated_ssl.hub.card import build_model_card

    exported: list[Any] = []
    real = fixed_budget.export_at_budget

    def recording(*args: Any, **kwargs: Any) -> Any:
        exported.append(result := real(*args, **kwargs))
        return result

    monkeypatch.setattr(fixed_budget, "export_at_budget", recording)
    monkeypatch.setattr(sys.modules["timm_gated_ssl.compact"], "export_at_budget", recording)
    result = evaluate_checkpoint(checkpoints["gated"], fixed_budgets=(0.6,), **FAST)
    fixed = result.entries[2]
    assert [e.mode for e in result.entries] == ["dense", "gated", "fixed"]
    assert fixed.mode == "fixed" and fixed.budget == 0.6 and not fixed.calibrated
    assert len(exported) == 1 and not timm_gated_ssl.has_gates(exported[0].model)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        exported[0].model(torch.zeros(1, 3, 16, 16))
    convs = sum(v for op, v in counter.get_flop_counts()["Global"].items() if "convolution" in str(op)) // 2
    assert fixed.macs == convs and abs(fixed.mac_fraction - 0.6) <= 0.03
    assert fixed.linear_top1 is not None and fixed.knn_top1 is not None
    assert "| fixed | 0.6 |" in result.to_markdown()
    assert EvaluationResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    card = str(build_model_card(repo_id="o/n", architecture="gated_resnet18_cifar", results=result))
    assert "[fixed, t_d=0.6]" in card and "`fixed` rows: a plain timm model" in card
    with pytest.raises(NoGatesError, match="drop --fixed_budgets"):
        evaluate_checkpoint(checkpoints["vanilla"], fixed_budgets=(0.3,), **FAST)
    with pytest.raises(InvalidBudgetError):
        evaluate_checkpoint(checkpoints["gated"], fixed_budgets=(1.2,), **FAST)
