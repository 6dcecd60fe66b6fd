"""Exact multiply-accumulate (MAC) accounting of dense and gated networks.

How a count is made:

1. **Dense MACs** come from walking the real network once with forward hooks on every conv
   (``nn.Conv1d/2d/3d``, timm's ``BlurPool2d``) and, with ``include_linear=True``, every
   ``nn.Linear``: a layer's MACs per image are ``output elements x (in_channels / groups) x kernel
   size``. Strides, grouped convs, SE/ECA modules, deep stems and the CIFAR stem therefore come out
   right with no per-architecture table. Convs inside the gates are not part of the dense network.
2. **Gated MACs** per image are the dense MACs, minus the dense cost of each gated layer, plus
   its cost given the masks (a :class:`CostTerm`), plus each gate's own ``net.macs``. A term's
   gated cost is ``unit x sum_g active_in_g x active_out_g`` over its conv groups, so a grouped
   conv counts, for each output channel, only the active inputs of its own group. The sum is a
   polynomial in the masks, hence differentiable through the straight-through masks in training.
3. The layer hooks and the block -> terms translation are collected into a :class:`CostTable`,
   computed once per input size and cached, so the training loss needs no extra forward.

Families plug in by registering a function that turns one gated block into cost terms, see
:func:`register_block_cost` and ``compute/resnet.py``.

The default convention is the paper's (Krishna et al., BMVC 2023): conv MACs only (stem, block
convs, downsample, the gates' own convs); BN, activations, pooling, classifier and projector are not
counted. ``include_linear=True`` also counts ``nn.Linear`` layers.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from timm.layers import BlurPool2d
from torch import nn

from ..attach import gate_family, gate_mode, iter_gates
from ..errors import InputShapeError
from ..gates import BlockGate
from ..registry import Registry
from .inputs import check_images, check_input_size

__all__ = [
    "BLOCK_COSTS",
    "UNGATED_COSTS",
    "BlockCostFn",
    "BlockMacs",
    "CostTable",
    "CostTerm",
    "LayerStats",
    "MacCount",
    "cost_table",
    "count_macs",
    "gated_macs",
    "register_block_cost",
]


# ------------------------------------------------------------------------------------------ types
@dataclass(frozen=True)
class CostTerm:
    """The cost of one layer of a gated block as a function of the block's masks.

    The layer's gated MACs per image are ``macs * groups / (in_channels * out_channels) *
    sum_g active_in_g * active_out_g``, where ``active_*_g`` counts the active channels of group
    ``g`` on that side (all of them when the side is not gated). A mask may have fewer entries
    than the channels it gates (e.g. one per attention head): each entry then stands for
    ``channels / mask width`` channels.

    Attributes:
        layer: Name of the layer, relative to the block (for reports).
        macs: Dense MACs per image of the layer.
        in_channels: Input channels (or features) of the layer.
        out_channels: Output channels of the layer.
        in_width: Index into ``gate.widths`` of the mask on the layer's input, or None.
        out_width: Index into ``gate.widths`` of the mask on the layer's output, or None.
        groups: Conv groups (1 for linear layers and matmuls).
        in_dense: Whether the layer hooks counted ``macs`` already. A family that adds a cost the
            hooks cannot see (e.g. attention matmuls) sets False, and ``macs`` joins the dense total.
    """

    layer: str
    macs: int
    in_channels: int
    out_channels: int
    in_width: int | None = None
    out_width: int | None = None
    groups: int = 1
    in_dense: bool = True

    def gated(self, masks: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """Gated MACs per image ``(B,)`` in float64 from the block's masks; None if ungated."""
        sides = [
            _active_per_group(masks[width], channels, self.groups)
            for width, channels in ((self.in_width, self.in_channels), (self.out_width, self.out_channels))
            if width is not None
        ]
        if not sides:
            return None
        full = [
            float(channels // self.groups)
            for width, channels in ((self.in_width, self.in_channels), (self.out_width, self.out_channels))
            if width is None
        ]
        product = sides[0] if len(sides) == 1 else sides[0] * sides[1]
        unit = self.macs * self.groups / (self.in_channels * self.out_channels)
        return product.sum(dim=1) * (unit * math.prod(full))


def _active_per_group(mask: torch.Tensor, channels: int, groups: int) -> torch.Tensor:
    """Active channels of each group, ``(B, groups)`` float64, from a ``(B, W)`` mask."""
    batch, width = mask.shape
    if width % groups or channels % width:
        raise ValueError(
            f"a mask of width {width} cannot gate {channels} channels in {groups} groups"
        )
    return mask.to(torch.float64).reshape(batch, groups, width // groups).sum(dim=2) * (channels // width)


@dataclass
class LayerStats:
    """What the layer hooks saw in one forward, handed to the family cost functions.

    Attributes:
        macs: Dense MACs per image of each counted layer (summed over calls).
        out_shapes: Per-image output shape of each conv/linear layer's last call (recorded even for
            layers not counted, e.g. linears when ``include_linear=False``).
        include_linear: Whether linear layers are counted.
    """

    macs: dict[nn.Module, int] = field(default_factory=dict)
    out_shapes: dict[nn.Module, tuple[int, ...]] = field(default_factory=dict)
    include_linear: bool = False


BlockCostFn = Callable[[nn.Module, BlockGate, LayerStats], "Sequence[CostTerm] | None"]
"""Turns one gated block into cost terms (None: the block is not of its family)."""

BLOCK_COSTS: Registry[BlockCostFn] = Registry("block cost function")
"""Cost functions by block family (``attach.FAMILIES`` names)."""


def register_block_cost(name: str) -> Callable[[BlockCostFn], BlockCostFn]:
    """Decorator registering a block family's cost function under the family's ``name``.

    The function receives ``(block, gate, stats)`` and returns the :class:`CostTerm` of every layer
    whose cost the block's masks change (or None when ``block`` is not of its family). Layers not
    in ``stats.macs`` did not run or are not counted: leave them out.

    Example (``compute/vit.py``):
        >>> @register_block_cost("vit")
        ... def vit_block_cost(block, gate, stats):
        ...     if not isinstance(block, timm.models.vision_transformer.Block):
        ...         return None
        ...     return [CostTerm("mlp.fc1", stats.macs[block.mlp.fc1], ...), ...]

    Raises:
        ValueError: A cost function is already registered for ``name``.
    """
    return BLOCK_COSTS.register(name)


UngatedCostFn = Callable[[nn.Module, LayerStats], int]
"""MACs per image an *ungated* block adds to the dense total beyond what the layer hooks counted
(0 for a module of another family)."""

UNGATED_COSTS: list[UngatedCostFn] = []
"""Families whose dense cost is not all in hooked convs (ViT blocks: their linears and attention
products count under every convention) register here, so a plain timm model, or a fixed-budget
export, counts what the dense mode of its gated twin counts."""


@dataclass(frozen=True)
class BlockCost:
    """Cost terms of one gated block (part of a :class:`CostTable`)."""

    name: str
    terms: tuple[CostTerm, ...]
    gate_macs: int

    @property
    def dense(self) -> int:
        """Dense MACs per image of the block's gated layers."""
        return sum(t.macs for t in self.terms)

    def gated(self, masks: Sequence[torch.Tensor]) -> torch.Tensor:
        """Gated MACs per image of the gated layers (gate cost not included), ``(B,)`` float64."""
        total: torch.Tensor | float = 0.0
        for term in self.terms:
            value = term.gated(masks)
            total = total + (float(term.macs) if value is None else value)
        if not isinstance(total, torch.Tensor):
            return torch.full((masks[0].shape[0],), float(total), dtype=torch.float64, device=masks[0].device)
        return total


@dataclass(frozen=True)
class CostTable:
    """Per-image dense MACs of a network at one input size, and how each gated block's cost
    depends on its masks. Build with :func:`cost_table` (cached per input size).

    Attributes:
        input_size: Per-image input shape, e.g. ``(3, 32, 32)``.
        include_linear: Whether linear layers are counted.
        dense: Dense MACs per image of the whole network.
        blocks: One :class:`BlockCost` per gated block that ran, in forward order.
    """

    input_size: tuple[int, ...]
    include_linear: bool
    dense: int
    blocks: tuple[BlockCost, ...]

    @property
    def gate_macs(self) -> int:
        """MACs per image of all gate networks together."""
        return sum(b.gate_macs for b in self.blocks)

    def gated(self, masks: Mapping[str, Sequence[torch.Tensor]]) -> torch.Tensor:
        """Gated MACs per image, ``(B,)`` float64, gates included; differentiable in the masks.

        Args:
            masks: ``{block_name: masks}`` as returned by :func:`~timm_gated_ssl.gate_masks`.

        Raises:
            KeyError: A gated block of the table has no masks (no gated forward ran yet).
        """
        missing = [b.name for b in self.blocks if b.name not in masks]
        if missing:
            raise KeyError(
                f"no masks recorded for gated blocks {missing[:4]}{'...' if len(missing) > 4 else ''}: "
                "run a forward in gated mode first"
            )
        fixed = self.dense + self.gate_macs - sum(b.dense for b in self.blocks)
        total: torch.Tensor | float = float(fixed)
        for block in self.blocks:
            total = total + block.gated(masks[block.name])
        return total  # type: ignore[return-value]


@dataclass(frozen=True)
class BlockMacs:
    """MACs per image of one gated block in a :class:`MacCount`.

    Attributes:
        dense: Dense MACs of the block's gated layers.
        gated: ``(B,)`` gated MACs of those layers, gate not included.
        gate: MACs of the block's gate network.
    """

    dense: int
    gated: torch.Tensor
    gate: int


@dataclass(frozen=True)
class MacCount:
    """Multiply-accumulates per image of a network in dense and gated mode.

    Attributes:
        dense: MACs of the ungated network (no gate runs), per image.
        gated: ``(B,)`` float64 MACs of the gated network per sample, from the masks actually drawn,
            the gates' own cost included (equal to ``dense`` for a model without gates).
        gate_macs: MACs of all gate networks together (included in ``gated``).
        blocks: Per gated block breakdown.
        input_size: Per-image input shape.
        include_linear: Whether linear layers are counted.
    """

    dense: int
    gated: torch.Tensor
    gate_macs: int
    blocks: Mapping[str, BlockMacs]
    input_size: tuple[int, ...]
    include_linear: bool = False

    @property
    def ratio(self) -> torch.Tensor:
        """``(B,)`` gated / dense MACs per sample."""
        return self.gated / self.dense

    @property
    def mean_gated(self) -> float:
        """Batch mean of the gated MACs (``F_g``)."""
        return float(self.gated.mean())

    @property
    def mean_ratio(self) -> float:
        """``F_g / F_d``: batch mean gated MACs over dense MACs."""
        return self.mean_gated / self.dense

    @property
    def reduction(self) -> float:
        """The paper's "FLOPs reduction" ``1 - F_g / F_d``."""
        return 1.0 - self.mean_ratio

    def summary(self) -> dict[str, Any]:
        """JSON-safe summary: dense, mean gated, ratio, reduction, gate MACs, input size."""
        return {
            "dense_macs": self.dense, "gated_macs": self.mean_gated, "mac_fraction": self.mean_ratio,
            "reduction": self.reduction, "gate_macs": self.gate_macs,
            "input_size": list(self.input_size), "include_linear": self.include_linear,
        }


# ------------------------------------------------------------------------------------- counting
def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """MACs per image of one call of a conv / blur / linear layer from its output."""
    per_image = output.numel() // max(output.shape[0], 1)
    if isinstance(module, nn.modules.conv._ConvNd):
        return per_image * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, BlurPool2d):  # a fixed depthwise conv
        return per_image * module.filt_size**2
    if isinstance(module, nn.Linear):
        return per_image * module.in_features
    raise TypeError(type(module).__name__)


def _unwrap(model: nn.Module) -> nn.Module:
    """The module under DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or (
            model.module if isinstance(getattr(model, "module", None), nn.Module) else None
        )
        if inner is None:
            return model
        model = inner


@contextmanager
def _record_layers(model: nn.Module, include_linear: bool) -> Iterator[tuple[LayerStats, set[nn.Module]]]:
    """Hook every conv/linear layer outside the gates, and every gated block (to see which ran)."""
    stats = LayerStats(include_linear=include_linear)
    ran: set[nn.Module] = set()
    gate_modules = {id(m) for _, g in iter_gates(model) for m in g.modules()}
    handles = []

    def on_layer(module: nn.Module, args: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            return
        stats.out_shapes[module] = tuple(output.shape[1:])
        if isinstance(module, nn.Linear) and not include_linear:
            return
        stats.macs[module] = stats.macs.get(module, 0) + _layer_macs(module, output)

    for module in model.modules():
        if id(module) in gate_modules:
            continue
        if isinstance(module, (nn.modules.conv._ConvNd, BlurPool2d, nn.Linear)):
            handles.append(module.register_forward_hook(on_layer))
    for name, gate in iter_gates(model):
        block = model.get_submodule(name)
        handles.append(block.register_forward_pre_hook(lambda m, a: ran.add(m)))
    try:
        yield stats, ran
    finally:
        for handle in handles:
            handle.remove()


def _build_table(
    model: nn.Module, stats: LayerStats, ran: set[nn.Module], input_size: tuple[int, ...]
) -> CostTable:
    blocks = []
    gated = {id(model.get_submodule(name)) for name, _ in iter_gates(model)}
    extra = sum(fn(module, stats) for module in model.modules() if id(module) not in gated for fn in UNGATED_COSTS)
    for name, gate in iter_gates(model):
        block = model.get_submodule(name)
        if block not in ran:
            continue
        family = gate_family(block, gate)
        if family not in BLOCK_COSTS:
            raise TypeError(
                f"no compute family knows gated block {name!r} ({type(block).__name__}, family "
                f"{family!r}); registered: {', '.join(map(str, BLOCK_COSTS)) or 'none'}. Register one with "
                "timm_gated_ssl.compute.register_block_cost"
            )
        terms = BLOCK_COSTS[family](block, gate, stats)
        if terms is None:
            raise TypeError(f"the {family!r} cost function does not know gated block {name!r} "
                            f"({type(block).__name__})")
        extra += sum(t.macs for t in terms if not t.in_dense)
        blocks.append(BlockCost(name=name, terms=tuple(terms), gate_macs=gate.net.macs))
    dense = sum(stats.macs.values()) + extra
    return CostTable(input_size=input_size, include_linear=stats.include_linear, dense=dense, blocks=tuple(blocks))


@contextmanager
def _eval_and_restore(model: nn.Module, *, stochastic_gates: bool = False) -> Iterator[None]:
    """Put every module in eval mode (gates sampling noise if asked), restoring flags after."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    if stochastic_gates:
        for _, gate in iter_gates(model):
            gate.training = True  # the estimator samples noise; the gate's BN stays in eval
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


_TABLES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], CostTable]] = weakref.WeakKeyDictionary()


