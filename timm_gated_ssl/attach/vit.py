"""Gates for timm's Vision Transformers (``timm.models.vision_transformer.Block``).

Covers every timm model built from the pre-norm ``Block`` with timm's standard ``Attention``:
vit_tiny/small/base/large*, deit_* (also distilled), any ``img_size`` / ``patch_size``, with or
without class token, ``reg_tokens``, ``global_pool`` avg/token/map, ``qk_norm``, layer scale, and the
``Mlp``, ``GluMlp`` and ``SwiGLU`` feed-forwards.

Where the masks go (one gate per block, two gated widths, one gate network emits both):

* **Attention heads** (width ``num_heads``): the mask multiplies the *input* of ``attn.proj``, each
  value repeated over the head's ``head_dim`` channels (timm lays the attention output out
  head-major, ``(B, N, H * head_dim)``). An off head's output never reaches ``proj``, so the head's
  q/k/v rows of ``qkv``, its two attention products (``q @ k^T`` and ``attn @ v``) and its
  ``head_dim`` columns of ``proj`` need not run. Masking after the attention leaves
  ``F.scaled_dot_product_attention`` (the fused path) untouched.
* **MLP hidden units** (width ``hidden``): the mask multiplies the input of ``mlp.fc2``. With timm's
  feed-forwards the hidden activation is elementwise up to there (act, dropout, Identity norm), so
  this equals masking the activation output; an off unit saves its ``fc1`` row(s) and ``fc2`` column.

Width gates (``gate_type="width"``, ``gates/width.py``) use the same two widths and mask points:
per input, one level per block keeps a prefix of the heads and a prefix of the hidden units
(``compact/vit_width.py`` runs them on weight prefixes).

The gate reads the block input (the residual stream, ``(B, N, C)``) averaged over all tokens (class
and register tokens included). The residual stream, the patch embedding and the head are never
gated. With separate norms, ``norm1``, ``norm2`` and, with ``qk_norm``, ``attn.q_norm`` /
``attn.k_norm`` exist once per mode; the final ``model.norm`` is shared (like a ResNet's stem).

Not supported (a TypeError says so): the other block types of ``vision_transformer``
(``ResPostBlock``, ``ParallelScalingBlock``, ...), attention with ``scale_norm`` and MLPs with a
hidden-layer norm (a norm over all heads / units mixes them, so an off head or unit would still
have to run), and conv MLPs.
"""

from __future__ import annotations

from timm.layers import GluMlp, Mlp, SwiGLU
from timm.models import vision_transformer as vt
from torch import nn

from ..errors import UnsupportedModelError
from ..gates import MaskPoint
from .spec import BlockSpec

SUPPORTED = (
    "timm.models.vision_transformer.Block with timm Attention (no scale_norm) and an Mlp, GluMlp or "
    "SwiGLU feed-forward without a hidden norm"
)
_UNSUPPORTED_BLOCKS = tuple(
    getattr(vt, name)
    for name in ("ResPostBlock", "ParallelScalingBlock", "DiffParallelScalingBlock", "ParallelThingsBlock")
    if hasattr(vt, name)
)
_MLPS = (Mlp, GluMlp, SwiGLU)


def _unsupported(block: nn.Module, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"cannot gate {type(block).__module__}.{type(block).__name__}: {why}. Supported ViT blocks: "
        f"{SUPPORTED}"
    )


def _is_norm(module: nn.Module) -> bool:
    return not isinstance(module, nn.Identity)


def vit_block_spec(block: nn.Module) -> BlockSpec | None:
    """The gating layout of a timm ViT ``Block``; None for any other module.

    Raises:
        UnsupportedModelError: ``block`` is a ViT block variant this family cannot gate.
    """
    if isinstance(block, _UNSUPPORTED_BLOCKS):
        raise _unsupported(block, "this block variant is not supported")
    if not isinstance(block, vt.Block):
        return None
    attn, mlp = block.attn, block.mlp
    if type(attn) is not vt.Attention:
        raise _unsupported(block, f"attention {type(attn).__name__} is not timm's Attention")
    if _is_norm(attn.norm):
        raise _unsupported(block, "attention with scale_norm normalises over all heads")
    if not isinstance(mlp, _MLPS) or isinstance(mlp.fc2, nn.Conv2d):
        raise _unsupported(block, f"feed-forward {type(mlp).__name__} is not a linear Mlp/GluMlp/SwiGLU")
    if _is_norm(mlp.norm):
        raise _unsupported(block, "an MLP hidden norm normalises over all hidden units")
    norm_paths = ["norm1", "norm2"]
    norm_paths += [f"attn.{n}" for n in ("q_norm", "k_norm") if _is_norm(getattr(attn, n))]
    return BlockSpec(
        in_channels=attn.qkv.in_features,
        widths=(attn.num_heads, mlp.fc2.in_features),
        mask_points=(
            MaskPoint("attn.proj", on="input", repeat=attn.head_dim),
            MaskPoint("mlp.fc2", on="input"),
        ),
        norm_paths=tuple(norm_paths),
        pooling="tokens",
        units=("attention heads", "MLP hidden units"),
    )
