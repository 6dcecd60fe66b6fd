"""Damaged weights are never uploaded, and offline or unreachable Hubs
fail with the HubError family, in one line that says what to do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from timm.models import save_for_hf

from timm_gated_ssl.hub import (
    CheckpointError,
    HubConnectionError,
    HubError,
    HubOfflineError,
    load_from_hub,
    push_to_hub,
)
from timm_gated_ssl.hub.errors import network_error

ROOT = Path(__file__).resolve().parents[2]
REPO = "loopback-org/failures"


def _truncated_checkpoint(model, folder: Path) -> Path:
    save_for_hf(model, folder, safe_serialization=True)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    return weights


def test_push_refuses_truncated_weights_before_any_request(hub, gated_model, tmp_path) -> None:
    weights = _truncated_checkpoint(gated_model, tmp_path / "ckpt")
    before = len(hub.requests)
    with pytest.raises(CheckpointError, match=rf"{weights} is damaged or truncated.*nothing was uploaded"):
        push_to_hub(tmp_path / "ckpt", REPO)
    assert len(hub.requests) == before and not hub.repos


def test_push_offline_mode(hub, gated_model, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubOfflineError, match="HF_HUB_OFFLINE") as info:
        push_to_hub(gated_model, REPO)
    assert isinstance(info.value, HubError) and info.value.__cause__ is None


def test_push_without_network(hub, gated_model, monkeypatch) -> None:
    import huggingface_hub
    from huggingface_hub import constants

    dead = "http://127.0.0.1:9"  # the discard port: connection refused
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", dead)
    with pytest.raises(HubConnectionError, match=r"cannot reach the Hub at http://127\.0\.0\.1:9.*network"):
        push_to_hub(gated_model, REPO)


def test_load_offline_without_cache(hub, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubOfflineError, match=r"downloading loopback-org/absent: the files are not in the "
                                              r"local cache and offline mode is on"):
        load_from_hub("loopback-org/absent")


def test_network_error_translation() -> None:
    assert isinstance(network_error(ConnectionRefusedError(111, "refused"), action="x"), HubConnectionError)
    assert isinstance(network_error(TimeoutError("slow"), action="x"), HubConnectionError)
    assert network_error(KeyError("other"), action="x") is None


def test_push_script_one_line_for_truncated_weights(gated_model, tmp_path) -> None:
    _truncated_checkpoint(gated_model, tmp_path / "ckpt")
    done = subprocess.run(
        [sys.executable, "recipes/push_to_hub.py", "--checkpoint", str(tmp_path / "ckpt"), "--repo_id", REPO],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "HF_TOKEN": "hf_x"},
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "model.safetensors is damaged" in lines[0]


@pytest.mark.parametrize("name", ["hf-hub:not a/valid id", "hf-hub:org/na--me..", "a/b/c"])
def test_load_refuses_a_malformed_id_as_our_error(name: str) -> None:
    """huggingface_hub's raw HFValidationError used to escape; now it is ours, before any request."""
    from timm_gated_ssl.hub import InvalidRepoIdError

    with pytest.raises(InvalidRepoIdError, match="repo_id"):
        load_from_hub(name)
