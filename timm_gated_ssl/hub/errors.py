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
    "HubError",
    "HubRepoNotFoundError",
    "InvalidRepoIdError",
    "MissingTokenError",
    "UnknownArchitectureError",
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
