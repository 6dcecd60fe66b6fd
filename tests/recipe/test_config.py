from __future__ import annotations

from pathlib import Path

import pytest

from timm_gated_ssl.budget import BoundLoss
from timm_gated_ssl.recipe import PretrainConfig, parse_overrides

# Pretraining configs; finetune_*.yaml are FinetuneConfig files (tests/finetune/test_configs.py).
CONFIGS = sorted(p for p in (Path(__file__).parents[2] / "recipes" / "configs").glob("*.yaml")
                 if not p.stem.startswith("finetune_"))


def test_overrides_are_yaml_scalars() -> None:
    assert parse_overrides(["--lr", "0.1", "--gating=false", "--model-kwargs", "{a: 2}"]) == {
        "lr": 0.1, "gating": False, "model_kwargs": {"a": 2}
    }


def test_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\nbudget: 0.2\n")
    config = PretrainConfig.load(path, ["--epochs", "5"])
    assert (config.epochs, config.budget) == (5, 0.2)
    assert config.model_args() == {"num_classes": 0, "budget": 0.2, "separate_bn": True}


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["--lrr", "1"], r"unknown config key\(s\) \['lrr'\]; valid keys: model, "),
        (["--method", "moco"], "unknown method 'moco'; valid methods: vicreg, simsiam, simclr, byol"),
        (["--budget", "1.2"], r"in \(0, 1\]"),
        (["--epochs", "x"], "'epochs' must be int"),
        (["--batch_size", "0"], "batch_size must be >= 1"),
        (["--optimizer", "adam"], "valid: lars, sgd, adamw"),
        (["--lr"], "--lr needs a value"),
    ],
)
def test_bad_config(overrides: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PretrainConfig.load(None, overrides)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_load(path: Path) -> None:
    config = PretrainConfig.load(path)
    if path.stem != "quickstart":
        # The paper's recipe: LARS, lr 0.3 per 256, 500 epochs, 10 warm-up epochs, lambda 5.
        assert (config.optimizer, config.lr, config.epochs, config.warmup_epochs) == ("lars", 0.3, 500, 10)
        assert config.budget_weight == 5.0 and config.lars_trust == 0.02
        assert config.gating == ("vanilla" not in path.stem)


PAPER_CONFIGS = [p for p in CONFIGS if "_dual_" in p.stem]


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_paper_configs_keep_the_paper_settings(path: Path) -> None:
    """Every paper config states the paper's loss settings, and its bound relaxation on progress
    is, at every step, the paper's per-epoch one."""
    config = PretrainConfig.load(path)
    assert (config.bound_centre, config.pairing, config.distill_weight) == ("sqrt", "asymmetric", 0.0)
    assert (config.gate_noise_schedule, config.dense_warmup_epochs) == ("constant", 0.0)
    as_run = BoundLoss(schedule=config.bound_schedule, decay=config.bound_decay, alpha=config.bound_alpha)
    literal = BoundLoss(schedule="epoch", alpha=0.02)  # METHOD.md: p = exp(-0.02 * epoch)
    steps_per_epoch = 98  # CIFAR's 50k / 512; the equality holds for any value
    total = config.epochs * steps_per_epoch
    for step in range(0, total + 1, 997):
        p_run = as_run.relaxation(progress=step / total, epoch=step / steps_per_epoch)
        assert p_run == pytest.approx(literal.relaxation(epoch=step / steps_per_epoch), rel=1e-12)
