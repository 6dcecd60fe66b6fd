"""Compact ViT blocks: run a gated timm ViT ``Block`` on its kept attention heads and MLP units only.

Where ``attach/vit.py`` masks (heads at the input of ``attn.proj``, hidden units at the input of
``mlp.fc2``), an off head's or unit's whole path is dead, so per forward the block evaluates its gate
on the block input and gathers, for the kept heads ``k``, their q/k/v rows of ``qkv`` (and of timm's
optional attention ``gate``) and their ``head_dim`` input columns of ``proj``; for the kept units
``u``, their row(s) of ``fc1`` (``GluMlp``: both halves; ``SwiGLU``: ``fc1_g`` and ``fc1_x``) and their
input columns of ``fc2``. Attention runs with ``F.scaled_dot_product_attention`` on the kept heads
(``q_norm`` / ``k_norm`` normalise over ``head_dim`` only, so they apply per head unchanged).

The gated-mode norm set is used (``norm1``, ``norm2`` and the q/k norms: the gated copies when the
model has separate norms). Layer scale and the residual adds are timm's ``Block``; eval only (drop
path and dropout are identities). No head kept: the attention branch is ``proj``'s bias (what
``proj`` gives for an all-zero input); no unit kept: the MLP branch is ``fc2``'s bias.

Batch > 1 follows ``compact/batching.py`` (``"union"`` by default: union of the kept heads / units
over the batch, each sample's off ones zeroed before ``proj`` / ``fc2``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import GluMlp, SwiGLU
from timm.models import vision_transformer as vt
from torch import nn

from ..attach.vit import vit_block_spec
from ..errors import UnsupportedModelError
from ..gates import BlockGate
from .batching import BatchStrategy, check_strategy, kept, run_batched, zero_off
from .fold import gated_norm
from .gate import CompactGate

__all__ = ["CompactVitBlock", "compact_vit_block"]


def _unless_identity(module: nn.Module) -> nn.Module | None:
    return None if isinstance(module, nn.Identity) else module


def refuse_attention_masks(attn_mask: torch.Tensor | None, is_causal: bool) -> None:
    """Compact ViT blocks run unmasked attention only.

    Raises:
        NotImplementedError: an ``attn_mask`` or ``is_causal``.
    """
    if attn_mask is not None or is_causal:
        raise NotImplementedError("compact ViT blocks do not take attn_mask or is_causal")


def residual(x: torch.Tensor, branch: torch.Tensor | None, scale: nn.Module | None) -> torch.Tensor:
    """``x + scale(branch)`` (timm's layer scale; None: identity); ``x`` itself when the branch kept
    nothing (None)."""
    if branch is None:
        return x
    return x + (branch if scale is None else scale(branch))


def take_block_parts(compact: nn.Module, block: nn.Module, gate: BlockGate) -> None:
    """Set on ``compact`` what every compact ViT block takes from a gated timm ``Block``: the
    gated-mode norms, layer scales (identities dropped: each module call costs dispatch time at
    batch 1), the MLP activation, the head geometry and ``qkv`` stored head-major ``(H, 3, d, C)``."""
    attn = block.attn
    compact.norm1, compact.norm2 = gated_norm(block, gate, "norm1"), gated_norm(block, gate, "norm2")
    compact.q_norm = _unless_identity(gated_norm(block, gate, "attn.q_norm"))
    compact.k_norm = _unless_identity(gated_norm(block, gate, "attn.k_norm"))
    compact.ls1, compact.ls2 = _unless_identity(block.ls1), _unless_identity(block.ls2)
    compact.act = block.mlp.act
    compact.num_heads, compact.head_dim, compact.scale = attn.num_heads, attn.head_dim, float(attn.scale)
    heads = attn.num_heads
    qkv_w = rearrange(attn.qkv.weight.detach(), "(qkv h d) c -> h qkv d c", qkv=3, h=heads)
    compact.register_buffer("qkv_w", qkv_w.contiguous())
    qkv_b = _bias(attn.qkv)
    compact.register_buffer("qkv_b", None if qkv_b is None else
                            rearrange(qkv_b, "(qkv h d) -> h qkv d", qkv=3, h=heads).contiguous())


def _bias(layer: nn.Linear) -> torch.Tensor | None:
    return None if layer.bias is None else layer.bias.detach()


def _fc1_parts(mlp: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """The ``(U, C)`` fc1 weight rows and ``(U,)`` biases per part: ``[fc1]`` or ``[value, gate]``."""
    if isinstance(mlp, SwiGLU):  # act(fc1_g(x)) * fc1_x(x)
        layers = [mlp.fc1_x, mlp.fc1_g]
        return [m.weight.detach() for m in layers], [_bias(m) for m in layers]
    w, b = mlp.fc1.weight.detach(), _bias(mlp.fc1)
    if not isinstance(mlp, GluMlp):
        return [w], [b]
    ws, bs = list(w.chunk(2)), [None, None] if b is None else list(b.chunk(2))
    if not mlp.gate_last:  # act(first half) * second half
        ws, bs = ws[::-1], bs[::-1]
    return ws, bs


class CompactVitBlock(nn.Module):
    """A timm ViT ``Block`` that computes only the heads and MLP units its gate keeps.

    Args:
        block: A gated timm ``vision_transformer.Block`` (standard ``Attention``; ``Mlp``,
            ``GluMlp`` or ``SwiGLU``).
        gate: The block's gate.
        strategy: Batch strategy, see ``compact/batching.py``.

    Raises:
        UnsupportedModelError: a block variant ``attach/vit.py`` does not gate, or a ``Block``
            subclass with its own ``forward``.
        ValueError: unknown ``strategy``.
    """

    def __init__(self, block: nn.Module, gate: BlockGate, strategy: BatchStrategy = "union") -> None:
        super().__init__()
        self.strategy = check_strategy(strategy)
        if vit_block_spec(block) is None or type(block).forward is not vt.Block.forward:
            raise UnsupportedModelError(
                f"compact execution supports timm.models.vision_transformer.Block itself, got "
                f"{type(block).__module__}.{type(block).__name__}"
            )
        attn, mlp = block.attn, block.mlp
        self.gate = CompactGate(gate)
        # Head-major layouts, so that the kept heads / units are a gather of contiguous rows (einops
        # spells the layouts once here; the per-call reshapes below stay plain torch, which costs
        # less dispatch time at batch 1).
        take_block_parts(self, block, gate)
        heads = attn.num_heads
        proj_w = rearrange(attn.proj.weight.detach(), "o (h d) -> h d o", h=heads)
        self.register_buffer("proj_w", proj_w.contiguous())
        self.register_buffer("proj_b", _bias(attn.proj))
        has_gate = getattr(attn, "gate", None) is not None  # timm's optional sigmoid output gate
        self.register_buffer("agate_w", rearrange(attn.gate.weight.detach(), "(h d) c -> h d c", h=heads)
                             if has_gate else None)
        agate_b = _bias(attn.gate) if has_gate else None
        self.register_buffer("agate_b", None if agate_b is None else rearrange(agate_b, "(h d) -> h d", h=heads))
        ws, bs = _fc1_parts(mlp)
        self.register_buffer("fc1_w", torch.stack(ws))  # (parts, U, C)
        self.register_buffer("fc1_b", None if bs[0] is None else torch.stack(bs))  # type: ignore[arg-type]
        self.register_buffer("fc2_w", mlp.fc2.weight.detach().t().contiguous())  # (U, C_out)
        self.register_buffer("fc2_b", _bias(mlp.fc2))

    def attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """The attention branch on the normed input ``x`` ``(B, N, C)`` for the ``(B, H)`` head mask.

        Returns ``(B, N, C_out)``, or ``proj``'s bias ``(C_out,)`` / None (no bias) when no head is on.
        """
        idx = kept(mask)
        k = idx.numel()
        if k == 0:
            return None if self.proj_b is None else self.proj_b.clone()
        batch, tokens, dim = x.shape
        d = self.head_dim
        w = self.qkv_w.index_select(0, idx).reshape(k * 3 * d, dim)
        b = None if self.qkv_b is None else self.qkv_b.index_select(0, idx).reshape(-1)
        q, key, v = F.linear(x, w, b).reshape(batch, tokens, k, 3, d).permute(3, 0, 2, 1, 4).unbind(0)
        if self.q_norm is not None:
            q = self.q_norm(q)
        if self.k_norm is not None:
            key = self.k_norm(key)
        h = F.scaled_dot_product_attention(q, key, v, scale=self.scale)
        h = h.transpose(1, 2).reshape(batch, tokens, k * d)
        if self.agate_w is not None:
            gb = None if self.agate_b is None else self.agate_b.index_select(0, idx).reshape(-1)
            h = h * F.linear(x, self.agate_w.index_select(0, idx).reshape(k * d, dim), gb).sigmoid()
        h = zero_off(h, mask, idx, repeat=d)
        return F.linear(h, self.proj_w.index_select(0, idx).reshape(k * d, -1).t(), self.proj_b)

    def mlp(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """The MLP branch on the normed input ``x`` for the ``(B, U)`` unit mask.

        Returns ``(B, N, C_out)``, or ``fc2``'s bias ``(C_out,)`` / None (no bias) when no unit is on.
        """
        idx = kept(mask)
        if idx.numel() == 0:
            return None if self.fc2_b is None else self.fc2_b.clone()
        w = self.fc1_w.index_select(1, idx)
        b = None if self.fc1_b is None else self.fc1_b.index_select(1, idx).reshape(-1)
        h = F.linear(x, w.reshape(-1, w.shape[-1]), b)
        if w.shape[0] == 2:  # GluMlp / SwiGLU: value * act(gate)
            value, gate = h.chunk(2, dim=-1)
            h = value * self.act(gate)
        else:
            h = self.act(h)
        h = zero_off(h, mask, idx)
        return F.linear(h, self.fc2_w.index_select(0, idx).t(), self.fc2_b)

    def block(self, x: torch.Tensor, masks: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """timm's pre-norm block on the kept heads and units (``x`` may be a sub-batch)."""
        heads, units = masks
        x = residual(x, self.attention(self.norm1(x), heads), self.ls1)
        return residual(x, self.mlp(self.norm2(x), units), self.ls2)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        """Gate on ``x`` ``(B, N, C)``, then run the block on what the gate keeps.

        Raises:
            NotImplementedError: an ``attn_mask`` or ``is_causal`` (not supported by compact blocks).
        """
        refuse_attention_masks(attn_mask, is_causal)
        return run_batched(self.block, x, self.gate(x), self.strategy)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, hidden={self.fc2_w.shape[0]}, strategy={self.strategy!r}"


def compact_vit_block(block: nn.Module, gate: BlockGate, strategy: BatchStrategy) -> nn.Module | None:
    """The compact version of a gated timm ViT ``Block``, or None for any other module."""
    if isinstance(block, vt.Block):
        return CompactVitBlock(block, gate, strategy)
    return None
