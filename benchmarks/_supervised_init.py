"""A supervised dense encoder for benchmarks/posthoc.py: cross-entropy on Fashion-MNIST's labels, the
size of the SSL init (ResNet-18 CIFAR stem, 28 px, the first 10,240 training images, 3 epochs of 40
steps of 256), to show that post-hoc gating works from any dense encoder, not only an SSL one.

A plain loop on purpose (the library's recipes train SSL or heads on a pretrained encoder, not a
classifier from scratch): SGD with momentum 0.9 and Nesterov, weight decay 5e-4, lr 0.1 per 256, one warm-up epoch then
cosine to 0 (timm's scheduler, as the recipes use it), random 28 px crops of the 2-pixel-padded
image and horizontal flips on tensors, bf16 autocast and channels_last on CPU. The classifier is
dropped before export: the folder is a dense encoder (``num_classes=0``) as ``init_vanilla`` is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F

from timm_gated_ssl.data.datasets import DATASET_PRESETS
from timm_gated_ssl.data.fashion_mnist import FASHION_MNIST_DIR, _find, read_idx
from timm_gated_ssl.data.views import eval_data_config
from timm_gated_ssl.recipe.optim import build_scheduler
from timm_gated_ssl.recipe.outputs import export_model

IMAGES, EPOCHS, BATCH, LR, WARMUP_EPOCHS = 10240, 3, 256, 0.1, 1


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 28 px crops of the 2-pixel zero-padded batch and horizontal flips, per image."""
    n, size = images.shape[0], images.shape[-1]
    padded = F.pad(images, (2, 2, 2, 2))
    dx, dy = (torch.randint(0, 5, (n,), generator=generator) for _ in range(2))
    rows = (dy[:, None] + torch.arange(size))[:, :, None].expand(n, size, size)
    cols = (dx[:, None] + torch.arange(size))[:, None, :].expand(n, size, size)
    out = padded[torch.arange(n)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def train_supervised_init(output_dir: Path, *, seed: int = 0) -> None:
    """Train the classifier and export its encoder to ``output_dir`` (timm's format)."""
    preset = DATASET_PRESETS["fashion_mnist"]
    torch.manual_seed(seed)
    pixels = read_idx(_find(FASHION_MNIST_DIR, "train-images-idx3-ubyte"))[:IMAGES]
    labels = torch.from_numpy(read_idx(_find(FASHION_MNIST_DIR, "train-labels-idx1-ubyte"))[:IMAGES].astype(np.int64))
    mean, std = torch.tensor(preset.mean).view(1, 3, 1, 1), torch.tensor(preset.std).view(1, 3, 1, 1)
    images = (torch.from_numpy(pixels.copy()).float().div(255).unsqueeze(1).expand(-1, 3, -1, -1) - mean) / std
    model = timm.create_model("resnet18_cifar", num_classes=preset.num_classes).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR * BATCH / 256, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    steps_per_epoch = IMAGES // BATCH
    scheduler = build_scheduler(optimizer, total_updates=EPOCHS * steps_per_epoch,
                                warmup_updates=WARMUP_EPOCHS * steps_per_epoch, min_lr=0.0)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    step = 0
    for _ in range(EPOCHS):
        order = torch.randperm(IMAGES, generator=generator)
        for start in range(0, steps_per_epoch * BATCH, BATCH):
            idx = order[start:start + BATCH]
            x = augment(images[idx], generator).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(step)
            if step % 20 == 0:
                print(f"supervised init: step {step}, loss {loss.item():.3f}", flush=True)
    model.reset_classifier(0)
    output_dir.mkdir(parents=True, exist_ok=True)
    export_model(model.eval().float(), output_dir, model_args={"num_classes": 0},
                 data_config=eval_data_config(image_size=28, mean=preset.mean, std=preset.std))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    cli = parser.parse_args()
    train_supervised_init(cli.output_dir, seed=cli.seed)
