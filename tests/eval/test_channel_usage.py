"""Channel usage counts on hand-made masks."""

from __future__ import annotations

import pytest
import torch

from timm_gated_ssl.eval.channel_usage import ChannelUsage, channel_usage_from_masks


def test_hand_made_masks() -> None:
    masks = {
        # channel:  0 off, 1 on, 2 dynamic, 3 dynamic, 4 off
        "layer1.0": torch.tensor([[0, 1, 1, 0, 0], [0, 1, 0, 1, 0], [0, 1, 1, 1, 0]]),
        "layer1.1": torch.tensor([[True, True], [True, True]]),
        "layer2.0": torch.tensor([[0.0, 1.0, 0.0]]),  # one sample: nothing can be dynamic
    }
    usage = channel_usage_from_masks(masks)
    assert usage == [
        ChannelUsage("layer1.0", always_off=2, always_on=1, dynamic=2),
        ChannelUsage("layer1.1", always_off=0, always_on=2, dynamic=0),
        ChannelUsage("layer2.0", always_off=2, always_on=1, dynamic=0),
    ]
    assert usage[0].channels == 5
    assert usage[0].fractions() == pytest.approx((0.4, 0.2, 0.4))


def test_bad_masks() -> None:
    with pytest.raises(ValueError, match="'b'.*2-D.*got shape \\(3,\\)"):
        channel_usage_from_masks({"b": torch.ones(3)})
    with pytest.raises(ValueError, match="no samples"):
        channel_usage_from_masks({"b": torch.ones(0, 3)})
    with pytest.raises(ValueError, match="only 0 and 1"):
        channel_usage_from_masks({"b": torch.tensor([[0.5, 1.0]])})
    with pytest.raises(ValueError, match="always_off of block 'b' must be an int >= 0, got -1"):
        ChannelUsage("b", always_off=-1, always_on=0, dynamic=0)
