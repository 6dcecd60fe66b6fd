"""``compact(model)``: an inference module that executes only the channels the gates keep."""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import nn

from ..attach import detach_gates, gate_family, iter_gates, require_gates
from ..errors import UnsupportedModelError
from ..gates import BlockGate, gate_type_of
from ..registry import Registry
from .batching import BatchStrategy, check_strategy
from .resnet import compact_resnet_block
from .vit import compact_vit_block
from .vit_width import compact_vit_width_block
from .width import compact_width_block

CompactBuilder = Callable[[nn.Module, BlockGate, BatchStrategy], "nn.Module | None"]
"""Builds the compact version of one gated block (None: a block class it does not know)."""

COMPACT_BUILDERS: Registry[CompactBuilder] = Registry("compact block builder")
"""Compact block builders by ``(gate_type, block family)``; a new gate type or family adds its own."""
COMPACT_BUILDERS.add(("channel", "resnet"), compact_resnet_block)
COMPACT_BUILDERS.add(("width", "resnet"), compact_width_block)
COMPACT_BUILDERS.add(("channel", "vit"), compact_vit_block)
COMPACT_BUILDERS.add(("width", "vit"), compact_vit_width_block)


def compact(model: nn.Module, *, batch_strategy: BatchStrategy = "union") -> nn.Module:
    """Build an inference copy of a gated model that runs each gated block on its kept channels.

    The result computes what ``model`` computes in gated mode and eval mode (deterministic gates,
    gated-mode norms) to within float rounding (BN is folded into the convs), but each block's gate
    runs first and the block then computes only the channels that are on. ResNet: conv1's kept
    output rows and conv2's kept input columns (Bottleneck: both inner widths). ViT: the kept heads'
    q/k/v rows, attention and ``proj`` columns, and the kept MLP units' ``fc1`` rows and ``fc2``
    columns (``compact/vit.py``). The gate networks still run (and their cost is what
    ``count_macs`` counts). ``model`` itself is not modified.

    Args:
        model: A gated timm ResNet or ViT (``attach_gates`` or a registered ``gated_*`` model).
        batch_strategy: How a batch of several images is run: ``"union"`` of the kept channels
            with per-sample zeroing (default, fastest in ``docs/speed.md``), ``"per_sample"``, or
            ``"group"`` (one pass per distinct mask pattern). Batch 1 is always exact slicing.
            Width gates (``gate_type="width"``) ignore it: their inputs are grouped by level, each
            group run on a prefix view of the weights (``compact/width.py``; ViT: the first heads
            and hidden units, ``compact/vit_width.py``).

    Returns:
        A module in eval mode, the same timm model class with every gated block replaced by its
        compact version and no gates or hooks left. For inference only (``torch.no_grad``).

    Raises:
        NoGatesError: ``model`` has no gates.
        UnsupportedModelError: a gated block has no compact implementation.
        ValueError: unknown ``batch_strategy``.

    Example:
        >>> fast = compact(timm.create_model("gated_resnet18", budget=0.3).eval())
        >>> with torch.no_grad():
        ...     logits = fast(image)  # == the masked gated model's logits
    """
    check_strategy(batch_strategy)
    require_gates(model)
    new = copy.deepcopy(model).eval()
    replacements = []
    for name, gate in iter_gates(new):
        block = new.get_submodule(name)
        key = (gate_type_of(gate), gate_family(block, gate))
        builder = COMPACT_BUILDERS.get(key)
        built = builder(block, gate, batch_strategy) if builder is not None else None
        if built is None:
            raise UnsupportedModelError(
                f"no compact implementation for gated block {name!r} ({type(block).__name__}, gate "
                f"type and family {key}); implemented: {', '.join(map(str, COMPACT_BUILDERS))}"
            )
        replacements.append((name, built.eval()))
    detach_gates(new)
    for name, built in replacements:
        new.set_submodule(name, built)
    for p in new.parameters():
        p.requires_grad_(False)
    return new