def _input_size(images_or_size: torch.Tensor | Sequence[int]) -> tuple[int, ...]:
    if isinstance(images_or_size, torch.Tensor):
        if images_or_size.dim() < 2:
            raise ValueError(f"expected a batch of images (B, C, H, W), got shape {tuple(images_or_size.shape)}")
        return tuple(images_or_size.shape[1:])
    return tuple(int(s) for s in images_or_size)


def cost_table(
    model: nn.Module, input_size: torch.Tensor | Sequence[int], *, include_linear: bool = False
) -> CostTable:
    """The :class:`CostTable` of ``model`` at ``input_size``, built once and cached.

    Building it runs one dense forward of a single zero image with hooks (eval mode, no grad; the
    modules' train/eval flags, the gate mode and the recorded masks are restored). Later calls with
    the same size return the cached table, so a training step pays nothing.

    Args:
        model: A timm model, gated or not (DDP / torch.compile wrappers are unwrapped).
        input_size: Per-image input shape ``(C, H, W)``, or a batch whose shape gives it.
        include_linear: Count linear layers too.
    """
    model = _unwrap(model)
    size = _input_size(input_size)
    key = (size, bool(include_linear), tuple(id(g) for _, g in iter_gates(model)))
    tables = _TABLES.setdefault(model, {})
    if key not in tables:
        check_input_size(model, size, caller="cost_table")  # once per size: training steps pay nothing
        reference = next(model.parameters(), None)
        dummy = torch.zeros((1, *size), device=getattr(reference, "device", None),
                            dtype=getattr(reference, "dtype", None))
        gated = [g for _, g in iter_gates(model)]
        with _record_layers(model, include_linear) as (stats, ran), _eval_and_restore(model), torch.no_grad():
            if gated:
                with gate_mode(model, "dense"):
                    model(dummy)
            else:
                model(dummy)
        tables[key] = _build_table(model, stats, ran, size)
    return tables[key]


