#!/usr/bin/env python
"""Export a checkpoint to ONNX: the dense model, the gated mode, or the static export.

    python recipes/export_onnx.py --checkpoint runs/quickstart_full --output model.onnx --mode gated --check
    python recipes/export_onnx.py --checkpoint runs/quickstart_full --output static.onnx \
        --static --dataset digits --budget 0.3 --check

``--mode dense`` (default) exports the dense network; ``--mode gated`` the gated mode with its
data-dependent masks (outputs equal PyTorch's gated mode, but onnxruntime computes every channel:
no speed-up); ``--static`` first removes the channels the gates never use on ``--dataset`` images
(``export_static``), which is the export that runs faster. ``--check`` compares onnxruntime with
PyTorch at batch 1 and 4. A thin wrapper of ``timm_gated_ssl.export_onnx`` (docs/speed.md); needs
``pip install "timm_gated_ssl[onnx]"``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader

from timm_gated_ssl import export_onnx, export_static, gate_mode, has_gates, set_budget
from timm_gated_ssl.data import EvalDataset, build_eval_transform, load_image_dataset
from timm_gated_ssl.errors import GatingError
from timm_gated_ssl.eval.loading import load_run
from timm_gated_ssl.export import onnx_max_abs_diff


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a timm checkpoint folder or 'hf-hub:ORG/NAME'")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--mode", default="dense", choices=["dense", "gated"], help="gate mode to export")
    parser.add_argument("--budget", type=float, default=None, help="a calibrated budget to run the gates at")
    parser.add_argument("--static", action="store_true", help="export_static first (needs --dataset)")
    parser.add_argument("--dataset", default=None, help="images for --static: a preset, folder or Hub id")
    parser.add_argument("--split", default="train", help="split of --dataset")
    parser.add_argument("--static_images", type=int, default=512, help="images export_static looks at")
    parser.add_argument("--image_size", type=int, default=None, help="default: the checkpoint's")
    parser.add_argument("--fixed_batch", action="store_true", help="batch 1 only (default: a dynamic batch)")
    parser.add_argument("--check", action="store_true", help="compare onnxruntime with PyTorch")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run = load_run(args.checkpoint)
        model = run.model
        size = args.image_size or run.pretrain_config.get("image_size") or model.pretrained_cfg["input_size"][-1]
        gated = has_gates(model)
        if not gated and (args.mode == "gated" or args.static or args.budget is not None):
            raise ValueError(f"{args.checkpoint} has no gates: --mode gated, --static and --budget need a "
                             "gated checkpoint")
        if args.budget is not None:
            set_budget(model, args.budget)
        if args.static:
            if args.dataset is None:
                raise ValueError("--static needs --dataset (the images that decide which channels stay)")
            info = load_image_dataset(args.dataset, split=args.split, image_size=size)
            rows = info.dataset.select(range(min(args.static_images, len(info))))
            images = EvalDataset(rows, build_eval_transform(image_size=size, mean=info.mean, std=info.std),
                                 image_column=info.image_column, label_column=None)
            model = export_static(model, DataLoader(images, batch_size=64)).model.eval()
            gated = False
        with gate_mode(model, args.mode) if gated else contextlib.nullcontext():
            export = export_onnx(model, args.output, input_size=(3, size, size), dynamic_batch=not args.fixed_batch)
            print(f"wrote {export.path} (input {export.input_size}, "
                  f"{'dynamic' if export.dynamic_batch else 'fixed'} batch, mode {export.gate_mode or 'plain'})")
            if args.check:
                for batch in (1,) if args.fixed_batch else (1, 4):
                    diff = onnx_max_abs_diff(model, export.path, torch.randn(batch, 3, size, size))
                    print(f"batch {batch}: max |onnxruntime - pytorch| = {diff:.3g}")
    except (GatingError, ValueError, TypeError, FileNotFoundError, KeyError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
