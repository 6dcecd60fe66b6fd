"""Projection and prediction heads for joint-embedding self-supervised learning.

The projector maps backbone features to the space the SSL loss acts on; it is shared by the dense
and
the gated forward mode (Krishna et al., "Unifying Synergies between Self-supervised Learning and
Dynamic Computation", BMVC 2023, arXiv:2301.09164). The predictor is the extra asymmetric head of
SimSiam (Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021, arXiv:2011.10566)
and BYOL (Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, arXiv:2006.07733).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["Predictor", "Projector"]


def _check_dim(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class Projector(nn.Sequential):
    """MLP projector: ``num_layers - 1`` blocks of Linear-BN-ReLU followed by a final Linear.

    With the defaults this is the VICReg projector used by the paper, ``Linear(in, 2048) BN ReLU
    Linear(2048, 2048) BN ReLU Linear(2048, 2048)`` (Bardes et al., "VICReg", ICLR 2022,
    arXiv:2105.04906). SimSiam additionally normalises the output (``last_bn=True``).

    Args:
        in_dim: Feature dimension of the backbone output.
        hidden_dim: Width of the hidden layers.
        out_dim: Embedding dimension D the loss sees.
        num_layers: Number of Linear layers, at least 1 (1 gives a single linear map).
        last_bn: Append an affine-free BatchNorm1d after the last Linear (SimSiam).

    Example:
        >>> proj = Projector(512, 2048, 2048)
        >>> proj(torch.randn(8, 512)).shape
        torch.Size([8, 2048])
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        out_dim: int = 2048,
        *,
        num_layers: int = 3,
        last_bn: bool = False,
    ) -> None:
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            _check_dim(name, value)
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be an int >= 1, got {num_layers!r}")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers += [
                nn.Linear(dim, hidden_dim),
                nn.BatchNorm1d(hidden_dim),
                nn.ReLU(inplace=True),
            ]
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim))
        if last_bn:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        super().__init__(*layers)
        self.in_dim = in_dim
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x)


class Predictor(nn.Sequential):
    """Two-layer predictor ``Linear(in, hidden) BN ReLU Linear(hidden, out)`` of SimSiam and BYOL.

    SimSiam uses a 512-wide bottleneck (arXiv:2011.10566, Sec. 3); BYOL a 4096-wide hidden layer
    (arXiv:2006.07733, Sec. 3.3).

    Args:
        in_dim: Dimension of the projections fed in.
        hidden_dim: Width of the hidden layer.
        out_dim: Output dimension; defaults to ``in_dim``.

    Example:
        >>> pred = Predictor(2048, 512)
        >>> pred(torch.randn(8, 2048)).shape
        torch.Size([8, 2048])
    """

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int | None = None) -> None:
        out_dim = in_dim if out_dim is None else out_dim
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            _check_dim(name, value)
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )
        self.in_dim = in_dim
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x)
