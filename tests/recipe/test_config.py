from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from timm_gated_ssl.budget import BoundLoss
from timm_gated_ssl.errors import ConfigError
from tests.recipe.conftest import load_shipped_config
from timm_gated_ssl.recipe import PretrainConfig, parse_overrides

# Pretraining configs; finetune_*.yaml are FinetuneConfig files (tests/finetune/test_configs.py).
CONFIGS = sorted(p for p in (Path(__file__).parents[2] / "recipes" / "configs").glob("*.yaml")
                 if not p.stem.startswith("finetune_"))


def test_overrides_are_yaml_scalars() -> None:
    assert parse_overrides(["--lr", "0.1", "--gating=false", "--model-kwargs", "{a: 2}"]) == {
        "lr": 0.1, "gating": False, "model_kwargs": {"a": 2}
    }


def test_list_flags_take_several_values_as_in_evaluate_py() -> None:
    """One spelling of list flags across the recipes: ``--budgets 0.3 0.5`` (also a YAML list)."""
    from timm_gated_ssl.finetune import FinetuneConfig

    assert parse_overrides(["--budgets", "0.3", "0.5", "--lr", "0.1"]) == {"budgets": [0.3, 0.5], "lr": 0.1}
    assert parse_overrides(["--budgets", "[0.3, 0.5]"]) == {"budgets": [0.3, 0.5]}
    assert parse_overrides(["--budgets", "-0.5", "0.5"]) == {"budgets": [-0.5, 0.5]}  # a sign is no flag
    spelled = [FinetuneConfig.load(None, ["--checkpoint", "c", "--dataset", "d", "--budgets", *b]).budgets
               for b in (["0.3", "0.5"], ["[0.3, 0.5]"])]
    assert spelled == [[0.3, 0.5], [0.3, 0.5]]
    with pytest.raises(ConfigError, match="'lr' must be float, got \\[0.1, 0.2\\]"):
        PretrainConfig.load(None, ["--lr", "0.1", "0.2"])


