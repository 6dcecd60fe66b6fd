"""Compact execution of width-gated ViT blocks: inputs grouped by level, each group on weight prefixes.

A width gate on a timm ViT ``Block`` (``gates/width.py``, ``attach/vit.py``) keeps, per input, the
first ``h_k`` attention heads and the first ``u_k`` MLP hidden units of the block at its level
``k`` (nested heads as in HydraViT, Haberer et al., NeurIPS 2024; nested FFN widths as in
MatFormer, Devvrit et al., NeurIPS 2024). With the weights stored in the layouts below, the first
heads and units are the *leading rows* of a contiguous tensor, so a level runs on views of the
stored weights (no gather, no copy made by this code):

* ``qkv``: head-major ``(H, 3, d, C)`` (``[:h]`` reshapes to ``(h * 3 * d, C)`` without a copy);
  timm's optional attention output gate ``(H * d, C)``: its first ``h * d`` rows;
* ``proj``: input-major ``(H * d, C_out)``: its first ``h * d`` rows, used transposed;
* ``fc1``: one ``(U, C)`` tensor per part (``Mlp``: one; ``GluMlp`` / ``SwiGLU``: value and gate),
  each run on its first ``u`` rows; ``fc2``: input-major ``(U, C_out)``, its first ``u`` rows.

The batch is sorted by level once (:func:`~timm_gated_ssl.compact.width.run_by_level`), each
level's chunk runs the whole pre-norm block (attention on its ``h`` heads with
``F.scaled_dot_product_attention``, MLP on its ``u`` units, layer scale, residual adds), and the
results are scattered back: at most ``levels`` groups per block whatever the batch size, and no
per-sample zeroing (every input of a chunk keeps exactly the chunk's prefix). Every level keeps at
least one head and one unit (``level_sizes``), so no branch is ever empty.

The gated-mode norms are used (``norm1``, ``norm2``, q/k norms: the gated copies with separate
norms); eval only. Outputs equal the masked gated model in eval mode to float rounding.
``compact``'s ``batch_strategy`` does not apply.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models import vision_transformer as vt
from torch import nn

from ..attach.vit import vit_block_spec
from ..errors import UnsupportedModelError
from ..gates import BlockGate, WidthGate
from .vit import _bias, _fc1_parts, refuse_attention_masks, residual, take_block_parts
from .width import CompactWidthGate, run_by_level

__all__ = ["CompactVitWidthBlock", "compact_vit_width_block"]


class CompactVitWidthBlock(nn.Module):
    """A width-gated timm ViT ``Block`` that runs each level's inputs on its prefix of heads and units.

    Args:
        block: A width-gated timm ``vision_transformer.Block`` (standard ``Attention``; ``Mlp``,
            ``GluMlp`` or ``SwiGLU``).
        gate: The block's :class:`~timm_gated_ssl.gates.WidthGate`.

    Raises:
        UnsupportedModelError: a block variant ``attach/vit.py`` does not gate, or a ``Block``
            subclass with its own ``forward``.
    """

    def __init__(self, block: nn.Module, gate: WidthGate) -> None:
        super().__init__()
        if vit_block_spec(block) is None or type(block).forward is not vt.Block.forward:
            raise UnsupportedModelError(
                f"compact execution supports timm.models.vision_transformer.Block itself, got "
                f"{type(block).__module__}.{type(block).__name__}"
            )
        attn, mlp = block.attn, block.mlp
        self.gate = CompactWidthGate(gate)
        self.levels = gate.levels
        self.head_sizes, self.unit_sizes = gate.sizes  # widths: (heads, MLP hidden units)
        take_block_parts(self, block, gate)  # norms, layer scales, act, heads, qkv head-major (H, 3, d, C)
        self.register_buffer("proj_w", attn.proj.weight.detach().t().contiguous())  # (H * d, C_out)
        self.register_buffer("proj_b", _bias(attn.proj))
        agate = getattr(attn, "gate", None)  # timm's optional sigmoid output gate, rows head-major
        self.register_buffer("agate_w", None if agate is None else agate.weight.detach().contiguous())
        self.register_buffer("agate_b", None if agate is None else _bias(agate))
        ws, bs = _fc1_parts(mlp)
        self.parts = len(ws)
        for i, (w, b) in enumerate(zip(ws, bs)):  # one contiguous (U, C) tensor per part: [:u] is a view
            self.register_buffer(f"fc1_w{i}", w.contiguous())
            self.register_buffer(f"fc1_b{i}", None if b is None else b.contiguous())
        self.register_buffer("fc2_w", mlp.fc2.weight.detach().t().contiguous())  # (U, C_out)
        self.register_buffer("fc2_b", _bias(mlp.fc2))

    def attention(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        """The attention branch on the normed input ``x`` ``(B, N, C)`` with the first ``heads`` heads."""
        batch, tokens, dim = x.shape
        d = self.head_dim
        w = self.qkv_w[:heads].view(heads * 3 * d, dim)
        b = None if self.qkv_b is None else self.qkv_b[:heads].view(-1)
        q, k, v = F.linear(x, w, b).reshape(batch, tokens, heads, 3, d).permute(3, 0, 2, 1, 4).unbind(0)
        if self.q_norm is not None:
            q = self.q_norm(q)
        if self.k_norm is not None:
            k = self.k_norm(k)
        h = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        h = h.transpose(1, 2).reshape(batch, tokens, heads * d)
        if self.agate_w is not None:
            gb = None if self.agate_b is None else self.agate_b[: heads * d]
            h = h * F.linear(x, self.agate_w[: heads * d], gb).sigmoid()
        return F.linear(h, self.proj_w[: heads * d].t(), self.proj_b)

    def mlp(self, x: torch.Tensor, units: int) -> torch.Tensor:
        """The MLP branch on the normed input ``x`` with the first ``units`` hidden units."""
        h = [F.linear(x, getattr(self, f"fc1_w{i}")[:units], _prefix(getattr(self, f"fc1_b{i}"), units))
             for i in range(self.parts)]
        h = h[0] * self.act(h[1]) if self.parts == 2 else self.act(h[0])  # GluMlp / SwiGLU: value * act(gate)
        return F.linear(h, self.fc2_w[:units].t(), self.fc2_b)

    def block(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """timm's pre-norm block at ``level`` (``x``: the inputs of that level, a sub-batch)."""
        x = residual(x, self.attention(self.norm1(x), self.head_sizes[level]), self.ls1)
        return residual(x, self.mlp(self.norm2(x), self.unit_sizes[level]), self.ls2)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        """Choose each input's level on ``x`` ``(B, N, C)``, then run every level's inputs together.

        Raises:
            NotImplementedError: an ``attn_mask`` or ``is_causal`` (not supported by compact blocks).
        """
        refuse_attention_masks(attn_mask, is_causal)
        return run_by_level(self.block, x, self.gate(x), levels=self.levels)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, heads={self.head_sizes}, hidden={self.unit_sizes}"


def _prefix(bias: torch.Tensor | None, size: int) -> torch.Tensor | None:
    return None if bias is None else bias[:size]


def compact_vit_width_block(block: nn.Module, gate: BlockGate, strategy: str) -> nn.Module | None:
    """The compact version of a width-gated timm ViT ``Block``; None for a channel gate or any other
    module (``strategy`` does not apply to width gates)."""
    if isinstance(gate, WidthGate) and isinstance(block, vt.Block):
        return CompactVitWidthBlock(block, gate)
    return None
