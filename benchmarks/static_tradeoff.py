"""Static export of a trained gated encoder: MACs and accuracy against ``min_firing_rate``.

``export_static`` removes the channels that fire on fewer than ``min_firing_rate`` of the
calibration images (0: only those that never fire). With trained, input-dependent gates few
channels never fire, so the threshold is the knob that trades accuracy for a smaller plain model.
For each threshold this prints the static model's MAC fraction (of the dense network) and its
accuracy next to the gated source's: a headless encoder is scored by a two-fold weighted 20-NN
on the labelled evaluation images (``compact.static_common.accuracy``).

Usage:
    python benchmarks/static_tradeoff.py --checkpoint runs/td0.3 --dataset fashion_mnist
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import eval_images
from _timing import write_json

import timm_gated_ssl  # noqa: F401  (registers the gated models)
from timm_gated_ssl.compact import export_static


def _batches(dataset: str, split: str, count: int, size: int | None, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    images, labels = eval_images(dataset, split=split, count=count, size=size, seed=0)
    return [(images[i : i + batch], labels[i : i + batch]) for i in range(0, len(images), batch)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a saved gated encoder folder")
    parser.add_argument("--dataset", required=True, help="a dataset preset, e.g. fashion_mnist")
    parser.add_argument("--image_size", type=int, default=None)
    parser.add_argument("--calibration", type=int, default=1024, help="training images to measure firing rates on")
    parser.add_argument("--eval", type=int, default=2000, help="test images for the k-NN accuracy")
    parser.add_argument("--rates", type=float, nargs="*", default=[0.0, 0.01, 0.02, 0.05, 0.1, 0.2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="benchmarks/out/static_tradeoff.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = timm.create_model(f"local-dir:{args.checkpoint}", pretrained=True).eval()
    calib = [x for x, _ in _batches(args.dataset, "train", args.calibration, args.image_size, 256)]
    evals = _batches(args.dataset, "test", args.eval, args.image_size, 256)
    rows = []
    print(f"{'min_firing_rate':>15s} {'MACs':>6s} {'acc gated':>9s} {'acc static':>10s} {'change':>7s}")
    for rate in args.rates:
        result = export_static(model, calib, min_firing_rate=rate, eval_loader=evals)
        rows.append({"min_firing_rate": rate, **result.summary()})
        print(f"{rate:15.3f} {result.mac_fraction:6.3f} {result.accuracy_gated:9.2f} "
              f"{result.accuracy_static:10.2f} {result.accuracy_change:+7.2f}", flush=True)
    write_json(args.output, {"checkpoint": args.checkpoint, "dataset": args.dataset,
                             "calibration_images": args.calibration, "eval_images": args.eval,
                             "gated_mac_fraction": rows[0]["gated_macs"] / rows[0]["dense_macs"],
                             "torch": torch.__version__, "timm": timm.__version__,
                             "platform": platform.platform(), "rows": rows})


if __name__ == "__main__":
    main()
