"""Publish co-trained checkpoints on the Hugging Face Hub and load them back with timm.

- :func:`push_to_hub` uploads ``config.json`` + ``model.safetensors`` (timm's format) and a model
  card (:func:`build_model_card`) in one commit;
- ``timm.create_model("hf-hub:ORG/NAME", pretrained=True, budget=0.3)`` loads them after
  ``import timm_gated_ssl``; :func:`load_from_hub` does the same with clearer errors;
- :data:`PRETRAINED` is the one table of timm-style tags (``gated_resnet18_cifar.vicreg_cifar10``)
  -> Hub id, applied to timm's registry on import (empty until a checkpoint is published).

See ``docs/hub.md``.
"""

from .card import BIBTEX, build_model_card, load_results
from .checkpoint import LoadedCheckpoint, load_checkpoint, load_run
from .errors import (
    CheckpointError,
    HubAuthError,
    HubConnectionError,
    HubError,
    HubOfflineError,
    HubRepoNotFoundError,
    InvalidRepoIdError,
    MissingTokenError,
    UnknownArchitectureError,
)
from .load import check_architecture, load_from_hub
from .pretrained import (
    PRETRAINED,
    PretrainedEntry,
    entry_from_hub,
    register_pretrained,
    registered_pretrained,
    unregister_pretrained,
)
from .push import PushResult, check_repo_id, push_to_hub, stage_checkpoint

register_pretrained(PRETRAINED)

__all__ = [
    "BIBTEX",
    "PRETRAINED",
    "CheckpointError",
    "HubAuthError",
    "HubConnectionError",
    "HubError",
    "HubOfflineError",
    "HubRepoNotFoundError",
    "InvalidRepoIdError",
    "LoadedCheckpoint",
    "MissingTokenError",
    "PretrainedEntry",
    "PushResult",
    "UnknownArchitectureError",
    "build_model_card",
    "check_architecture",
    "check_repo_id",
    "entry_from_hub",
    "load_checkpoint",
    "load_from_hub",
    "load_results",
    "load_run",
    "push_to_hub",
    "register_pretrained",
    "registered_pretrained",
    "stage_checkpoint",
    "unregister_pretrained",
]
