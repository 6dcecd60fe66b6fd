"""Building blocks of ``recipes/finetune.py``: linear evaluation and budget-keeping fine-tuning.

``mode: linear`` is the paper's linear protocol on a frozen encoder (Krishna et al., BMVC 2023,
Table 1); ``mode: full`` fine-tunes backbone and heads in both modes with the budget losses, then
re-calibrates the budgets. The output is a timm classifier checkpoint (see :mod:`.export`).
"""

from .config import FinetuneConfig
from .data import FinetuneData, build_finetune_data, build_train_transform
from .export import HEADS_FILE, build_results, export_classifier, use_head
from .heads import (
    DualClassifier,
    HeadResult,
    HeadSpec,
    LinearHeads,
    evaluate_heads,
    head_specs,
    pooled_features,
)
from .state import FinetuneState

__all__ = [
    "HEADS_FILE", "DualClassifier", "FinetuneConfig", "FinetuneData", "FinetuneState", "HeadResult",
    "HeadSpec", "LinearHeads", "build_finetune_data", "build_results", "build_train_transform",
    "evaluate_heads", "export_classifier", "head_specs", "pooled_features", "use_head",
]
