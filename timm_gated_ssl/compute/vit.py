"""Gated compute of timm Vision Transformer blocks, for :func:`~timm_gated_ssl.compute.count_macs`.

Matches where ``attach/vit.py`` puts the masks (width 0: attention heads, width 1: MLP hidden units):

* an off head saves its q/k/v rows of ``attn.qkv`` (``3 * head_dim`` outputs), its two attention
  products ``q @ k^T`` and ``attn @ v`` (``2 * N^2 * head_dim`` MACs for ``N`` tokens), its
  ``head_dim`` input columns of ``attn.proj`` and, when timm's gated attention is on, its rows of
  ``attn.gate``;
* an off hidden unit saves its row(s) of ``mlp.fc1`` (two for ``GluMlp``: value and gate halves;
  one each of ``fc1_g`` and ``fc1_x`` for ``SwiGLU``) and its input column of ``mlp.fc2``.

Convention. The core counts convs, and linears only with ``include_linear=True`` (the paper's
rule for ResNets). A ViT's compute *is* its block linears, so this family always counts them: with
``include_linear=False`` the block linears and attention products are added to the dense total
here (``in_dense=False``) and the count is "patch embedding + every matrix product of the blocks +
gates", leaving out only the classifier head (and ``global_pool="map"`` attention pooling), as the
paper leaves out its FC layer; ``include_linear=True`` adds those too. The attention products never
show in the layer hooks (they run inside ``F.scaled_dot_product_attention``), so they are always
added here. Norms, softmax, activations, position embeddings and layer scale are not counted.

For a block with ``h`` of ``H`` heads and ``u`` of ``U`` hidden units on (embed dim ``C``, head dim
``d``): ``N*C*3*d*h + 2*N*N*d*h + N*d*h*C + k*N*C*u + N*u*C`` MACs, ``k = 2`` for GluMlp/SwiGLU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from timm.layers import SwiGLU
from timm.models import vision_transformer as vt
from torch import nn

from ..attach.vit import vit_block_spec
from ..gates import BlockGate
from .core import UNGATED_COSTS, CostTerm, LayerStats, register_block_cost

HEADS, HIDDEN = 0, 1  # indices into the gate's widths


def _linear_term(
    stats: LayerStats, block: nn.Module, path: str, in_width: int | None, out_width: int | None
) -> CostTerm | None:
    """The cost term of the linear layer at ``path``; None if it did not run."""
    layer = block.get_submodule(path)
    shape = stats.out_shapes.get(layer)
    if shape is None:
        return None
    counted = stats.macs.get(layer)
    macs = counted if counted is not None else math.prod(shape) // layer.out_features * (
        layer.in_features * layer.out_features
    )
    return CostTerm(
        path, macs, layer.in_features, layer.out_features, in_width=in_width, out_width=out_width,
        in_dense=counted is not None,
    )


@register_block_cost("vit")
def vit_block_cost(block: nn.Module, gate: BlockGate, stats: LayerStats) -> Sequence[CostTerm] | None:
    """Cost terms of a gated timm ViT ``Block``; None for any other module."""
    if not isinstance(block, vt.Block):
        return None
    vit_block_spec(block)  # raises for block variants attach/vit.py does not gate
    return _block_terms(block, stats)


def ungated_vit_block_macs(block: nn.Module, stats: LayerStats) -> int:
    """What an ungated timm ViT ``Block`` adds to the dense total beyond the hooked layers: its
    linears under ``include_linear=False`` and always its attention products (0 for other modules).
    Without it a plain ViT would count its patch embedding alone. Blocks whose attention is not
    timm's ``Attention`` or whose MLP has no ``fc2`` (variants ``attach/vit.py`` cannot gate
    either) add 0: their hooked linears count only with ``include_linear=True``."""
    if not isinstance(block, vt.Block) or not isinstance(block.attn, vt.Attention) or not hasattr(block.mlp, "fc2"):
        return 0
    return sum(t.macs for t in _block_terms(block, stats) if not t.in_dense)


UNGATED_COSTS.append(ungated_vit_block_macs)


def _block_terms(block: vt.Block, stats: LayerStats) -> list[CostTerm]:
    """The cost terms of a ViT block's linears and attention products (those that ran)."""
    attn, mlp = block.attn, block.mlp
    paths: list[tuple[str, int | None, int | None]] = [("attn.qkv", None, HEADS)]
    if getattr(attn, "gate", None) is not None:
        paths.append(("attn.gate", None, HEADS))
    paths.append(("attn.proj", HEADS, None))
    if isinstance(mlp, SwiGLU):
        paths += [("mlp.fc1_g", None, HIDDEN), ("mlp.fc1_x", None, HIDDEN)]
    else:  # Mlp, GluMlp (fc1 holds both halves: each unit owns two rows)
        paths.append(("mlp.fc1", None, HIDDEN))
    paths.append(("mlp.fc2", HIDDEN, None))
    terms = [_linear_term(stats, block, *p) for p in paths]
    qkv_shape = stats.out_shapes.get(attn.qkv)
    if qkv_shape is not None:  # q @ k^T and attn @ v: 2 * N^2 * head_dim per head
        tokens = math.prod(qkv_shape[:-1])
        terms.append(CostTerm(
            "attn.matmuls", 2 * tokens * tokens * attn.attn_dim, attn.attn_dim, 1,
            in_width=HEADS, in_dense=False,
        ))
    return [t for t in terms if t is not None]
