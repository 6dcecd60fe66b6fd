"""Checkpoint loading moved beside the Hub loader: :mod:`timm_gated_ssl.hub.checkpoint`.

Kept so that ``from timm_gated_ssl.eval.loading import load_run`` (and the other names) keeps
working; new code imports from ``timm_gated_ssl.hub``.
"""

from ..hub.checkpoint import WEIGHT_FILES, LoadedCheckpoint, load_checkpoint, load_run

__all__ = ["WEIGHT_FILES", "LoadedCheckpoint", "load_checkpoint", "load_run"]
