"""``attach_gates`` / ``detach_gates``: add per-sample channel gates to a timm model by hooks.

Nothing of timm's model code is forked: each supported block gets a :class:`BlockGate` submodule
named ``dyn_gate`` that owns the gate network, the gated-mode norm copies and the hooks.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from ..errors import GatesAlreadyAttachedError, NoGatesError, UnsupportedModelError
from ..gates import GATE_CLASSES, BlockGate, GateConfig
from ..registry import Registry
from .resnet import resnet_block_spec
from .spec import BlockFamily, BlockSpec
from .vit import vit_block_spec

GATE_ATTR = "dyn_gate"

FAMILIES: Registry[BlockFamily] = Registry("block family")
"""Block families gates attach to, by name; a block belongs to the first family whose ``spec``
accepts it (the built-in ones accept disjoint timm classes)."""


def register_family(family: BlockFamily) -> BlockFamily:
    """Teach ``attach_gates`` a new block family (then its MAC accounting with
    ``compute.register_block_cost(family.name)``, and optionally ``compact.COMPACT_BUILDERS`` and
    ``compact.STATIC_EXPORTERS`` entries under the same name).

    Raises:
        ValueError: A family of that name is already registered.
    """
    return FAMILIES.add(family.name, family)


register_family(BlockFamily(
    name="resnet",
    description="timm ResNet blocks (BasicBlock, Bottleneck): resnet*, resnet*d/t/s, resnetrs*, "
    "seresnet*, resnext*, wide_resnet*, resnetblur*, resnetaa*, ecaresnet*",
    spec=resnet_block_spec,
))
register_family(BlockFamily(
    name="vit",
    description="timm Vision Transformer blocks (vision_transformer.Block with timm Attention and "
    "Mlp/GluMlp/SwiGLU): vit_*, deit_*, any img_size/patch_size, class/register tokens",
    spec=vit_block_spec,
))


def block_family(module: nn.Module) -> tuple[BlockFamily, BlockSpec] | None:
    """The registered family of ``module`` and its gating layout, or None for any other module."""
    for family in FAMILIES.values():
        spec = family.spec(module)
        if spec is not None:
            return family, spec
    return None


def gate_family(block: nn.Module, gate: BlockGate) -> str:
    """The family name of a gated ``block``: recorded on its gate by ``attach_gates`` (else looked up).

    Raises:
        UnsupportedModelError: ``block`` belongs to no registered family.
    """
    if gate.family is not None:
        return gate.family
    match = block_family(block)
    if match is None:
        raise UnsupportedModelError(f"{type(block).__name__} belongs to no registered block family "
                                    f"({', '.join(map(str, FAMILIES))})")
    return match[0].name


def _find_blocks(model: nn.Module) -> list[tuple[str, nn.Module, BlockFamily, BlockSpec]]:
    found = []
    for name, module in model.named_modules():
        match = block_family(module)
        if match is not None:
            found.append((name, module, *match))
    return found


def iter_gates(model: nn.Module) -> Iterator[tuple[str, BlockGate]]:
    """Yield ``(block_name, gate)`` for every gate in ``model``, in forward order."""
    for name, module in model.named_modules():
        if isinstance(module, BlockGate):
            yield name.rpartition(".")[0], module


def has_gates(model: nn.Module) -> bool:
    """Whether ``model`` carries any gate."""
    return next(iter_gates(model), None) is not None


def require_gates(model: nn.Module) -> list[tuple[str, BlockGate]]:
    """The model's gates; raises :class:`NoGatesError` when there are none."""
    gates = list(iter_gates(model))
    if not gates:
        raise NoGatesError(
            f"{type(model).__name__} has no gates: call timm_gated_ssl.attach_gates(model, budget=...) "
            "first or create a gated model, e.g. timm.create_model('gated_resnet18')"
        )
    return gates


def gate_config(model: nn.Module) -> GateConfig:
    """The gate configuration of a gated model."""
    return require_gates(model)[0][1].config


