"""ONNX round trips in onnxruntime: a plain timm model, a static export, a gated model's gated mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

import timm_gated_ssl
from timm_gated_ssl import export_at_budget, export_onnx, export_static, gate_mode, iter_gates
from timm_gated_ssl.export import onnx_max_abs_diff

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
SIZE = (3, 16, 16)


def _run(path: Path, images: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": images.numpy()})[0])


def _gated_model() -> torch.nn.Module:
    """A narrow gated ResNet-18 whose gates switch channels off depending on the input."""
    torch.manual_seed(0)
    model = timm.create_model("gated_resnet18_cifar", channels=[8, 16, 32, 64], num_classes=10).eval()
    with torch.no_grad():
        for _, gate in iter_gates(model):
            for p in gate.parameters():
                p.normal_()
    return model


@pytest.mark.parametrize("dynamic", [True, False])
def test_plain_timm_model(tmp_path: Path, dynamic: bool) -> None:
    model = timm.create_model("resnet18", num_classes=7).eval()
    export = export_onnx(model, tmp_path / "plain.onnx", input_size=SIZE, dynamic_batch=dynamic)
    assert export.gate_mode is None and export.dynamic_batch is dynamic
    assert onnx_max_abs_diff(model, export.path, torch.randn(1, *SIZE)) <= 1e-4
    if dynamic:
        assert onnx_max_abs_diff(model, export.path, torch.randn(5, *SIZE)) <= 1e-4


def test_static_export(tmp_path: Path) -> None:
    model = _gated_model()
    images = torch.randn(16, *SIZE)
    static = export_static(model, [images]).model.eval()
    export = export_onnx(static, tmp_path / "static.onnx", input_size=SIZE)
    for batch in (1, 3):
        x = torch.randn(batch, *SIZE)
        with torch.no_grad():
            expected = static(x)
        assert (_run(export.path, x) - expected).abs().max() <= 1e-4


def test_fixed_budget_export(tmp_path: Path) -> None:
    model = _gated_model()
    fixed = export_at_budget(model, [torch.randn(16, *SIZE)], budget=0.5, tol=0.05)
    export = export_onnx(fixed.model.eval(), tmp_path / "fixed.onnx", input_size=SIZE)
    for batch in (1, 3):
        x = torch.randn(batch, *SIZE)
        with torch.no_grad():
            expected = fixed.model(x)
        assert (_run(export.path, x) - expected).abs().max() <= 1e-4


def test_gated_mode_matches_pytorch_gated_mode(tmp_path: Path) -> None:
    model = _gated_model()
    x = torch.randn(6, *SIZE)
    with torch.no_grad():
        dense = model(x)
        with gate_mode(model, "gated"):
            gated = model(x)
            masks = timm_gated_ssl.gate_masks(model)
    fractions = [float(m[0].float().mean()) for m in masks.values()]
    assert min(fractions) < 1.0 and (gated - dense).abs().max() > 1e-2  # the gates really act
    with gate_mode(model, "gated"):
        export = export_onnx(model, tmp_path / "gated.onnx", input_size=SIZE)
    assert export.gate_mode == "gated" and timm_gated_ssl.get_gate_mode(model) == "dense"
    assert not model.training
    got = _run(export.path, x)
    assert (got - gated).abs().max() <= 1e-4  # the data-dependent masks are in the graph
    assert (got[:1] - _run(export.path, x[:1])).abs().max() <= 1e-4  # per-sample masks at batch 1


def test_training_flags_restored_and_bad_input_size(tmp_path: Path) -> None:
    model = timm.create_model("resnet18", num_classes=0).train()
    export_onnx(model, tmp_path / "m.onnx", input_size=SIZE, dynamic_batch=False)
    assert model.training and all(m.training for m in model.modules())
    with pytest.raises(ValueError, match=r"input_size must be \(channels, height, width\)"):
        export_onnx(model, tmp_path / "bad.onnx", input_size=(16, 16))


def test_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from timm.models import save_for_hf

    from tests.helpers import load_script

    save_for_hf(_gated_model(), tmp_path / "ckpt", safe_serialization=True)
    recipe = load_script("recipes/export_onnx.py")
    code = recipe.cli(["--checkpoint", str(tmp_path / "ckpt"), "--output", str(tmp_path / "g.onnx"),
                        "--mode", "gated", "--image_size", "16", "--check"])
    out = capsys.readouterr().out
    assert code == 0 and "mode gated" in out and "batch 4: max |onnxruntime - pytorch|" in out
    assert recipe.cli(["--checkpoint", str(tmp_path / "none"), "--output", str(tmp_path / "x.onnx")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: ")


def test_cli_fixed_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from timm.models import save_for_hf

    from tests.helpers import load_script

    save_for_hf(_gated_model(), tmp_path / "ckpt", safe_serialization=True)
    recipe = load_script("recipes/export_onnx.py")
    code = recipe.cli(["--checkpoint", str(tmp_path / "ckpt"), "--output", str(tmp_path / "f.onnx"),
                        "--fixed_budget", "0.5", "--dataset", "digits", "--static_images", "64",
                        "--image_size", "16", "--check"])
    out = capsys.readouterr().out
    assert code == 0, out
    fraction = float(out.split("fixed budget 0.5: ")[1].split()[0])
    assert abs(fraction - 0.5) <= 0.03 and "mode plain" in out
    diffs = [float(line.rsplit("=", 1)[1]) for line in out.splitlines() if "max |onnxruntime - pytorch|" in line]
    assert len(diffs) == 2 and max(diffs) <= 1e-4
