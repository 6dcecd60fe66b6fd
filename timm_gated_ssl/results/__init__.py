"""Results records, at the bottom of the package: what an evaluation produces and what figures,
reports, recipes and Hub model cards read (``EvaluationResult`` is the ``results.json`` schema).

Nothing here imports torch, matplotlib or the evaluation code, so loading or publishing a result
never pulls in the evaluation machinery.
"""

from .evaluation import SCHEMA_VERSION, EvaluationResult, ModeEvaluation
from .records import ChannelUsage, PointKind, TradeoffPoint

__all__ = ["SCHEMA_VERSION", "ChannelUsage", "EvaluationResult", "ModeEvaluation", "PointKind", "TradeoffPoint"]
