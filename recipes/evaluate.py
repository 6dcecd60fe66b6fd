#!/usr/bin/env python
"""Evaluate a co-trained checkpoint: dense and gated modes, a budget sweep, a vanilla baseline.

    python recipes/evaluate.py --checkpoint runs/cifar10_vicreg_dual_td03 --dataset cifar10 \
        --budgets 0.1 0.2 0.3 0.4 0.5 --vanilla runs/cifar10_vicreg_vanilla \
        --output_dir runs/cifar10_vicreg_dual_td03/eval

    accelerate launch --multi_gpu --num_processes 2 recipes/evaluate.py --checkpoint ... (same flags)

Writes results.json, results.md, tradeoff.png and channel_usage.png to --output_dir and prints the
Markdown table. --fixed_budgets 0.3 0.5 adds a row per budget for the plain model
export_at_budget cuts at that cost (what a fixed-budget deployment keeps). --export_dir DIR also saves the checkpoint with the calibrated budgets in its
config.json next to those files, ready for recipes/push_to_hub.py --checkpoint DIR. A thin wrapper of ``timm_gated_ssl.eval.evaluate_checkpoint`` (see its docstring and
docs/reproduce.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from accelerate import Accelerator

from timm_gated_ssl.cli import exit_status, run_main, warn_slow_bf16
from timm_gated_ssl.eval import evaluate_checkpoint
from timm_gated_ssl.eval.outputs import channel_usage_markdown


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="output_dir of recipes/pretrain.py (or 'hf-hub:ORG/NAME')")
    parser.add_argument("--dataset", required=True, help="preset (cifar10, cifar100, stl10, ...), image folder or Hub id")
    parser.add_argument("--train_split", default="train", help="labelled split for the probe / k-NN bank")
    parser.add_argument("--test_split", default="test")
    parser.add_argument("--image_size", type=int, default=None, help="default: the checkpoint's config.yaml, else the preset's")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--hub_id", default=None, help="Hub dataset id overriding the preset's")
    parser.add_argument("--budgets", type=float, nargs="*", default=[], help="fractions of dense MACs to calibrate, e.g. 0.1 0.3 0.5")
    parser.add_argument("--fixed_budgets", type=float, nargs="*", default=[],
                        help="also export a plain model at each of these fractions of dense MACs (export_at_budget) and evaluate it")
    parser.add_argument("--calibration_split", default=None, help="default: a held-out slice of --train_split")
    parser.add_argument("--calibration_size", type=int, default=None, help="default: min(2048, 10%% of the train split)")
    parser.add_argument("--calibration_tol", type=float, default=0.01)
    parser.add_argument("--max_train", type=int, default=None, help="probe / k-NN bank size (seeded random subset)")
    parser.add_argument("--knn_k", type=int, default=20)
    parser.add_argument("--linear_epochs", type=int, default=100)
    parser.add_argument("--linear_seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--batch_size", type=int, default=256, help="per process")
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--vanilla", default=None, help="vanilla SSL baseline checkpoint, evaluated dense")
    parser.add_argument("--output_dir", default=None)
    parser.add_argument("--export_dir", default=None,
                        help="save the checkpoint with the calibrated budgets + results here (for push_to_hub.py)")
    parser.add_argument("--model_name", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixed_precision", default=None, choices=["no", "fp16", "bf16"])
    parser.add_argument("--cpu", action="store_true", help="force the CPU")
    parser.add_argument("--no_progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    accelerator = Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision)
    warn_slow_bf16(accelerator)
    result = evaluate_checkpoint(
        args.checkpoint, dataset=args.dataset, train_split=args.train_split,
        test_split=args.test_split, image_size=args.image_size, data_dir=args.data_dir,
        hub_id=args.hub_id, budgets=args.budgets,
        fixed_budgets=args.fixed_budgets, calibration_split=args.calibration_split,
        calibration_size=args.calibration_size, calibration_tol=args.calibration_tol,
        max_train=args.max_train, knn_k=args.knn_k, linear_epochs=args.linear_epochs,
        linear_seeds=args.linear_seeds, batch_size=args.batch_size, num_workers=args.num_workers,
        accelerator=accelerator, progress=not args.no_progress, vanilla=args.vanilla,
        output_dir=args.output_dir, export_dir=args.export_dir, model_name=args.model_name,
        seed=args.seed,
    )
    if accelerator.is_main_process:
        usage = channel_usage_markdown(result)
        print(result.to_markdown() + ("\n" + usage if usage else ""))
        if args.output_dir:
            print(f"wrote results.json, results.md, tradeoff.png to {args.output_dir}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    """``main`` with bad input reported as one ``error: ...`` line on stderr (exit status 2)."""
    return exit_status(main, argv)


if __name__ == "__main__":
    run_main(main, hard_exit=True)  # os._exit: gloo may abort at interpreter exit after the work is done
