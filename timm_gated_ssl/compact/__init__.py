"""Real speed from gates: compact execution of the kept channels, and static export.

* :func:`compact` returns an inference copy of a gated model whose blocks convolve only the
  channels their gate keeps for the current input (exactly the masked gated model's outputs).
* :func:`export_static` measures channel usage on calibration data and returns a plain, narrower
  timm ResNet (no gates, no hooks) that saves and loads like any timm model (``static_resnet``).
"""

from .fold import fold_bn, gated_norm
from .gate import CompactGate
from .resnet import BATCH_STRATEGIES, CompactBasicBlock, CompactBottleneck
from .runtime import compact
from .static import StaticExport, channel_usage, export_static, load_static, static_resnet

__all__ = [
    "BATCH_STRATEGIES", "CompactBasicBlock", "CompactBottleneck", "CompactGate", "StaticExport",
    "channel_usage", "compact", "export_static", "fold_bn", "gated_norm", "load_static",
    "static_resnet",
]
