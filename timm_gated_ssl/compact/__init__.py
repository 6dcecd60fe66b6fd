"""Real speed from gates: compact execution of the kept channels, and static export.

* :func:`compact` returns an inference copy of a gated model whose blocks compute only the
  channels (ViT: heads and MLP units) their gate keeps for the current input (exactly the masked
  gated model's outputs).
* :func:`export_static` measures channel usage on calibration data and returns a plain, narrower
  timm ResNet or ViT (no gates, no hooks) that saves and loads like any timm model
  (``static_resnet`` / ``static_vit``).

Both handle timm ResNets (``resnet.py``, ``static.py``) and ViTs (``vit.py``, ``static_vit.py``);
``runtime.py`` and ``export.py`` pick the family.
"""

from .batching import BATCH_STRATEGIES
from .export import STATIC_EXPORTERS, export_static
from .fold import fold_bn, gated_norm
from .gate import CompactGate
from .resnet import CompactBasicBlock, CompactBottleneck
from .runtime import compact
from .static import StaticExport, channel_usage, load_static, static_resnet
from .static_vit import static_vit
from .vit import CompactVitBlock
from .width import CompactWidthBasicBlock, CompactWidthBottleneck

__all__ = [
    "BATCH_STRATEGIES", "STATIC_EXPORTERS", "CompactBasicBlock", "CompactBottleneck", "CompactGate", "CompactVitBlock",
    "CompactWidthBasicBlock", "CompactWidthBottleneck", "StaticExport", "channel_usage", "compact", "export_static",
    "fold_bn", "gated_norm", "load_static", "static_resnet", "static_vit",
]
