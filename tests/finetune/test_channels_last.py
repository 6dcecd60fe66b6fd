"""``--channels_last`` changes the memory layout of the fine-tune, not what it computes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.finetune.conftest import run_finetune


def test_a_channels_last_full_finetune_trains_the_same_weights(finetune: Any, tiny_checkpoint: Path,
                                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bool, bool]] = []  # per step: (batch, stem weight) in channels_last
    step = finetune.step

    def recording_step(model: Any, backbone: Any, specs: Any, images: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        nhwc = torch.channels_last
        seen.append((images.is_contiguous(memory_format=nhwc), backbone.conv1.weight.is_contiguous(memory_format=nhwc)))
        return step(model, backbone, specs, images, *args, **kwargs)

    monkeypatch.setattr(finetune, "step", recording_step)
    runs, layouts = {}, {}
    for name, extra in (("nchw", []), ("nhwc", ["--channels_last"])):
        seen.clear()
        metrics = run_finetune(finetune, tiny_checkpoint, tmp_path / name, "--mode", "full", "--budget", "0.5",
                               "--lr", "0.05", *extra)
        runs[name] = (metrics, load_file(str(tmp_path / name / "model.safetensors")))
        layouts[name] = set(seen)
    assert layouts == {"nchw": {(False, False)}, "nhwc": {(True, True)}}
    (plain, plain_weights), (nhwc, nhwc_weights) = runs["nchw"], runs["nhwc"]
    assert nhwc["steps"] == plain["steps"] == 2
    assert plain_weights.keys() == nhwc_weights.keys()
    for key, value in plain_weights.items():  # two SGD steps through other conv kernels: rounding only
        torch.testing.assert_close(nhwc_weights[key], value, rtol=1e-3, atol=1e-4, msg=key)
