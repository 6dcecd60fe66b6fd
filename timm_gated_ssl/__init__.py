"""timm_gated_ssl: co-trained dense and gated encoders for timm.

One encoder, pretrained with self-supervision in two modes at once: a dense mode and a gated mode in
which tiny per-block gates switch channels off per input (Krishna et al., BMVC 2023,
arXiv:2301.09164). Importing the package registers the gated models in timm's registry.

Example:
    >>> import timm, timm_gated_ssl
    >>> model = timm.create_model("gated_resnet18", budget=0.3)
    >>> with timm_gated_ssl.gate_mode(model, "gated"):
    ...     out = model(images)
"""

from . import hub, models  # noqa: F401  (register the models and pretrained tags in timm)
from .attach import (
    attach_gates,
    clear_gate_masks,
    convert_sync_batchnorm,
    detach_gates,
    gate_config,
    gate_masks,
    gate_mode,
    get_gate_mode,
    has_gates,
    iter_gates,
    set_gate_mode,
    set_gate_noise,
)
from .budget import BoundLoss, BudgetLoss, ComputeLoss, gated_param_groups
from .calibration import (
    calibrate_budget,
    calibrated_budgets,
    gate_offset,
    mac_floor,
    set_budget,
    set_gate_offset,
)
from .compact import compact, export_at_budget, export_static, load_static
from .compute import MacCount, count_macs, gated_macs
from .errors import (
    GatesAlreadyAttachedError,
    GatingError,
    InvalidBudgetError,
    NoGatesError,
    UncalibratedBudgetError,
    UnsupportedModelError,
)
from .export import export_onnx
from .gates import BlockGate, GateConfig
from .hub import load_from_hub, push_to_hub

__version__ = "0.1.0"

__all__ = [
    "BlockGate",
    "BoundLoss",
    "BudgetLoss",
    "ComputeLoss",
    "GateConfig",
    "GatesAlreadyAttachedError",
    "GatingError",
    "InvalidBudgetError",
    "MacCount",
    "NoGatesError",
    "UncalibratedBudgetError",
    "UnsupportedModelError",
    "attach_gates",
    "calibrate_budget",
    "calibrated_budgets",
    "clear_gate_masks",
    "compact",
    "convert_sync_batchnorm",
    "count_macs",
    "detach_gates",
    "export_at_budget",
    "export_onnx",
    "export_static",
    "gate_config",
    "gate_masks",
    "gate_mode",
    "gate_offset",
    "gated_macs",
    "gated_param_groups",
    "get_gate_mode",
    "has_gates",
    "iter_gates",
    "load_from_hub",
    "load_static",
    "mac_floor",
    "push_to_hub",
    "set_budget",
    "set_gate_mode",
    "set_gate_noise",
    "set_gate_offset",
]
