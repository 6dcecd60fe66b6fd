"""Fixtures for the hub tests: a loopback Hub server and a client pointed at it.

Why the client is re-pointed at fixture time rather than through ``HF_ENDPOINT`` alone:
``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_DISABLE_XET`` and ``HF_HUB_OFFLINE``
once, into ``huggingface_hub.constants``, when it is first imported, and ``import timm`` imports it.
In a full ``pytest`` run other test packages (collected before ``tests/hub``) import timm long before
this conftest is loaded, so setting the environment here would come too late, and the server's
port is only known once it runs. The ``hub`` fixture therefore does both:

1. sets the environment (``HF_ENDPOINT``, ``HF_HUB_DISABLE_XET=1``, a temporary ``HF_HOME`` and
   cache, the fake ``HF_TOKEN``; ``HF_HUB_OFFLINE`` removed) for anything started in a subprocess
   and for code that reads the environment at call time (``get_token``);
2. patches the same values into ``huggingface_hub.constants`` (which the library reads at call time
   as ``constants.ENDPOINT`` etc.) and into the module-level default ``HfApi``, then checks that a
   resolve URL really points at the loopback server, so a test can never reach huggingface.co.

``monkeypatch`` undoes all of it after each test; nothing needs to move to ``tests/conftest.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

try:  # tests/ as a package, or (pytest's default rootdir-less layout) tests/hub on sys.path
    from .loopback_server import LoopbackHub
except ImportError:
    from loopback_server import LoopbackHub  # type: ignore[no-redef]


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[LoopbackHub]:
    """A running loopback Hub with ``huggingface_hub`` (and so timm) pointed at it.

    The fake write token ``LoopbackHub.TOKEN`` is in ``HF_TOKEN``; tests that need no token delete
    it with ``monkeypatch.delenv("HF_TOKEN")``. Fails the test if the client sent a request that the
    server does not implement.
    """
    import huggingface_hub
    from huggingface_hub import constants, file_download

    server = LoopbackHub().start()
    home = tmp_path / "hf_home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    env = {
        "HF_ENDPOINT": server.url,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HF_TOKEN": server.TOKEN,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGING_FACE_HUB_TOKEN",
                "HF_OIDC_RESOURCE", "HF_TOKEN_PATH", "HF_HUB_ENABLE_HF_TRANSFER"):
        monkeypatch.delenv(key, raising=False)

    patched = {
        "ENDPOINT": server.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": server.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
    }
    for name, value in patched.items():
        monkeypatch.setattr(constants, name, value, raising=False)
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", server.url)

    url = file_download.hf_hub_url("ns/name", "config.json")
    assert url.startswith(server.url + "/"), f"client not re-pointed at the loopback Hub: {url}"
    assert os.environ["HF_ENDPOINT"] == server.url
    try:
        yield server
    finally:
        server.stop()
    assert not server.unknown_requests, f"client sent unserved requests: {server.unknown_requests}"


@pytest.fixture
def gated_model():
    """A small gated CIFAR ResNet encoder (one block per stage) with calibrated budgets."""
    import timm
    import torch

    import timm_gated_ssl  # noqa: F401  (registers the gated models)

    torch.manual_seed(0)
    model = timm.create_model("gated_resnet18_cifar", num_classes=0, budget=0.3,
                              layers=(1, 1, 1, 1), calibrated_budgets={"0.3": 0.25, "0.5": -0.5})
    with torch.no_grad():  # non-trivial norm statistics, so that a bad load shows
        for name, buffer in model.named_buffers():
            if buffer.dtype.is_floating_point and not name.endswith("logit_offset"):
                buffer.uniform_(0.5, 1.5)
    # The gates' offsets are the operating point of the selected calibrated budget (0.3 here).
    assert all(float(b) == 0.25 for n, b in model.named_buffers() if n.endswith("logit_offset"))
    return model.eval()


@pytest.fixture
def results_dict() -> dict:
    """Evaluation results as ``EvaluationResult.to_dict()`` writes them."""
    from timm_gated_ssl.results import EvaluationResult, ModeEvaluation

    return EvaluationResult(
        model_name="gated_resnet18_cifar.vicreg_cifar10",
        dataset="cifar10",
        entries=(
            ModeEvaluation(mode="dense", budget=0.3, linear_top1=90.38, knn_top1=89.5,
                           knn1_top1=87.25, macs=5.57e8, mac_fraction=1.0),
            ModeEvaluation(mode="gated", budget=0.3, linear_top1=90.27, knn_top1=89.0,
                           knn1_top1=86.5, macs=1.87e8, mac_fraction=0.3357),
            ModeEvaluation(mode="gated", budget=0.5, linear_top1=90.40, knn_top1=89.25,
                           macs=2.84e8, mac_fraction=0.5098),
        ),
    ).to_dict()
