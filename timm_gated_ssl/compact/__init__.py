"""Real speed from gates: compact execution of the kept channels, and static export.

* :func:`compact` returns an inference copy of a gated model whose blocks compute only the
  channels (ViT: heads and MLP units) their gate keeps for the current input (exactly the masked
  gated model's outputs).
* :func:`export_static` measures channel usage on calibration data and returns a plain, narrower
  timm ResNet or ViT (no gates, no hooks) that saves and loads like any timm model
  (``static_resnet`` / ``static_vit``).
* :func:`export_at_budget` returns the same kind of plain model at a fixed fraction of the dense
  MACs: the units the gates use most at that budget (``fixed_budget.py``), for runtimes that
  cannot run per-input shapes.

Both handle timm ResNets (``resnet.py``, ``static.py``) and ViTs (``vit.py``, ``static_vit.py``);
``runtime.py`` and ``export.py`` pick the family.
"""

from .batching import BATCH_STRATEGIES
from .export import STATIC_EXPORTERS, export_static
from .fixed_budget import export_at_budget
from .fold import fold_bn, gated_norm
from .gate import CompactGate
from .resnet import CompactBasicBlock, CompactBottleneck
from .runtime import compact
from .static import StaticExport, channel_usage, load_static, static_resnet
from .static_vit import static_vit
from .vit import CompactVitBlock
from .vit_width import CompactVitWidthBlock
from .width import CompactWidthBasicBlock, CompactWidthBottleneck

__all__ = [
    "BATCH_STRATEGIES", "STATIC_EXPORTERS", "CompactBasicBlock", "CompactBottleneck", "CompactGate", "CompactVitBlock",
    "CompactVitWidthBlock", "CompactWidthBasicBlock", "CompactWidthBottleneck", "StaticExport", "channel_usage",
    "compact", "export_at_budget", "export_static", "fold_bn", "gated_norm", "load_static", "static_resnet",
    "static_vit",
]