def test_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\nbudget: 0.2\n")
    config = PretrainConfig.load(path, ["--epochs", "5", "--warmup_epochs", "1"])
    assert (config.epochs, config.budget) == (5, 0.2)
    assert config.model_args() == {"num_classes": 0, "budget": 0.2, "separate_bn": True}


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["--lrr", "1"], r"unknown config key\(s\) 'lrr' \(did you mean 'lr'\?\); valid keys: model, "),
        (["--method", "moco"], "unknown method 'moco'; valid methods: vicreg, simsiam, simclr, byol"),
        (["--budget", "1.2"], r"in \(0, 1\]"),
        (["--epochs", "x"], "'epochs' must be int"),
        (["--batch_size", "0"], "batch_size must be >= 2"),
        (["--batch_size", "1"], "batch_size must be >= 2"),
        (["--image_size", "0"], "image_size must be >= 1"),
        (["--image_size", "-3"], "image_size must be >= 1"),
        (["--lr", ".nan"], "lr must be a finite number"),
        (["--budget_weight", ".inf"], "budget_weight must be a finite number"),
        (["--momentum", "1.0"], r"momentum must be in \[0, 1\)"),
        (["--byol_momentum", "-0.1"], r"byol_momentum must be in \[0, 1\)"),
        (["--knn_temperature", "0"], "knn_temperature must be > 0"),
        (["--seed", "-1"], "seed must be in"),
        (["--min_lr", "1.0"], "min_lr .* must be <= lr"),
        (["--train_subset", "0"], "train_subset must be >= 1"),
        (["--knn_max_bank", "0"], "knn_max_bank must be >= 1"),
        (["--eval_split", "null"], "set both, or both to null"),
        (["--knn_every", "1", "--eval_split", "null", "--eval_train_split", "null"], "knn_every=1 needs"),
        (["--train_split", "''"], "train_split must be a non-empty string"),
        (["--hub_id", "cifar"], "hub_id must be a Hub dataset id"),
        (["--model_kwargs", "{budget: 0.2}"], "model_kwargs may not set budget"),
        (["--model_kwargs", "{num_classes: 10}"], "model_kwargs may not set num_classes"),
        (["--model_kwargs", "{foo: 1"], r"--model_kwargs '\{foo: 1': line 1, column \d+: malformed YAML"),
        (["--augmentation", "gpu"], "unknown augmentation 'gpu'; valid: batched, per_image"),
        (["--lr", "--epochs", "3"], "--lr needs a value"),
        (["--optimizer", "adam"], "valid: lars, sgd, adamw"),
        (["--lr"], "--lr needs a value"),
    ],
)
def test_bad_config(overrides: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PretrainConfig.load(None, overrides)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("epochs: 3\nbudget: [0.2\n", r"c\.yaml: line \d+, column \d+: malformed YAML"),
        ("epochs: 3\n  lr: 0.1\n", r"c\.yaml: line 2, column 5: malformed YAML"),
        ("epochs: 3\nepochs: 4\n", r"c\.yaml: line 2, column 1: malformed YAML: key 'epochs' is given twice"),
        ("- epochs\n", "c.yaml: a config must be a mapping"),
        ("lr: .nan\n", "lr must be a finite number"),
    ],
)
def test_malformed_yaml_names_file_line_and_column(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        PretrainConfig.load(path)
    assert "\n" not in str(info.value)


def test_missing_or_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        PretrainConfig.load(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        PretrainConfig.load(tmp_path)
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00lr")
    with pytest.raises(ConfigError, match="cannot read config file"):
        PretrainConfig.load(tmp_path / "bin.yaml")


def test_every_float_field_must_be_finite() -> None:
    # Also fields without a range of their own (added later): a YAML .nan is a float.
    for field in dataclasses.fields(PretrainConfig):
        if field.type in ("float", "float | None"):
            with pytest.raises(ConfigError, match=f"{field.name} must be"):
                PretrainConfig.load(None, [f"--{field.name}", ".nan"])

PAPER_DATASETS = ("cifar10", "cifar100", "stl10", "imagenet100")  # the rows of the paper's Table 1


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_load(path: Path) -> None:
    config = load_shipped_config(path)
    if path.stem.split("_")[0] in PAPER_DATASETS:
        # The paper's recipe: LARS, lr 0.3 per 256, 500 epochs, 10 warm-up epochs, lambda 5.
        assert (config.optimizer, config.lr, config.epochs, config.warmup_epochs) == ("lars", 0.3, 500, 10)
        assert config.budget_weight == 5.0 and config.lars_trust == 0.02
        assert config.gating == ("vanilla" not in path.stem)


PAPER_CONFIGS = [p for p in CONFIGS if p.stem.split("_")[0] in PAPER_DATASETS and "_dual_" in p.stem]


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_paper_configs_keep_the_paper_settings(path: Path) -> None:
    """Every paper config states the paper's loss settings, and its bound relaxation on progress
    is, at every step, the paper's per-epoch one."""
    config = PretrainConfig.load(path)
    assert (config.bound_centre, config.pairing, config.distill_weight) == ("sqrt", "asymmetric", 0.0)
    assert (config.gate_noise_schedule, config.dense_warmup_epochs) == ("constant", 0.0)
    as_run = BoundLoss(schedule=config.bound_schedule, decay=config.bound_decay, alpha=config.bound_alpha)
    literal = BoundLoss(schedule="epoch", alpha=0.02)  # the paper: p = exp(-0.02 * epoch)
    steps_per_epoch = 98  # CIFAR's 50k / 512; the equality holds for any value
    total = config.epochs * steps_per_epoch
    for step in range(0, total + 1, 997):
        p_run = as_run.relaxation(progress=step / total, epoch=step / steps_per_epoch)
        assert p_run == pytest.approx(literal.relaxation(epoch=step / steps_per_epoch), rel=1e-12)


@pytest.mark.parametrize(("raw", "value"), [("1e-3", 1e-3), ("5E-4", 5e-4), ("2", 2.0), (".5", 0.5)])
def test_every_float_that_python_reads_is_accepted(raw: str, value: float) -> None:
    """YAML 1.1 reads ``1e-3`` as a string; the finetune recipe accepted it, pretraining refused it."""
    assert PretrainConfig.load(None, ["--lr", raw]).lr == value


def test_gate_levels_without_width_gates_is_refused() -> None:
    from timm_gated_ssl.recipe import check_environment

    config = PretrainConfig.load(None, ["--model_kwargs", "{channels: [8, 16, 32, 64], gate_levels: 16}"])
    with pytest.raises(ValueError, match=r"model_kwargs sets gate_levels=16, but 'gated_resnet18_cifar' builds "
                                         r"channel gates, which have no levels: add gate_type: width"):
        check_environment(config)
    check_environment(PretrainConfig.load(  # with width gates it is what it says
        None, ["--model_kwargs", "{channels: [8, 16, 32, 64], gate_type: width, gate_levels: 4}"]))


def test_both_recipes_share_one_config_loader() -> None:
    """One base: the same strict YAML, coercion and range messages for both configs."""
    from timm_gated_ssl.finetune import FinetuneConfig
    from timm_gated_ssl.recipe.config_base import RecipeConfig

    assert issubclass(PretrainConfig, RecipeConfig) and issubclass(FinetuneConfig, RecipeConfig)
    for cls in (PretrainConfig, FinetuneConfig):
        for overrides, match in ((["--epochs", "0"], "epochs must be >= 1, got 0"),
                                 (["--lr", ".inf"], "lr must be a finite number"),
                                 (["--max_steps", "0"], "max_steps must be >= 1 or null, got 0"),
                                 (["--epochs", "x"], "config key 'epochs' must be int, got \"x\""),
                                 (["--lrr", "1"], r"'lrr' \(did you mean 'lr'\?\)")):
            with pytest.raises(ValueError, match=match):
                cls.load(None, overrides)


def test_both_configs_round_trip_through_their_yaml(tmp_path: Path) -> None:
    """save() then load() gives the same config, atomically written with the umask's permissions."""
    import stat

    from timm_gated_ssl.finetune import FinetuneConfig

    for config in (PretrainConfig.load(None, ["--lr", "1e-3", "--model_kwargs", "{cifar_stem_padding: 2}",
                                              "--budget", "0.3", "--image_size", "28"]),
                   FinetuneConfig.load(None, ["--mode", "full", "--budget", "0.3", "--budgets", "[0.1, 0.5]",
                                              "--checkpoint", "runs/x", "--dataset", "digits", "--lr", "5e-4"])):
        path = tmp_path / f"{type(config).__name__}.yaml"
        config.save(path)
        assert type(config).load(path) == config
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()
        assert not list(tmp_path.glob(".tmp_*"))


def _umask() -> int:
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    return mask
