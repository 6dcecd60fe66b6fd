"""``BlockGate``: the gate of one block, and the owner of every hook that gating needs there.

A gate is an ``nn.Module`` attached to its block as the submodule ``dyn_gate``, so its parameters
live in the model (``state_dict``, ``.to()``, ``deepcopy``, DDP, ``torch.compile``). Its hooks are
bound methods of the gate, registered once on the block and on the block's own submodules:

* a forward pre-hook on the block computes the masks from the block input (gated mode only);
* forward hooks on the activations after each gated width multiply by the masks;
* with separate norms, pre/post hooks on each of the block's norm layers swap the gated copies'
  parameters and buffers in for the duration of that norm's forward (the module objects and the
  state-dict keys of the original model stay untouched, so dense mode is bit-identical to the
  ungated model and ``detach_gates`` restores it exactly).

In dense mode every hook returns immediately and the gate network never runs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import torch
from torch import nn

from .config import GateConfig
from .estimator import straight_through_gate
from .network import GateNetwork

Pooling = Literal["spatial", "tokens"]


@dataclass(frozen=True)
class MaskPoint:
    """Where one gated width's mask is applied inside a block.

    Attributes:
        path: Attribute path of the module, relative to the block.
        on: ``"output"`` multiplies the module's output, ``"input"`` its first input.
        repeat: Each mask value covers this many consecutive channels (e.g. a head's dims).
    """

    path: str
    on: Literal["output", "input"] = "output"
    repeat: int = 1


def _in_backward() -> bool:
    """True while autograd runs a backward pass (e.g. a gradient-checkpointing replay).

    Under ``torch.compile`` replays happen inside the compiled graph, never through these hooks.
    """
    if torch.compiler.is_compiling():
        return False
    return torch._C._current_graph_task_id() != -1


class GateSpec(Protocol):
    """What a gate is built from: the gating layout of its block (``attach.BlockSpec``)."""

    in_channels: int
    widths: tuple[int, ...]
    pooling: Pooling
    groups: int
    units: tuple[str, ...]


class BlockGate(nn.Module):
    """Per-sample channel gates for one block (``gate_type="channel"``, the paper's gates).

    Args:
        in_channels: Channels (or embedding width) of the block input the gate reads.
        widths: Size of each gated width in the block, in forward order (one mask per width).
        config: The model's gate configuration.
        norms: The block's norm layers by attribute path, duplicated for the gated mode when
            ``config.separate_bn``.
        pooling: ``"spatial"`` averages a ``(B, C, H, W)`` input over H, W; ``"tokens"`` averages a
            ``(B, N, C)`` input over the tokens.
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        *,
        config: GateConfig,
        norms: Mapping[str, nn.Module] | None = None,
        pooling: Pooling = "spatial",
    ) -> None:
        super().__init__()
        self.config = config
        self.widths = tuple(int(w) for w in widths)
        self.pooling: Pooling = pooling
        self.net = GateNetwork(in_channels, sum(self.widths), reduction=config.reduction)
        self.norms = nn.ModuleDict(
            {_key(k): copy.deepcopy(m) for k, m in (norms or {}).items()}
            if config.separate_bn
            else {}
        )
        # A gate is on when ``logit - logit_offset >= 0``; calibration moves the offset.
        self.register_buffer("logit_offset", torch.zeros(()))
        self.mode: str = "dense"
        # Scale of the training noise (1: the paper's estimator); set by ``set_gate_noise``.
        self.noise_scale: float = 1.0
        self.masks: tuple[torch.Tensor, ...] | None = None
        self._active: tuple[torch.Tensor, ...] | None = None
        self.mask_points: tuple[MaskPoint, ...] = ()
        self.norm_paths: tuple[str, ...] = ()
        self.family: str | None = None  # the block family it was attached to (set by attach_gates)

    #: Block families (``attach.FAMILIES`` names) this gate type can gate; None: every family.
    families: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def from_spec(cls, spec: GateSpec, *, config: GateConfig,
                  norms: Mapping[str, nn.Module] | None = None) -> BlockGate:
        """The gate of a block with layout ``spec`` (how ``attach_gates`` builds every gate type)."""
        return cls(spec.in_channels, spec.widths, config=config, norms=norms, pooling=spec.pooling)

    # ----------------------------------------------------------------------------------- masks
    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Average the block input to ``(B, C)``."""
        return x.mean(dim=(2, 3)) if self.pooling == "spatial" else x.mean(dim=1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Gate logits minus the calibration offset, ``(B, sum(widths))``, in float32."""
        pooled = self.pool(x)
        with torch.autocast(device_type=pooled.device.type, enabled=False):
            return self.net(pooled.float()) - self.logit_offset

    def compute_masks(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Masks for the block input ``x``: stochastic in training, deterministic in eval."""
        mask = straight_through_gate(self.logits(x), tau=self.config.tau, stochastic=self.training,
                                     noise_scale=self.noise_scale)
        return tuple(torch.split(mask, self.widths, dim=1))

    # ----------------------------------------------------------------------------------- hooks
    def _on_block_input(self, block: nn.Module, args: tuple[Any, ...]) -> None:
        if self.mode != "gated":
            self._active = None
            return
        masks = self.compute_masks(args[0])
        self._active = masks
        if not _in_backward():  # a checkpoint replay recomputes the same masks: record once
            self.masks = masks

    def _mask(self, index: int, x: torch.Tensor, repeat: int) -> torch.Tensor:
        mask = self._active[index].to(x.dtype)  # type: ignore[index]
        if repeat > 1:  # one gate per group of ``repeat`` consecutive channels (e.g. a head)
            mask = mask.repeat_interleave(repeat, dim=1)
        if self.pooling == "tokens":  # (B, N, C): channels last
            return x * mask.reshape((mask.shape[0],) + (1,) * (x.dim() - 2) + (mask.shape[1],))
        return x * mask.reshape(mask.shape + (1,) * (x.dim() - 2))

    def _mask_output(self, point: tuple[int, int], module: nn.Module, args: Any, output: Any) -> Any:
        if self._active is None:
            return None
        return self._mask(point[0], output, point[1])

    def _mask_input(self, point: tuple[int, int], module: nn.Module, args: tuple[Any, ...]) -> Any:
        if self._active is None:
            return None
        return (self._mask(point[0], args[0], point[1]),) + tuple(args[1:])

    def _swap_norm(self, key: str, module: nn.Module, *unused: Any) -> None:
        """Swap the gated copy in before the norm runs, and back after (its own inverse)."""
        if self.mode != "gated" or key not in self.norms:
            return
        _swap_tensors(module, self.norms[key])

    def register_hooks(
        self, block: nn.Module, mask_points: Sequence[MaskPoint], norm_paths: Sequence[str]
    ) -> None:
        """Register this gate's hooks on ``block`` (called once, by the family's attach code).

        Args:
            block: The block the gate belongs to.
            mask_points: Where mask ``i`` is applied, in the order of ``widths``.
            norm_paths: Attribute paths of the block's norms that exist once per mode.
        """
        self.mask_points = tuple(mask_points)
        self.norm_paths = tuple(norm_paths)
        block.register_forward_pre_hook(self._on_block_input)
        for index, point in enumerate(mask_points):
            module = block.get_submodule(point.path)
            if point.on == "output":
                module.register_forward_hook(_Bound(self._mask_output, (index, point.repeat)))
            else:
                module.register_forward_pre_hook(_Bound(self._mask_input, (index, point.repeat)))
        for path in norm_paths:
            norm = block.get_submodule(path)
            norm.register_forward_pre_hook(_Bound(self._swap_norm, _key(path)))
            norm.register_forward_hook(_Bound(self._swap_norm, _key(path)), always_call=True)

    def remove_hooks(self, block: nn.Module) -> None:
        """Remove every hook this gate registered on ``block`` or its submodules."""
        for module in block.modules():
            for hooks in (module._forward_pre_hooks, module._forward_hooks):
                for hook_id, hook in list(hooks.items()):
                    if _owner(hook) is self:
                        del hooks[hook_id]
                        module._forward_hooks_always_called.pop(hook_id, None)

    def extra_repr(self) -> str:
        return f"widths={self.widths}, budget={self.config.budget}, separate_bn={self.config.separate_bn}"


class _Bound:
    """A hook bound to a gate method with a leading argument (picklable, deepcopy-safe)."""

    def __init__(self, method: Callable[..., Any], arg: Any) -> None:
        self.method = method
        self.arg = arg

    def __call__(self, *args: Any) -> Any:
        return self.method(self.arg, *args)


def _owner(hook: Any) -> Any:
    method = hook.method if isinstance(hook, _Bound) else hook
    return getattr(method, "__self__", None)


def _key(path: str) -> str:
    return path.replace(".", "__")


def _swap_tensors(a: nn.Module, b: nn.Module) -> None:
    """Exchange the parameters and buffers of two identically shaped modules in place."""
    for store in ("_parameters", "_buffers"):
        da, db = getattr(a, store), getattr(b, store)
        for name in da:
            if da[name] is not None:
                da[name], db[name] = db[name], da[name]
