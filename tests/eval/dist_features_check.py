"""Two-process check of extract_features' gathering, run as a script in a fresh interpreter.

``accelerate.debug_launcher`` forks; forking a process whose OpenMP pool already ran (as a pytest
process has) can deadlock, so test_features.py launches this file with ``subprocess`` instead.

Usage: ``python dist_features_check.py RESULT.json``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator, debug_launcher
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from timm_gated_ssl.eval.features import extract_features


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x)).relu().mean(dim=(2, 3))


def worker(result_file: str) -> None:
    """10 samples, batch 4, 2 processes: accelerate pads the last batches with duplicates."""
    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = TinyNet().eval()
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(10, 3, 8, 8, generator=g), torch.arange(10) % 3
    loader = accelerator.prepare(DataLoader(TensorDataset(images, labels), batch_size=4))
    out = extract_features(model, loader, accelerator=accelerator, progress=False)
    if accelerator.is_main_process:
        with torch.no_grad():
            expected = model(images)
        order, ref_order = torch.argsort(out.features[:, 0]), torch.argsort(expected[:, 0])
        Path(result_file).write_text(
            json.dumps(
                {
                    "num_processes": accelerator.num_processes,
                    "n": len(out),
                    "close": bool(
                        torch.allclose(out.features[order], expected[ref_order], atol=1e-5)
                    ),
                    "labels": sorted(out.labels.tolist()),
                }
            )
        )
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    debug_launcher(worker, args=(sys.argv[1],), num_processes=2)
