"""extract_features against direct forwards, batch formats, Accelerate gathering, errors."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from timm_gated_ssl.eval.features import MISSING_LABEL, Features, extract_features


class TinyNet(nn.Module):
    """Conv + BN + global pool: its output depends on train/eval mode through BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x)).relu().mean(dim=(2, 3))


def _data(n: int = 10, size: int = 8) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, size, size, generator=g), torch.arange(n) % 3


def _direct(model: nn.Module, images: Tensor) -> Tensor:
    model.eval()
    with torch.no_grad():
        return model(images)


def test_tiny_module_matches_direct_forward_and_restores_mode() -> None:
    torch.manual_seed(0)
    model = TinyNet().train()
    images, labels = _data()
    loader = DataLoader(TensorDataset(images, labels), batch_size=4)
    out = extract_features(model, loader, progress=False)
    assert model.training  # previous mode restored
    assert out.features.dtype == torch.float32 and out.labels.dtype == torch.int64
    assert out.features.device.type == "cpu" and len(out) == 10 and out.dim == 6
    torch.testing.assert_close(out.features, _direct(model, images))
    assert torch.equal(out.labels, labels)


def test_timm_resnet_num_classes_0() -> None:
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=0, pretrained=False)
    images, labels = _data(n=6, size=32)
    loader = DataLoader(TensorDataset(images, labels), batch_size=4)
    out = extract_features(model, loader, progress=False)
    assert out.features.shape == (6, model.num_features)
    torch.testing.assert_close(out.features, _direct(model, images), rtol=1e-4, atol=1e-5)


def test_dict_batches_and_normalize() -> None:
    model = TinyNet()
    images, labels = _data()
    batches = [
        {"image": images[:5], "label": labels[:5].tolist()},
        {"image": images[5:], "label": labels[5:].tolist()},
    ]
    out = extract_features(model, batches, normalize=True, progress=False)
    torch.testing.assert_close(out.features.norm(dim=1), torch.ones(10))
    expected = torch.nn.functional.normalize(_direct(model, images), dim=1)
    torch.testing.assert_close(out.features, expected)
    assert out.labels.tolist() == labels.tolist()
    custom = [{"img": images, "fine_label": labels}]
    out2 = extract_features(
        model, custom, image_key="img", label_key="fine_label", progress=False, normalize=True
    )
    torch.testing.assert_close(out2.features, expected)


def test_feature_fn_and_mode_context() -> None:
    model = TinyNet()
    images, labels = _data()
    calls: list[tuple[str, object]] = []

    @contextlib.contextmanager
    def mode_context(m: nn.Module, mode: str) -> Iterator[None]:
        calls.append(("enter", mode))
        assert m is model
        yield
        calls.append(("exit", mode))

    out = extract_features(
        model,
        [(images, labels)],
        feature_fn=lambda x: 2 * model(x),
        mode="gated",
        mode_context=mode_context,
        progress=False,
    )
    assert calls == [("enter", "gated"), ("exit", "gated")]
    torch.testing.assert_close(out.features, 2 * _direct(model, images))


def test_unlabeled_data() -> None:
    model = TinyNet()
    images, _ = _data()
    with pytest.raises(ValueError, match="batch 0 yields no labels"):
        extract_features(model, [images], progress=False)
    with pytest.raises(ValueError, match="batch 0 yields no labels.*'label'"):
        extract_features(model, [{"image": images}], progress=False)
    out = extract_features(model, [(images,)], require_labels=False, progress=False)
    assert out.labels.tolist() == [MISSING_LABEL] * 10 and not out.has_labels


def test_errors() -> None:
    model = TinyNet()
    images, labels = _data()
    with pytest.raises(ValueError, match="no batches"):
        extract_features(model, [], progress=False)
    with pytest.raises(ValueError, match=r"pooled features \[B=10, D\], got \(10, 6, 8, 8\)"):
        extract_features(model, [(images, labels)], feature_fn=model.conv, progress=False)
    with pytest.raises(ValueError, match="mode='gated' needs mode_context"):
        extract_features(model, [(images, labels)], mode="gated", progress=False)
    with pytest.raises(ValueError, match="no image key 'image'.*\\['img'\\]"):
        extract_features(model, [{"img": images}], progress=False)
    with pytest.raises(ValueError, match=r"labels of a batch must have shape \[10\]"):
        extract_features(model, [(images, labels[:3])], progress=False)
    with pytest.raises(ValueError, match="integer class indices"):
        extract_features(model, [(images, labels.float())], progress=False)
    with pytest.raises(TypeError, match="got int"):
        extract_features(model, [3], progress=False)
    with pytest.raises(ValueError, match="disagree on N"):
        Features(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))


def test_accelerator_single_process() -> None:
    AcceleratorState._reset_state(True)
    try:
        accelerator = Accelerator(cpu=True)
        torch.manual_seed(0)
        model = TinyNet()
        images, labels = _data()
        loader = DataLoader(TensorDataset(images, labels), batch_size=4)
        p_model, p_loader = accelerator.prepare(model, loader)
        out = extract_features(p_model, p_loader, accelerator=accelerator, progress=True)
        torch.testing.assert_close(out.features, _direct(model, images))
        assert torch.equal(out.labels, labels)
    finally:
        AcceleratorState._reset_state(True)


@pytest.mark.slow
def test_accelerator_two_processes_drops_duplicated_tail(tmp_path: Path) -> None:
    result_file = tmp_path / "result.json"
    script = Path(__file__).with_name("dist_features_check.py")
    subprocess.run([sys.executable, str(script), str(result_file)], check=True, timeout=120)
    result = json.loads(result_file.read_text())
    expected_labels = sorted((torch.arange(10) % 3).tolist())
    assert result == {"num_processes": 2, "n": 10, "close": True, "labels": expected_labels}
