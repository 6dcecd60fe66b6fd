"""``freeze_dense``: gate a trained encoder with its dense mode frozen as the teacher (docs/posthoc.md).

Post-hoc gating starts from an encoder that already works (``--init_from``). Plain co-training from
it moves the shared weights and pulls the dense mode below the init within a few steps (measured in
docs/posthoc.md). With the dense mode frozen, the init *is* the dense mode and stays it; only what
the gated mode owns trains:

* the gates and, with ``separate_bn``, the gated-mode norm copies: every parameter under a block's
  ``dyn_gate`` (``attach.GATE_ATTR``);
* the SSL heads (projector, predictor), which are not part of the backbone.

Every other backbone parameter is frozen (``requires_grad=False``, so the optimizer never sees it),
and no norm outside the gates updates its running statistics: the block norms that have gated
copies run in eval mode during the dense pass only (in the gated pass the copies' tensors are
swapped into those same modules, which must then normalise with batch statistics), and the norms
both modes share (the stem's) stay in eval mode. After training, the dense mode computes exactly
what the init computed (tested bit for bit). The dense pass runs without autograd, as a teacher's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from ..attach import GATE_ATTR, has_gates, iter_gates

__all__ = ["dense_norms", "freeze_dense_path", "gated_only", "norms_in_eval", "shared_norms"]


def gated_only(name: str) -> bool:
    """Whether the parameter or module ``name`` belongs to the gated mode alone (under a gate)."""
    return f".{GATE_ATTR}." in f".{name}." or name == GATE_ATTR


def freeze_dense_path(backbone: nn.Module) -> int:
    """Freeze every backbone parameter the gated mode does not own; return how many were frozen.

    Raises:
        ValueError: ``backbone`` has no gates (nothing would be left to train).
    """
    if not has_gates(backbone):
        raise ValueError("freeze_dense needs a gated backbone: use a gated_* architecture (e.g. gated_resnet18)")
    frozen = 0
    for name, param in backbone.named_parameters():
        if not gated_only(name):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def dense_norms(backbone: nn.Module) -> list[nn.Module]:
    """The norms with running statistics outside the gates: those the dense mode computes with."""
    return [m for name, m in backbone.named_modules() if isinstance(m, _NormBase) and not gated_only(name)]


def shared_norms(backbone: nn.Module) -> list[nn.Module]:
    """The dense norms without a gated copy: both modes normalise with them (the stem's, or every
    block norm without ``separate_bn``), so a frozen dense mode keeps them in eval mode throughout."""
    copied = {id(backbone.get_submodule(f"{name}.{path}"))
              for name, gate in iter_gates(backbone) if len(gate.norms) for path in gate.norm_paths}
    return [m for m in dense_norms(backbone) if id(m) not in copied]


@contextmanager
def norms_in_eval(norms: Iterable[nn.Module]) -> Iterator[None]:
    """Run ``norms`` in eval mode for the duration (restoring each one's mode after)."""
    norms = list(norms)
    modes = [m.training for m in norms]
    for m in norms:
        m.training = False
    try:
        yield
    finally:
        for m, mode in zip(norms, modes):
            m.training = mode
