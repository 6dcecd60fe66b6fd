"""A static export is a plain timm model: timm's own push_to_hf_hub and hf-hub loading round-trip it."""

from __future__ import annotations

import timm
import torch
from timm.models import push_to_hf_hub

import timm_gated_ssl  # registers static_resnet; has_gates below
from timm_gated_ssl.compact import export_static


def test_static_export_round_trips_through_the_hub(hub, gated_model) -> None:
    gated_model.eval()
    calib = torch.randn(8, 3, 32, 32)
    static = export_static(gated_model, [calib]).model
    push_to_hf_hub(static, "loopback-user/static-r18")  # HF_TOKEN is the loopback token
    loaded = timm.create_model("hf-hub:loopback-user/static-r18", pretrained=True).eval()
    assert type(loaded) is type(static) and not timm_gated_ssl.has_gates(loaded)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), static(x))
