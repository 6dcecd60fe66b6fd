"""Width gates: per input, a gated block keeps a *prefix* of its inner channels, at one of a few levels.

Channel gates (the paper's, ``block_gate.py``) pick any subset of channels per image, so images of a
batch rarely share a pattern and the kept channels must be gathered. A width gate instead picks, per
image and block, one level ``k`` of ``levels`` and keeps the first ``s_k ~ k / levels`` channels of
every gated width of the block (DS-Net, Li et al., CVPR 2021, "dynamic slimmable network"; the
prefix widths of slimmable networks, Yu et al., ICLR 2019, and Yu & Huang, ICCV 2019). A prefix of a
conv's channels is a slice of its weight (a view), and the images of a batch that chose the same
level run together (``compact/width.py``).

How a level is chosen (one categorical choice per block, shared by its gated widths, as DS-Net's
gate predicts one slimming ratio for all the layers it controls):

* The gate network (the same bottleneck MLP as the channel gate, ``network.py``) maps the pooled
  block input to ``levels`` scores ``a_1..a_L``, one per level.
* Calibration offset ``lambda`` (the ``logit_offset`` buffer, set by ``calibrate_budget`` /
  ``set_budget``) is a *price per unit of width*: the score of level ``k`` is
  ``a_k - lambda * k / L``. For any scores the chosen width never grows when ``lambda`` grows (the
  maximiser of ``a_k - lambda * f_k`` with increasing ``f_k`` is non-increasing in ``lambda``), so
  the MAC fraction falls monotonically with the offset and the calibration bisection works
  unchanged. ``lambda = +inf`` selects the smallest level, ``-inf`` the full width.
* Training: straight-through Gumbel-softmax (Jang et al., ICLR 2017; Maddison et al., ICLR 2017),
  the categorical counterpart of the channel gate's logistic-noise estimator: the forward value is
  the one-hot argmax of ``(score + g) / tau`` with Gumbel noise ``g``, the backward pass uses the
  gradient of ``softmax((score + g) / tau)``. Eval: the deterministic argmax of the scores.
* The masks are ``onehot @ P`` with ``P[k, c] = [c < s_k]``: ordinary 0/1 masks (exact, a prefix
  per image), so MAC counting, budget losses, calibration, ``gate_masks`` and the recipe use them
  as they use channel-gate masks, and the budget loss reaches the scores through the
  straight-through gradient.

Level sizes: a width of ``C`` channels keeps ``s_k = ceil(C * k / L)`` channels at level ``k``; a
grouped conv (ResNeXt) with ``G`` groups keeps whole groups, ``s_k = (C / G) * ceil(G * k / L)``,
so the prefix stays a valid grouped conv. The sizes must be distinct: ``levels`` is at most ``C``
(``G`` when grouped), for the narrowest gated width of every block.

ViTs (``attach/vit.py``): the two gated widths of a block are its attention heads and its MLP hidden
units, so level ``k`` keeps the first ``ceil(H * k / L)`` heads and the first ``ceil(U * k / L)``
hidden units: nested heads as in HydraViT (Haberer et al., NeurIPS 2024) and nested FFN widths as
in MatFormer (Devvrit et al., NeurIPS 2024), chosen per input and block. The heads bound the
levels: ``gate_levels`` is at most ``num_heads`` (3 for ViT-Ti, 6 for ViT-S, 12 for ViT-B).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .block_gate import BlockGate, GateSpec, Pooling
from .config import GateConfig
from .network import GateNetwork

__all__ = ["WidthGate", "level_sizes", "straight_through_level"]

_EPS = 1e-6
#: An infinite calibration offset is clamped to this price (a finite price keeps the scores
#: ordered and the softmax finite; no score of a real gate network comes near it).
_MAX_PRICE = 1e30


def level_sizes(channels: int, levels: int, *, groups: int = 1, unit: str = "channels") -> tuple[int, ...]:
    """Channels kept at each level ``1..levels`` of a gated width of ``channels`` channels.

    Args:
        channels: The full width.
        levels: Number of levels (the last keeps every channel).
        groups: Conv groups the prefix must keep whole (1 for an ungrouped conv).
        unit: What one channel of the width is, in the error message (ViT: ``"attention heads"``).

    Returns:
        ``levels`` strictly increasing sizes, the last equal to ``channels``.

    Raises:
        ValueError: ``channels`` is not divisible by ``groups``, or ``levels`` exceeds the number
            of distinct prefixes (``channels``, or ``groups`` for a grouped conv).
    """
    if groups < 1 or channels % groups:
        raise ValueError(f"a width of {channels} channels cannot be split into {groups} groups")
    units = channels if groups == 1 else groups
    if levels > units:
        what = f"{channels} {unit}" if groups == 1 else f"{channels} {unit} in {groups} groups"
        raise ValueError(
            f"gate_levels={levels} is too many for a gated width of {what}: valid gate_levels are "
            f"2..{units}"
        )
    granule = channels // units
    return tuple(granule * math.ceil(units * k / levels) for k in range(1, levels + 1))


def gumbel_noise(like: torch.Tensor) -> torch.Tensor:
    """Sample ``-log(-log(u))`` with ``u ~ U(0, 1)``, guarded away from 0 and 1."""
    u = torch.rand_like(like, dtype=torch.float32).clamp_(_EPS, 1.0 - _EPS)
    return (-torch.log(-torch.log(u))).to(like.dtype)


def straight_through_level(
    scores: torch.Tensor, *, tau: float, stochastic: bool, noise_scale: float = 1.0
) -> torch.Tensor:
    """One-hot level choice ``(B, L)`` from level scores ``(B, L)``.

    Args:
        scores: Level scores (calibration price already subtracted).
        tau: Temperature of the relaxed sample (training only).
        stochastic: Gumbel noise and the straight-through softmax gradient (training); when False
            the deterministic one-hot argmax with no gradient (inference).
        noise_scale: Scale of the Gumbel noise in training (1: the estimator above; 0: the
            deterministic choice, with the straight-through gradient still flowing).

    Returns:
        Exactly one 1.0 per row, in ``scores``' dtype.
    """
    if not stochastic:
        return F.one_hot(scores.argmax(dim=1), scores.shape[1]).to(scores.dtype)
    noisy = scores + noise_scale * gumbel_noise(scores) if noise_scale else scores
    soft = torch.softmax(noisy / tau, dim=1)
    return _HardOneHot.apply(soft)


class _HardOneHot(torch.autograd.Function):
    """Forward the exact one-hot argmax (no ``h + s - s`` rounding), backward the identity."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, soft: torch.Tensor) -> torch.Tensor:
        return F.one_hot(soft.argmax(dim=1), soft.shape[1]).to(soft.dtype)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class WidthGate(BlockGate):
    """Per-input prefix widths for one block: one level of ``config.levels`` per image.

    It is a :class:`BlockGate` (same hooks, norm copies, ``masks``, ``logit_offset``), whose gate
    network emits ``levels`` scores instead of one logit per channel, and whose masks are prefixes.

    Args:
        in_channels: Channels of the block input the gate reads.
        widths: Size of each gated width of the block, in forward order.
        config: The model's gate configuration (``gate_type="width"``).
        norms: The block's norm layers duplicated for the gated mode.
        pooling: How the block input is pooled (ResNets: ``"spatial"``, ViTs: ``"tokens"``).
        groups: Conv groups each width's prefix keeps whole (a ResNeXt Bottleneck's ``conv2``).
        units: What one channel of each width is, for error messages (default ``"channels"``).

    Raises:
        ValueError: ``config.levels`` exceeds what the narrowest width allows (see
            :func:`level_sizes`; a ViT block's heads).
    """

    # ResNet blocks (inner conv widths) and ViT blocks (heads and MLP hidden units, ``attach/vit.py``).
    families: ClassVar[tuple[str, ...] | None] = ("resnet", "vit")

    @classmethod
    def from_spec(cls, spec: GateSpec, *, config: GateConfig,
                  norms: Mapping[str, nn.Module] | None = None) -> WidthGate:
        """The width gate of a block with layout ``spec`` (its ``groups`` are kept whole)."""
        return cls(spec.in_channels, spec.widths, config=config, norms=norms, pooling=spec.pooling,
                   groups=spec.groups, units=spec.units)

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        *,
        config: GateConfig,
        norms: Mapping[str, nn.Module] | None = None,
        pooling: Pooling = "spatial",
        groups: int = 1,
        units: Sequence[str] = (),
    ) -> None:
        super().__init__(in_channels, widths, config=config, norms=norms, pooling=pooling)
        self.levels = int(config.levels)
        self.groups = int(groups)
        names = tuple(units) or ("channels",) * len(self.widths)
        # the narrowest width bounds the levels: check it first, so the message gives the block's range
        narrowest = min(range(len(self.widths)), key=lambda i: self.widths[i])
        level_sizes(self.widths[narrowest], self.levels, groups=self.groups, unit=names[narrowest])
        self.sizes = tuple(level_sizes(w, self.levels, groups=self.groups, unit=n)
                           for w, n in zip(self.widths, names))
        self.net = GateNetwork(in_channels, self.levels, reduction=config.reduction)
        fractions = torch.arange(1, self.levels + 1, dtype=torch.float32) / self.levels
        self.register_buffer("fractions", fractions, persistent=False)
        for i, (width, sizes) in enumerate(zip(self.widths, self.sizes)):
            prefix = (torch.arange(width)[None, :] < torch.tensor(sizes)[:, None]).float()
            self.register_buffer(f"prefix{i}", prefix, persistent=False)

    def prefixes(self) -> tuple[torch.Tensor, ...]:
        """``P_i`` of every width: ``(levels, C_i)``, ``P_i[k, c] = [c < s_{i,k}]``."""
        return tuple(getattr(self, f"prefix{i}") for i in range(len(self.widths)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Level scores ``a_k - lambda * k / L``, ``(B, levels)``, in float32."""
        pooled = self.pool(x)
        with torch.autocast(device_type=pooled.device.type, enabled=False):
            price = self.logit_offset.float().clamp(-_MAX_PRICE, _MAX_PRICE)
            return self.net(pooled.float()) - price * self.fractions.float()

    def choose(self, x: torch.Tensor) -> torch.Tensor:
        """One-hot level choice ``(B, levels)``: stochastic in training, deterministic in eval."""
        # ``noise_scale`` (channel gates' ``set_gate_noise``, where the gate has it) scales the noise
        noise = float(getattr(self, "noise_scale", 1.0))
        return straight_through_level(self.logits(x), tau=self.config.tau, stochastic=self.training,
                                      noise_scale=noise)

    def level_index(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic (eval) level of each input, ``(B,)`` int64 in ``0..levels-1``."""
        with torch.no_grad():
            return self.logits(x).argmax(dim=1)

    def compute_masks(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Prefix masks ``(B, C_i)`` per width, from the level choice on the block input ``x``."""
        onehot = self.choose(x)
        with torch.autocast(device_type=onehot.device.type, enabled=False):
            return tuple(onehot @ p.to(onehot.dtype) for p in self.prefixes())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gate_type=width, levels={self.levels}, sizes={self.sizes}"
