#!/usr/bin/env python
"""Export a checkpoint to ONNX: the dense model, the gated mode, or the static export.

    python recipes/export_onnx.py --checkpoint runs/quickstart_full --output model.onnx --mode gated --check
    python recipes/export_onnx.py --checkpoint runs/quickstart_full --output static.onnx \
        --static --dataset digits --budget 0.3 --check
    python recipes/export_onnx.py --checkpoint runs/quickstart_full --output fixed03.onnx \
        --fixed_budget 0.3 --dataset digits --check

``--mode dense`` (default) exports the dense network; ``--mode gated`` the gated mode with its
data-dependent masks (outputs equal PyTorch's gated mode, but onnxruntime computes every channel:
no speed-up); ``--static`` first removes the channels the gates never use on ``--dataset`` images
(``export_static``); ``--fixed_budget B`` keeps the channels the gates use most at budget ``B``
until the plain model costs ``B`` of the dense MACs (``export_at_budget``): the export that runs
faster on every runtime. ``--check`` compares onnxruntime with
PyTorch at batch 1 and 4. An existing file at ``--output`` is replaced only when it is an earlier
export of this library and ``--overwrite`` is given; nothing else is ever written over. A thin wrapper of ``timm_gated_ssl.export_onnx`` (docs/speed.md); needs
``pip install "timm_gated_ssl[onnx]"``.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader

from timm_gated_ssl import (
    export_at_budget,
    export_onnx,
    export_static,
    gate_mode,
    has_gates,
    set_budget,
)
from timm_gated_ssl.cli import exit_status, run_main
from timm_gated_ssl.data import EvalDataset, build_eval_transform, load_image_dataset
from timm_gated_ssl.errors import ConfigError, NoGatesError, check_budget
from timm_gated_ssl.export import onnx_max_abs_diff
from timm_gated_ssl.export.onnx import check_onnx_output
from timm_gated_ssl.hub import load_run


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a timm checkpoint folder or 'hf-hub:ORG/NAME'")
    parser.add_argument("--output", required=True, help="the .onnx file to write (and OUTPUT.data beside it)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export at --output")
    parser.add_argument("--mode", default="dense", choices=["dense", "gated"], help="gate mode to export")
    parser.add_argument("--budget", type=float, default=None, help="a calibrated budget to run the gates at")
    parser.add_argument("--static", action="store_true", help="export_static first (needs --dataset)")
    parser.add_argument("--fixed_budget", type=float, default=None,
                        help="export a plain model at this fraction of the dense MACs (export_at_budget; needs --dataset)")
    parser.add_argument("--norm_batches", type=int, default=0,
                        help="with --fixed_budget: re-estimate BatchNorm statistics on this many batches of --dataset")
    parser.add_argument("--dataset", default=None, help="images for --static / --fixed_budget: a preset, folder or Hub id")
    parser.add_argument("--split", default="train", help="split of --dataset")
    parser.add_argument("--static_images", type=int, default=512, help="images --static / --fixed_budget look at")
    parser.add_argument("--image_size", type=int, default=None, help="default: the checkpoint's")
    parser.add_argument("--fixed_batch", action="store_true", help="batch 1 only (default: a dynamic batch)")
    parser.add_argument("--check", action="store_true", help="compare onnxruntime with PyTorch")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Every check that needs no model, before the checkpoint is loaded or anything is written."""
    if args.image_size is not None and args.image_size < 1:
        raise ConfigError(f"--image_size must be >= 1 (pixels), got {args.image_size}; leave it out for "
                          "the checkpoint's own size")
    if args.static_images < 1:
        raise ConfigError(f"--static_images must be >= 1 (images export_static looks at), got "
                          f"{args.static_images}")
    if args.budget is not None:
        check_budget(args.budget, name="--budget")
    if args.static and args.dataset is None:
        raise ConfigError("--static needs --dataset (the images that decide which channels stay)")
    if args.fixed_budget is not None:
        check_budget(args.fixed_budget, name="--fixed_budget")
        clash = [flag for flag, on in (("--static", args.static), ("--budget", args.budget is not None),
                                       ("--mode gated", args.mode == "gated")) if on]
        if clash:
            raise ConfigError(f"--fixed_budget exports one plain model; it cannot be combined with {clash[0]} "
                              "(leave that out)")
        if args.dataset is None:
            raise ConfigError("--fixed_budget needs --dataset (the images that decide which channels stay)")
    if args.norm_batches < 0 or (args.norm_batches and args.fixed_budget is None):
        raise ConfigError(f"--norm_batches must be >= 0 and needs --fixed_budget, got {args.norm_batches}")
    check_onnx_output(args.output, overwrite=args.overwrite, name="--output")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_args(args)
    run = load_run(args.checkpoint)
    model = run.model
    size = args.image_size or run.pretrain_config.get("image_size") or model.pretrained_cfg["input_size"][-1]
    gated = has_gates(model)
    if not gated and (args.mode == "gated" or args.static or args.budget is not None or args.fixed_budget):
        raise NoGatesError(f"{args.checkpoint} has no gates: --mode gated, --static, --budget and "
                           "--fixed_budget need a gated checkpoint")
    if args.budget is not None:
        set_budget(model, args.budget)
    if args.static or args.fixed_budget is not None:
        info = load_image_dataset(args.dataset, split=args.split, image_size=size)
        rows = info.dataset.select(range(min(args.static_images, len(info))))
        images = EvalDataset(rows, build_eval_transform(image_size=size, mean=info.mean, std=info.std),
                             image_column=info.image_column, label_column=None)
        loader = DataLoader(images, batch_size=64)
        if args.static:
            model = export_static(model, loader).model.eval()
        else:
            fixed = export_at_budget(model, loader, budget=args.fixed_budget, norm_batches=args.norm_batches)
            print(f"fixed budget {args.fixed_budget:g}: {fixed.mac_fraction:.3f} of the dense MACs "
                  f"({fixed.macs:,} per image)")
            model = fixed.model.eval()
        gated = False
    with gate_mode(model, args.mode) if gated else contextlib.nullcontext():
        export = export_onnx(model, args.output, input_size=(3, size, size), dynamic_batch=not args.fixed_batch,
                             overwrite=args.overwrite)
        print(f"wrote {export.path} (input {export.input_size}, "
              f"{'dynamic' if export.dynamic_batch else 'fixed'} batch, mode {export.gate_mode or 'plain'})")
        if args.check:
            for batch in (1,) if args.fixed_batch else (1, 4):
                diff = onnx_max_abs_diff(model, export.path, torch.randn(batch, 3, size, size))
                print(f"batch {batch}: max |onnxruntime - pytorch| = {diff:.3g}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    """``main`` with bad input reported as one ``error: ...`` line on stderr (exit status 2)."""
    return exit_status(main, argv)


if __name__ == "__main__":
    run_main(main)
