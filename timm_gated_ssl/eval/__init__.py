"""Evaluation of frozen encoders: features, k-NN, linear probe, reports and figures.

:func:`evaluate_checkpoint` runs the whole protocol on a checkpoint (dense, gated, calibrated
budgets, a vanilla baseline) and writes the results and figures; the rest is mode-agnostic:
functions take features (or a model and a loader) and return metrics; switching an
encoder between its dense and gated modes is the caller's business (``mode``/``mode_context`` of
:func:`extract_features`).
"""

from timm_gated_ssl.eval.channel_usage import ChannelUsage, channel_usage_from_masks
from timm_gated_ssl.eval.checkpoint import evaluate_checkpoint
from timm_gated_ssl.eval.evaluate import evaluate_features
from timm_gated_ssl.eval.features import MISSING_LABEL, Features, extract_features
from timm_gated_ssl.eval.knn import knn_accuracy, knn_predict
from timm_gated_ssl.eval.linear_probe import (
    LinearProbeResult,
    RepeatedLinearProbeResult,
    linear_probe,
    linear_probe_repeated,
)
from timm_gated_ssl.eval.outputs import write_outputs
from timm_gated_ssl.eval.plots import plot_channel_usage, plot_tradeoff
from timm_gated_ssl.hub.checkpoint import load_checkpoint
from timm_gated_ssl.results import SCHEMA_VERSION, EvaluationResult, ModeEvaluation, TradeoffPoint

__all__ = [
    "MISSING_LABEL",
    "SCHEMA_VERSION",
    "ChannelUsage",
    "EvaluationResult",
    "Features",
    "LinearProbeResult",
    "ModeEvaluation",
    "RepeatedLinearProbeResult",
    "TradeoffPoint",
    "channel_usage_from_masks",
    "evaluate_checkpoint",
    "evaluate_features",
    "extract_features",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "linear_probe_repeated",
    "load_checkpoint",
    "plot_channel_usage",
    "plot_tradeoff",
    "write_outputs",
]
