"""Registry of SSL methods and the objective module that bundles heads and loss.

An :class:`SSLObjective` takes the backbone features of two views (in the dual recipe of Krishna et
al., BMVC 2023, arXiv:2301.09164: the gated pass on view 1 and the dense pass on view 2), runs the
shared projector (and predictor, for SimSiam/BYOL) and returns the loss. It knows nothing about
gating; any two batches of features work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from timm_gated_ssl.ssl.byol import BYOLLoss
from timm_gated_ssl.ssl.heads import Predictor, Projector
from timm_gated_ssl.ssl.simclr import NTXentLoss
from timm_gated_ssl.ssl.simsiam import SimSiamLoss
from timm_gated_ssl.ssl.vicreg import VICRegLoss, VICRegOutput

__all__ = ["SSL_LOSSES", "SSLLossOutput", "SSLObjective", "build_ssl_objective"]

SSL_LOSSES: dict[str, type[nn.Module]] = {
    "vicreg": VICRegLoss,  # Bardes et al., ICLR 2022
    "simsiam": SimSiamLoss,  # Chen & He, CVPR 2021
    "simclr": NTXentLoss,  # Chen et al., ICML 2020
    "byol": BYOLLoss,  # Grill et al., NeurIPS 2020
}
"""Method name -> loss class."""


@dataclass(frozen=True)
class _HeadDefaults:
    hidden_dim: int
    out_dim: int
    num_layers: int
    last_bn: bool = False
    predictor_hidden_dim: int | None = None  # None: the method has no predictor


# Head sizes from each paper: VICReg 3 x 2048 (also the dual recipe); SimCLR 2-layer MLP to 128;
# SimSiam 3 x 2048 with output BN and a 512 bottleneck predictor; BYOL 4096 -> 256, predictor 4096.
_HEAD_DEFAULTS: dict[str, _HeadDefaults] = {
    "vicreg": _HeadDefaults(2048, 2048, 3),
    "simclr": _HeadDefaults(2048, 128, 2),
    "simsiam": _HeadDefaults(2048, 2048, 3, last_bn=True, predictor_hidden_dim=512),
    "byol": _HeadDefaults(4096, 256, 2, predictor_hidden_dim=4096),
}


@dataclass
class SSLLossOutput:
    """Total loss and named, detached terms for logging."""

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


class SSLObjective(nn.Module):
    """Projector (+ optional predictor) + loss of one SSL method.

    Args:
        method: One of :data:`SSL_LOSSES`' keys.
        projector: Head shared by both views.
        loss: The loss module.
        predictor: Prediction head (SimSiam, BYOL) or ``None``.

    Example:
        >>> objective = build_ssl_objective("vicreg", in_dim=512)
        >>> out = objective(feats_gated, feats_dense)  # doctest: +SKIP
        >>> out.loss.backward()  # doctest: +SKIP
    """

    def __init__(
        self, method: str, projector: nn.Module, loss: nn.Module, predictor: nn.Module | None = None
    ) -> None:
        super().__init__()
        _check_method(method)
        self.method = method
        self.projector = projector
        self.predictor = predictor
        self.loss = loss

    def forward(
        self,
        h_a: Tensor,
        h_b: Tensor,
        *,
        target_a: Tensor | None = None,
        target_b: Tensor | None = None,
    ) -> SSLLossOutput:
        """Project both feature batches and compute the loss.

        Args:
            h_a: Backbone features of view a (gated pass in the dual recipe), ``(N, in_dim)``.
            h_b: Backbone features of view b (dense pass), ``(N, in_dim)``.
            target_a: Optional precomputed target projection of view a (e.g. from a BYOL momentum
                encoder); replaces ``projector(h_a)`` as target. Predictor methods only.
            target_b: Same for view b.

        Returns:
            :class:`SSLLossOutput`.
        """
        z_a, z_b = self.projector(h_a), self.projector(h_b)
        if self.predictor is None:
            if target_a is not None or target_b is not None:
                raise ValueError(f"method {self.method!r} has no predictor; targets are not used")
            out = self.loss(z_a, z_b)
            if isinstance(out, VICRegOutput):
                terms = {k: v.detach() for k, v in out._asdict().items() if k != "loss"}
                return SSLLossOutput(out.loss, terms)
            return SSLLossOutput(out)
        p_a, p_b = self.predictor(z_a), self.predictor(z_b)
        t_a = z_a if target_a is None else target_a
        t_b = z_b if target_b is None else target_b
        return SSLLossOutput(self.loss(p_a, t_b, p_b=p_b, z_a=t_a))


def _check_method(name: str) -> None:
    if name not in SSL_LOSSES:
        raise ValueError(f"unknown SSL method {name!r}; valid names: {sorted(SSL_LOSSES)}")


def build_ssl_objective(
    name: str,
    *,
    in_dim: int,
    hidden_dim: int | None = None,
    out_dim: int | None = None,
    num_layers: int | None = None,
    predictor_hidden_dim: int | None = None,
    **loss_kwargs: Any,
) -> SSLObjective:
    """Build heads and loss for an SSL method with its paper's head sizes.

    Args:
        name: ``"vicreg"``, ``"simsiam"``, ``"simclr"`` or ``"byol"``.
        in_dim: Backbone feature dimension (512 for ResNet-18).
        hidden_dim: Projector hidden width; ``None`` for the method default.
        out_dim: Embedding dimension; ``None`` for the method default.
        num_layers: Projector depth; ``None`` for the method default.
        predictor_hidden_dim: Predictor width (SimSiam/BYOL only); ``None`` for the default.
        **loss_kwargs: Keyword options of the loss class (e.g. ``temperature=0.2`` for SimCLR,
            ``invariance_weight=25.0`` for VICReg).

    Returns:
        An :class:`SSLObjective`.

    Raises:
        ValueError: Unknown method name (the message lists valid ones), or a predictor size for a
            method without predictor.
    """
    _check_method(name)
    spec = _HEAD_DEFAULTS[name]
    projector = Projector(
        in_dim,
        spec.hidden_dim if hidden_dim is None else hidden_dim,
        spec.out_dim if out_dim is None else out_dim,
        num_layers=spec.num_layers if num_layers is None else num_layers,
        last_bn=spec.last_bn,
    )
    predictor: nn.Module | None = None
    if spec.predictor_hidden_dim is not None:
        width = spec.predictor_hidden_dim if predictor_hidden_dim is None else predictor_hidden_dim
        predictor = Predictor(projector.out_dim, width)
    elif predictor_hidden_dim is not None:
        raise ValueError(
            f"method {name!r} has no predictor; got predictor_hidden_dim={predictor_hidden_dim}"
        )
    return SSLObjective(name, projector, SSL_LOSSES[name](**loss_kwargs), predictor)
