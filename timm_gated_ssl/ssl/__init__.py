"""Self-supervised losses and heads: VICReg, SimSiam, SimCLR (NT-Xent) and BYOL.

Losses are agnostic of gating: in the dual recipe of Krishna et al. (BMVC 2023, arXiv:2301.09164)
the gated pass's embeddings are fed as the first input and the dense pass's as the second.
"""

from timm_gated_ssl.ssl.byol import (
    BYOLLoss,
    BYOLPredictor,
    MomentumEncoder,
    cosine_momentum_schedule,
    update_momentum,
)
from timm_gated_ssl.ssl.distill import DISTILL_TARGETS, FeatureDistillLoss
from timm_gated_ssl.ssl.distributed import gather_with_grad
from timm_gated_ssl.ssl.heads import Predictor, Projector
from timm_gated_ssl.ssl.objective import (
    SSL_LOSSES,
    SSLLossOutput,
    SSLObjective,
    build_ssl_objective,
)
from timm_gated_ssl.ssl.simclr import NTXentLoss
from timm_gated_ssl.ssl.simsiam import SimSiamLoss, SimSiamPredictor
from timm_gated_ssl.ssl.vicreg import VICRegLoss, VICRegOutput

__all__ = [
    "DISTILL_TARGETS",
    "SSL_LOSSES",
    "BYOLLoss",
    "BYOLPredictor",
    "FeatureDistillLoss",
    "MomentumEncoder",
    "NTXentLoss",
    "Predictor",
    "Projector",
    "SSLLossOutput",
    "SSLObjective",
    "SimSiamLoss",
    "SimSiamPredictor",
    "VICRegLoss",
    "VICRegOutput",
    "build_ssl_objective",
    "cosine_momentum_schedule",
    "gather_with_grad",
    "update_momentum",
]
