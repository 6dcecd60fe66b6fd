"""Building blocks of ``recipes/pretrain.py``: config, co-training module, data, outputs."""

from .config import PretrainConfig, parse_overrides
from .dual import DualSSLModel, StepOutput
from .outputs import (
    OutputDirNotEmptyError,
    export_model,
    list_checkpoints,
    prepare_output_dir,
    refuse_earlier_run,
    resolve_checkpoint,
    save_training_state,
)
from .state import NonFiniteLossError, TrainState, timed_batches
from .state_files import check_resume
from .validate import check_budget_reachable, check_environment

__all__ = [
    "DualSSLModel", "NonFiniteLossError", "OutputDirNotEmptyError", "PretrainConfig", "StepOutput",
    "TrainState", "check_budget_reachable", "check_environment", "check_resume", "export_model", "list_checkpoints",
    "parse_overrides", "prepare_output_dir", "refuse_earlier_run", "resolve_checkpoint",
    "save_training_state", "timed_batches",
]
