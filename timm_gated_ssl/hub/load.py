"""Load a published checkpoint with timm, with errors that say what to do.

``timm.create_model("hf-hub:ORG/NAME", pretrained=True)`` works by itself once ``import
timm_gated_ssl`` has registered the gated architectures; without that import timm only says
``RuntimeError: Unknown model (gated_resnet18_cifar)``. :func:`load_from_hub` makes the same call,
checks the architecture first and turns Hub and registry failures into this package's errors.

Example:
    >>> import timm_gated_ssl
    >>> model = timm_gated_ssl.hub.load_from_hub("my-org/gated-resnet18-cifar10",
    ...                                          budget=0.3)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from typing import Any

import timm
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from timm.models import is_model, list_models
from torch import nn

from .errors import (
    HubAuthError,
    HubError,
    HubRepoNotFoundError,
    UnknownArchitectureError,
    network_error,
)
from .ids import check_repo_id

__all__ = ["check_architecture", "load_from_hub"]

_HF_PREFIX = "hf-hub:"


def check_architecture(architecture: str, *, source: str = "the checkpoint") -> str:
    """Return ``architecture`` if timm knows it.

    Raises:
        InvalidRepoIdError: ``name`` is not a valid ``ORG/NAME`` Hub id.
        UnknownArchitectureError: With a message naming ``import timm_gated_ssl`` and the gated
            architectures this version registers.
    """
    if is_model(architecture):
        return architecture
    known = ", ".join(list_models("gated_*")) or "none: the models package is not imported"
    raise UnknownArchitectureError(
        f"{source} uses the architecture {architecture!r}, which is not registered in timm. "
        f"Run `import timm_gated_ssl` before timm.create_model(...): it registers the gated "
        f"architectures ({known}). If it is still unknown, the checkpoint needs a newer "
        "timm_gated_ssl."
    )


def _translate(err: HfHubHTTPError, model_id: str) -> HubError:
    status = err.response.status_code if err.response is not None else None
    if isinstance(err, (RepositoryNotFoundError, RevisionNotFoundError)) or status == 404:
        return HubRepoNotFoundError(
            f"{model_id} not found on the Hub, or not visible with this token (404); check the repo "
            "id, and for a private repo set HF_TOKEN or run `hf auth login`")
    if status in (401, 403):
        return HubAuthError(
            f"the Hub refused access to {model_id} ({status}); set a valid token in HF_TOKEN or run "
            "`hf auth login`")
    return HubError(f"downloading {model_id} failed with HTTP {status}")


def load_from_hub(
    name: str,
    *,
    pretrained: bool = True,
    budget: float | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Create a gated model from a Hub repository or a pretrained tag.

    Args:
        name: ``"ORG/NAME"`` or ``"hf-hub:ORG/NAME"`` (optionally ``@revision``), or a pretrained
            tag of :mod:`timm_gated_ssl.hub.pretrained` such as ``"gated_resnet18_cifar.vicreg_cifar10"``.
        pretrained: Load the weights (``False`` builds the architecture from ``config.json`` only).
        budget: Compute budget to select (one of the checkpoint's calibrated budgets).
        **kwargs: Passed to :func:`timm.create_model`.

    A private repository is read with the token of ``HF_TOKEN`` or the saved login, as timm does.

    Raises:
        UnknownArchitectureError: The checkpoint's architecture is not registered in timm.
        HubRepoNotFoundError: The repository, revision or a file is missing (404).
        HubAuthError: The Hub refused the token (401/403).
        HubOfflineError: Offline mode is on, or the Hub is unreachable and the files are not cached.
        HubConnectionError: The Hub cannot be reached.
    """
    if budget is not None:
        kwargs["budget"] = budget
    if "/" in name or name.startswith(_HF_PREFIX):
        model_id = name.removeprefix(_HF_PREFIX)
        repo_id, _, revision = model_id.partition("@")
        check_repo_id(repo_id)  # a malformed id is refused before any request
        try:
            config_path = hf_hub_download(repo_id, "config.json", revision=revision or None)
        except HfHubHTTPError as err:
            raise _translate(err, model_id) from None
        except Exception as err:
            translated = network_error(err, action=f"downloading {model_id}")
            if translated is None:
                raise
            raise translated from None
        with open(config_path) as f:
            check_architecture(str(json.load(f).get("architecture")), source=model_id)
        name = _HF_PREFIX + model_id
    else:
        check_architecture(timm.models.get_arch_name(name), source=repr(name))
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except HfHubHTTPError as err:
        raise _translate(err, name.removeprefix(_HF_PREFIX)) from None
    except Exception as err:
        translated = network_error(err, action=f"downloading {name.removeprefix(_HF_PREFIX)}")
        if translated is None:
            raise
        raise translated from None
