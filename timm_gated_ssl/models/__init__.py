"""Models registered in timm on ``import timm_gated_ssl``: gated ResNets and ViTs, CIFAR-stem baselines."""

from . import vit  # noqa: F401  (registers gated_vit_*)
from .cifar_stem import apply_cifar_stem
from .resnet import GatedResNet

__all__ = ["GatedResNet", "apply_cifar_stem"]
