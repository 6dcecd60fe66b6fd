"""Errors raised by :mod:`timm_gated_ssl.hub`, in one place.

They derive from the library's base :class:`~timm_gated_ssl.errors.GatingError` and from the builtin a
caller would catch anyway, and they carry a message that says what to do, so that a failed push or
load reads as one clear line rather than a deep ``httpx`` traceback.
"""

from __future__ import annotations

from ..errors import GatingError

__all__ = [
    "CheckpointError",
    "HubAuthError",
    "HubConnectionError",
    "HubError",
    "HubOfflineError",
    "HubRepoNotFoundError",
    "InvalidRepoIdError",
    "MissingTokenError",
    "UnknownArchitectureError",
    "network_error",
]


class HubError(GatingError, RuntimeError):
    """Base class of the Hub errors; also raised for Hub failures without a more precise class."""


class InvalidRepoIdError(HubError, ValueError):
    """A repository id is not of the form ``namespace/name``."""


class CheckpointError(HubError, ValueError):
    """A checkpoint directory (or model) cannot be published: no weights, no config, bad files."""


class MissingTokenError(HubError, PermissionError):
    """No Hugging Face token was given or found where the Hub needs one."""


class HubAuthError(HubError, PermissionError):
    """The Hub rejected the token (401) or the token may not write there (403)."""


class HubRepoNotFoundError(HubError, LookupError):
    """The repository, revision or file does not exist, or the token cannot see it (404)."""


class UnknownArchitectureError(HubError, LookupError):
    """A checkpoint names an architecture that is not registered in timm."""


class HubConnectionError(HubError, ConnectionError):
    """The Hub cannot be reached: no network, a proxy or firewall, a wrong ``HF_ENDPOINT``."""


class HubOfflineError(HubConnectionError):
    """The Hub was needed while ``HF_HUB_OFFLINE`` is set, or a file is not in the local cache."""


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level exception classes of the HTTP clients huggingface_hub may use."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):
        try:
            found.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def network_error(err: BaseException, *, action: str) -> HubError | None:
    """Our error for an offline-mode, cache-miss or connection failure of ``huggingface_hub``
    while doing ``action`` (e.g. ``"pushing to my-org/model"``); ``None`` for other errors."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    if isinstance(err, OfflineModeIsEnabled):
        return HubOfflineError(
            f"{action} needs the network, but offline mode is on (HF_HUB_OFFLINE=1): unset "
            "HF_HUB_OFFLINE and retry"
        )
    if isinstance(err, LocalEntryNotFoundError):
        why = "offline mode is on (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else \
            f"the Hub ({constants.ENDPOINT}) cannot be reached"
        return HubOfflineError(
            f"{action}: the files are not in the local cache and {why}; connect to the network "
            "(and unset HF_HUB_OFFLINE) once to download them, or check HF_ENDPOINT and a proxy"
        )
    if isinstance(err, _transport_errors()):
        return HubConnectionError(
            f"{action}: cannot reach the Hub at {constants.ENDPOINT} ({err or type(err).__name__}); "
            "check the network connection, a proxy (HTTPS_PROXY) or HF_ENDPOINT, and retry"
        )
    return None
