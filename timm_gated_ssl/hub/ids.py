"""Hub repository ids, checked before any request: a malformed id is our error, not the Hub client's."""

from __future__ import annotations

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .errors import InvalidRepoIdError

__all__ = ["check_repo_id"]


def check_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` if it is a valid ``namespace/name``.

    Raises:
        InvalidRepoIdError: If it is not a string of the form ``namespace/name`` that the Hub accepts.
    """
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or "" in repo_id.split("/"):
        raise InvalidRepoIdError(
            f"repo_id must be of the form 'namespace/name' (your user or organisation, then the "
            f"model name), e.g. 'my-org/gated-resnet18-cifar10'; got {repo_id!r}"
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise InvalidRepoIdError(f"invalid repo_id {repo_id!r}: {err}") from None
    return repo_id