def gated_macs(
    model: nn.Module,
    input_size: torch.Tensor | Sequence[int],
    masks: Mapping[str, Sequence[torch.Tensor]] | None = None,
    *,
    include_linear: bool = False,
) -> torch.Tensor:
    """Differentiable gated MACs per sample, ``(B,)`` float64, for the training loss.

    Uses the cached :func:`cost_table` (no extra forward after the first call per input size) and
    the masks of the last gated forward, which in training carry the straight-through gradient.

    Args:
        model: A gated model that has just run a gated forward.
        input_size: The input batch of that forward, or its per-image shape.
        masks: ``{block_name: masks}``; by default the model's recorded masks.
        include_linear: Count linear layers too.
    """
    table = cost_table(model, input_size, include_linear=include_linear)
    if masks is None:
        masks = {name: g.masks for name, g in iter_gates(_unwrap(model)) if g.masks is not None}
    return table.gated(masks)


def count_macs(
    model: nn.Module,
    images: torch.Tensor,
    *,
    include_linear: bool = False,
    stochastic: bool = False,
) -> MacCount:
    """Count dense and gated multiply-accumulates per image, for reports.

    Runs one gated forward of ``images`` (no grad) with every module in eval mode, so the gates are
    deterministic (``logit - offset >= 0``) unless ``stochastic`` asks for the training estimator's
    noisy draws. Train/eval flags, the gate mode and the recorded masks are restored afterwards.
    A model without gates is counted too (``gated == dense``).

    Args:
        model: A timm model, gated or not.
        images: A batch ``(B, C, H, W)``.
        include_linear: Also count ``nn.Linear`` layers (default: conv MACs only, the paper's rule).
        stochastic: Draw the gates with logistic noise, as in training (BNs stay in eval mode).

    Returns:
        A :class:`MacCount`.

    Example:
        >>> result = count_macs(timm.create_model("gated_resnet18_cifar"), torch.randn(8, 3, 32, 32))
        >>> result.dense, result.gated.shape, result.mean_ratio
    """
    model = _unwrap(model)
    size = check_images(model, images, caller="count_macs")  # names the expected shape
    gates = list(iter_gates(model))
    saved = [g.masks for _, g in gates]
    try:
        with _record_layers(model, include_linear) as (stats, ran), \
                _eval_and_restore(model, stochastic_gates=stochastic), torch.no_grad():
            for _, g in gates:
                g.masks = None
            try:
                if gates:
                    with gate_mode(model, "gated"):
                        model(images)
                else:
                    model(images)
            except (RuntimeError, AssertionError) as err:  # e.g. an image too small for the stem
                raise InputShapeError(
                    f"count_macs: the model cannot run images of shape {tuple(images.shape)}: {err}"
                ) from None
            masks = {name: g.masks for name, g in gates if g.masks is not None}
        table = _build_table(model, stats, ran, size)
    finally:
        for (_, g), m in zip(gates, saved):
            g.masks = m
    batch = images.shape[0]
    gated = table.gated(masks) if table.blocks else torch.full((batch,), float(table.dense), dtype=torch.float64)
    blocks = {
        b.name: BlockMacs(dense=b.dense, gated=b.gated(masks[b.name]), gate=b.gate_macs) for b in table.blocks
    }
    return MacCount(
        dense=table.dense, gated=gated.detach().cpu(), gate_macs=table.gate_macs, blocks=blocks,
        input_size=size, include_linear=bool(include_linear),
    )
