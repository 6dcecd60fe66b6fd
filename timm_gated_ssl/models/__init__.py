"""Models registered in timm on ``import timm_gated_ssl``."""

from .cifar_stem import apply_cifar_stem
from .resnet import GatedResNet

__all__ = ["GatedResNet", "apply_cifar_stem"]
