"""recipes/push_to_hub.py, run in-process against the loopback Hub."""

from __future__ import annotations

import json

from timm.models import save_for_hf

from tests.helpers import load_script


def _recipe():
    return load_script("recipes/push_to_hub.py")


def test_recipe_pushes_a_checkpoint_dir(hub, gated_model, results_dict, tmp_path, capsys) -> None:
    ckpt = tmp_path / "export"
    save_for_hf(gated_model, ckpt, safe_serialization=True)
    (tmp_path / "results.json").write_text(json.dumps(results_dict))
    code = _recipe().cli(["--checkpoint", str(ckpt), "--repo_id", "loopback-org/recipe-test",
                           "--results", str(tmp_path / "results.json"), "--private",
                           "--ssl_method", "vicreg", "--dataset", "cifar10"])
    out = capsys.readouterr().out
    assert code == 0 and "model.safetensors" in out and "hf-hub:loopback-org/recipe-test" in out
    assert hub.repos["loopback-org/recipe-test"].private
    readme = hub.file_content("loopback-org/recipe-test", "README.md").decode()
    assert "- vicreg" in readme and "uoft-cs/cifar10" in readme


def test_recipe_reports_errors_in_one_line(hub, tmp_path, capsys) -> None:
    code = _recipe().cli(["--checkpoint", str(tmp_path / "nothing"), "--repo_id", "a/b"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
