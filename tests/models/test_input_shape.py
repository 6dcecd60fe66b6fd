"""A registered model given a wrongly shaped batch says which shape it takes, before anything runs.

Every model registered by this library is swept (as timm's tests sweep ``list_models``). The check
must refuse only what timm itself refuses (a ViT built with ``dynamic_img_size`` takes any size, a
ResNet any spatial size), leave outputs bit for bit as timm's, and stay out of ``torch.export``
(a dynamic image size stays dynamic), FX and TorchScript.
"""

from __future__ import annotations

import re
import warnings

import pytest
import timm
import torch
from timm.models import create_feature_extractor, model_entrypoint
from timm.models.resnet import ResNet
from timm.models.vision_transformer import VisionTransformer

import timm_gated_ssl  # noqa: F401  (registers the models)
from tests.helpers import randomize_norms
from timm_gated_ssl.errors import InputShapeError

OURS = sorted(n for n in timm.list_models() if model_entrypoint(n).__module__.startswith("timm_gated_ssl.models."))
SMALL_RESNET = {"layers": (1, 1, 1, 1), "channels": (8, 16, 32, 64)}
SMALL_VIT = {"depth": 1}


def _small(name: str, **kwargs: object) -> torch.nn.Module:
    small = SMALL_VIT if "vit" in name else SMALL_RESNET
    return timm.create_model(name, num_classes=5, **small, **kwargs).eval()


def _native_size(name: str) -> int:
    return timm.models.get_pretrained_cfg(name).input_size[-1]


def test_every_registered_family_is_swept() -> None:
    assert {"gated_resnet18_cifar", "gated_resnet50", "resnet18_cifar", "gated_vit_tiny_patch4_32",
            "gated_vit_base_patch16_224", "vit_tiny_patch4_32"} <= set(OURS)


@pytest.mark.parametrize("name", OURS)
def test_wrong_shapes_name_the_expected_one(name: str) -> None:
    model = _small(name)
    size = _native_size(name)
    stem_calls = []
    stem = model.patch_embed if "vit" in name else model.conv1
    stem.register_forward_pre_hook(lambda module, args: stem_calls.append(1))
    shape = re.escape(f"(B, 3, {size}, {size})" if "vit" in name else "(B, 3, H, W)")
    cls = type(model).__name__
    cases = [
        (torch.randn(3, size, size),
         (rf"^{cls}.forward expects a batch of images of shape {shape}, got shape \(3, {size}, {size}\): "
          r"add the batch dimension with images.unsqueeze\(0\)$")),
        (torch.randn(2, 1, size, size), rf"shape {shape}: 3 channels, got 1"),
        (torch.randn(2, size, size, 3), rf"shape {shape}: 3 channels, got {size}"),  # channels last by mistake
    ]
    if "vit" in name:
        cases.append((torch.randn(2, 3, size + 8, size + 8),
                      rf"shape {shape} \(this ViT has a fixed input size\), got {size + 8}x{size + 8}"))
    for images, match in cases:
        for call in (model, model.forward_features):  # forward runs forward_features: one check
            with pytest.raises(InputShapeError, match=match) as info:
                call(images)
            assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    with pytest.raises(InputShapeError, match=r"forward_intermediates expects a batch"):
        model.forward_intermediates(torch.randn(3, size, size))
    assert stem_calls == []  # refused before the stem ran, not by torch deep inside it


def test_what_timm_accepts_still_runs() -> None:
    resnet = _small("gated_resnet18_cifar")
    assert resnet(torch.randn(2, 3, 20, 24)).shape == (2, 5)  # any spatial size
    vit = _small("gated_vit_tiny_patch4_32", dynamic_img_size=True)
    assert vit(torch.randn(2, 3, 48, 40)).shape == (2, 5)  # no fixed size: any multiple of the patch
    with pytest.raises(InputShapeError, match=r"\(B, 3, H, W\): 3 channels, got 1"):
        vit(torch.randn(2, 1, 48, 40))  # the channels still count
    features = timm.create_model("gated_vit_tiny_patch4_32", features_only=True, out_indices=(0,), **SMALL_VIT)
    assert [f.shape for f in features(torch.randn(2, 3, 32, 32))] == [(2, 192, 8, 8)]
    with pytest.raises(InputShapeError, match="fixed input size"):
        features(torch.randn(2, 3, 64, 64))


def test_padded_vit_keeps_timms_fixed_size() -> None:
    """``dynamic_img_pad`` without ``dynamic_img_size``: timm still asserts the exact size."""
    kwargs = {"img_size": 32, "patch_size": 4, "embed_dim": 192, "depth": 1, "num_heads": 3, "dynamic_img_pad": True}
    with pytest.raises(AssertionError, match=r"Input height \(36\) doesn't match model \(32\)"):
        VisionTransformer(**kwargs)(torch.randn(1, 3, 36, 36))  # timm's own verdict
    gated = timm.create_model("gated_vit_tiny_patch4_32", depth=1, dynamic_img_pad=True)
    with pytest.raises(InputShapeError, match=r"\(B, 3, 32, 32\) \(this ViT has a fixed input size\), got 36x36"):
        gated(torch.randn(1, 3, 36, 36))


@torch.no_grad()
def test_dense_outputs_are_bit_identical_to_timm() -> None:
    x = torch.randn(3, 3, 64, 64)
    gated = randomize_norms(timm.create_model("gated_resnet18", num_classes=7, **SMALL_RESNET)).eval()
    plain = ResNet(num_classes=7, block=timm.models.resnet.BasicBlock, **SMALL_RESNET).eval()
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if k in plain.state_dict()})
    assert torch.equal(gated(x), plain(x))
    assert torch.equal(gated.forward_features(x), plain.forward_features(x))
    for a, b in zip(gated.forward_intermediates(x, intermediates_only=True),
                    plain.forward_intermediates(x, intermediates_only=True)):
        assert torch.equal(a, b)

    x = torch.randn(3, 3, 32, 32)
    vit = timm.create_model("gated_vit_tiny_patch4_32", num_classes=7, **SMALL_VIT).eval()
    reference = VisionTransformer(img_size=32, patch_size=4, embed_dim=192, num_heads=3, num_classes=7,
                                  **SMALL_VIT).eval()
    reference.load_state_dict({k: v for k, v in vit.state_dict().items() if k in reference.state_dict()})
    assert torch.equal(vit(x), reference(x))
    assert torch.equal(vit.forward_features(x), reference.forward_features(x))


def test_export_keeps_a_dynamic_image_size_dynamic() -> None:
    vit = _small("gated_vit_tiny_patch4_32", dynamic_img_size=True)
    auto = torch.export.Dim.AUTO
    program = torch.export.export(vit, (torch.randn(2, 3, 32, 32),), dynamic_shapes=({0: auto, 2: auto, 3: auto},))
    other = torch.randn(3, 3, 48, 40)  # another batch and size: nothing was specialised by the check
    with torch.no_grad():
        assert torch.allclose(program.module()(other), vit(other), atol=1e-5)


def test_fx_and_torchscript_still_trace_the_plain_baselines() -> None:
    x = torch.randn(2, 3, 32, 32)
    for name, node in (("resnet18_cifar", "layer1"), ("vit_tiny_patch4_32", "blocks.0")):
        model = _small(name)
        extractor = create_feature_extractor(model, return_nodes=[node])  # FX: the input is a proxy
        assert extractor(x)[node].shape[0] == 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated
            scripted = torch.jit.script(model)
        with torch.no_grad():
            assert torch.equal(scripted(x), model(x))
        with pytest.raises(InputShapeError):
            model(x[0])  # scripting a copy left the eager model's check in place
