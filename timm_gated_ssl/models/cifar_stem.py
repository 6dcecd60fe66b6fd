"""The CIFAR stem: a 3x3 stride-1 conv and no max-pool, for 32 px images.

With ``padding=1`` (the usual choice) a 32 px image keeps 32x32 maps; the paper's authors used
``padding=2`` (34x34 maps, 7.03E8 dense MACs for ResNet-18), offered for faithful comparisons.
"""

from __future__ import annotations

from timm.models.resnet import ResNet
from torch import nn

CIFAR_STEM_PADDINGS = (1, 2)


def apply_cifar_stem(model: ResNet, *, padding: int = 1) -> ResNet:
    """Replace a timm ResNet's stem conv by a 3x3 stride-1 conv and drop the max-pool, in place.

    Args:
        model: A freshly built timm ``ResNet`` with the default (7x7, stride 2) stem.
        padding: Padding of the 3x3 conv: 1 (size-preserving) or 2 (the paper's code).

    Returns:
        ``model``, with ``feature_info`` reductions updated (the stem no longer downsamples).

    Raises:
        ValueError: ``padding`` is not 1 or 2.
        TypeError: the model has a deep (multi-conv) stem.
    """
    if padding not in CIFAR_STEM_PADDINGS:
        raise ValueError(f"cifar_stem_padding must be one of {CIFAR_STEM_PADDINGS}, got {padding!r}")
    if not isinstance(model.conv1, nn.Conv2d):
        raise TypeError(
            f"the CIFAR stem replaces a single-conv stem, got a {type(model.conv1).__name__} stem "
            "(deep stems such as resnet18d are not supported)"
        )
    old = model.conv1
    model.conv1 = nn.Conv2d(
        old.in_channels, old.out_channels, kernel_size=3, stride=1, padding=padding, bias=False
    )
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    for info in model.feature_info:
        info["reduction"] = max(info["reduction"] // 4, 1)
    return model