def attach_gates(
    model: nn.Module,
    *,
    budget: float,
    separate_bn: bool = True,
    tau: float = GateConfig.tau,
    reduction: int = GateConfig.reduction,
    gate_type: str = GateConfig.gate_type,
    levels: int = GateConfig.levels,
) -> nn.Module:
    """Attach a gate to every supported block of ``model``, in place, and return the same object.

    The model starts in dense mode, where it computes exactly what it computed before.

    Args:
        model: A timm model (any ResNet or Vision Transformer).
        budget: Training target ``t_d`` of the budget loss, a fraction of the dense MACs in (0, 1].
        separate_bn: Keep one set of the blocks' norms per mode (the paper's setting). The gated
            copies start as copies of the dense ones, so a pretrained network keeps its statistics.
        tau: Temperature of the straight-through estimator (2/3 in the paper).
        reduction: Gate hidden width is ``C_in // reduction`` (4 in the paper).
        gate_type: A key of ``gates.GATE_CLASSES``. ``"channel"`` (default): the paper's
            per-channel gates. ``"width"``: per input,
            each block keeps a prefix of its inner channels (ViT: of its heads and of its MLP hidden
            units) at one of ``levels`` levels (DS-Net style, ``gates/width.py``), fast at any batch
            size with ``compact``.
        levels: Number of width levels of ``gate_type="width"`` (at least 2; 8 keeps 1/8 ... 8/8;
            at most the narrowest gated width, so at most ``num_heads`` for a ViT).

    Returns:
        ``model`` itself, now with gates.

    Raises:
        InvalidBudgetError: ``budget`` is not a number in (0, 1].
        GatesAlreadyAttachedError: ``model`` already carries gates.
        UnsupportedModelError: ``model`` has no block of a supported family, or a block of a
            family the gate type does not list in its ``families``.
        ValueError: unknown ``gate_type`` or a bad ``levels``, e.g. more levels than a ViT block
            has heads (the message names the block, the value and the valid range).

    Example:
        >>> model = attach_gates(timm.create_model("resnet18"), budget=0.3)
        >>> with gate_mode(model, "gated"):
        ...     logits = model(images)
    """
    config = GateConfig(budget=budget, separate_bn=separate_bn, tau=tau, reduction=reduction,
                        gate_type=gate_type, levels=levels)
    if has_gates(model):
        raise GatesAlreadyAttachedError(
            f"{type(model).__name__} already carries gates; call detach_gates(model) before "
            "attaching new ones"
        )
    blocks = _find_blocks(model)
    if not blocks:
        supported = "; ".join(f"{f.name}: {f.description}" for f in FAMILIES.values())
        raise UnsupportedModelError(
            f"{type(model).__name__} has no block that gates can be attached to. "
            f"Supported block families: {supported}"
        )
    gates = [(block, spec, _make_gate(name, block, family, spec, config)) for name, block, family, spec in blocks]
    for block, spec, gate in gates:
        reference = next(block.parameters(), None)
        if reference is not None:
            gate.to(device=reference.device, dtype=reference.dtype)
        gate.train(block.training)
        block.add_module(GATE_ATTR, gate)
        gate.register_hooks(block, spec.mask_points, spec.norm_paths)
    return model


def _make_gate(name: str, block: nn.Module, family: BlockFamily, spec: BlockSpec, config: GateConfig) -> BlockGate:
    """``GATE_CLASSES[config.gate_type]`` built from the block's layout, for a family it supports."""
    gate_class = GATE_CLASSES[config.gate_type]
    if gate_class.families is not None and family.name not in gate_class.families:
        supported = "; ".join(f"{f.name}: {f.description}" for key, f in FAMILIES.items()
                              if key in gate_class.families)
        raise UnsupportedModelError(
            f"gate_type={config.gate_type!r} cannot gate block {name!r} ({type(block).__module__}."
            f"{type(block).__name__}, family {family.name!r}); {config.gate_type} gates support "
            f"{supported}. Use gate_type='channel' (the default) for this model"
        )
    norms = {path: block.get_submodule(path) for path in spec.norm_paths}
    try:
        gate = gate_class.from_spec(spec, config=config, norms=norms)
    except ValueError as error:
        raise ValueError(f"block {name!r}: {error}") from None
    gate.family = family.name
    return gate


def detach_gates(model: nn.Module) -> nn.Module:
    """Remove every gate and hook from ``model``, restoring its original outputs and state-dict keys.

    Raises:
        NoGatesError: ``model`` carries no gates.
    """
    require_gates(model)
    for _, module in list(model.named_modules()):
        gate = module._modules.get(GATE_ATTR)
        if isinstance(gate, BlockGate):
            gate.remove_hooks(module)
            del module._modules[GATE_ATTR]
    return model

