"""The evaluation record moved to the bottom of the package: :mod:`timm_gated_ssl.results`.

Kept so that ``from timm_gated_ssl.eval.report import EvaluationResult`` keeps working; new code
imports from ``timm_gated_ssl.results``.
"""

from ..results.evaluation import SCHEMA_VERSION, EvaluationResult, Metric, Mode, ModeEvaluation

__all__ = ["SCHEMA_VERSION", "EvaluationResult", "Metric", "Mode", "ModeEvaluation"]
