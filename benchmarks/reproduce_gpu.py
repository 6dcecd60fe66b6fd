"""The Fashion-MNIST reproduction on one GPU, on the full 60k training images (docs/results.md).

Prepared for a lent GPU machine (one command, minutes of device time): it trains the runs named
by ``--runs`` (names from ``benchmarks/reproduce_small.py``: ``paper_td0.3`` for the paper's loss
settings, ``dual_td0.3`` for the library defaults, ...) for ``--epochs`` epochs of the full
training split at batch ``--batch_size``, bf16 autocast, augmentation in ``--num_workers``
DataLoader workers, then evaluates each with ``evaluate_checkpoint`` on the GPU (linear probe on
10k training images, k-NN, MAC fraction before and after calibration on the 10k test images) and
writes one JSON with the rows of ``reproduce_small.summarise``.

The device machine has no Debian package: carry the IDX files (``cp -r
/usr/share/datasets/fashion-mnist benchmarks/out/fmnist`` and ``carry=["benchmarks/out/fmnist"]``)
and pass ``--data_dir benchmarks/out/fmnist``.

Checked on CPU at tiny scale (``--cpu --epochs 1 --train_subset 512 --max_train 512 --batch_size 256
--num_workers 2 --runs dual_td0.3 vanilla --data_dir /usr/share/datasets/fashion-mnist``: trains,
evaluates, writes the JSON and the table); not run on a GPU yet. Usage:
    python benchmarks/reproduce_gpu.py --runs paper_td0.3 dual_td0.3 --epochs 8 \\
        --data_dir benchmarks/out/fmnist --output $OUT
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce_small as small

ROOT = small.ROOT


def train(name: str, args: argparse.Namespace, out: Path) -> None:
    base, seed = small.split_name(name)
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "bf16", "--dynamo_backend", "no", *(["--cpu"] if args.cpu else []),
        str(ROOT / "recipes" / "pretrain.py"), "--output_dir", str(out / name), "--overwrite",
        "--channels_last", "--no_progress", "--report_to", "tensorboard", *small.COMMON,
        "--batch_size", str(args.batch_size), "--epochs", str(args.epochs), "--save_every", str(args.epochs),
        "--num_workers", str(args.num_workers), "--seed", str(seed), *small.RUNS[base],
    ]
    if args.train_subset:
        cmd += ["--train_subset", str(args.train_subset)]
    if args.data_dir:
        cmd += ["--data_dir", str(Path(args.data_dir).resolve())]
    print(f"[{time.strftime('%H:%M:%S')}] train {name}: {' '.join(cmd[2:])}", flush=True)
    with open(out / f"{name}.log", "w") as log:
        if subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT):
            raise SystemExit(f"training {name} failed; see {out / f'{name}.log'}")


def evaluate(name: str, args: argparse.Namespace, out: Path) -> None:
    from accelerate import Accelerator

    import timm_gated_ssl  # noqa: F401
    from timm_gated_ssl.eval.checkpoint import evaluate_checkpoint

    budget = small.budget_of(name)
    result = evaluate_checkpoint(
        out / name, dataset="fashion_mnist", image_size=28, max_train=args.max_train,
        budgets=(budget,) if budget is not None else (), progress=False, output_dir=out / f"eval_{name}",
        accelerator=Accelerator(cpu=args.cpu), num_workers=args.num_workers,
        data_dir=args.data_dir,
    )
    print(result.to_markdown(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=["paper_td0.3", "dual_td0.3"])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--num_workers", type=int, default=8)
    parser.add_argument("--train_subset", type=int, default=None, help="default: all 60k images")
    parser.add_argument("--max_train", type=int, default=10000, help="probe / k-NN bank images")
    parser.add_argument("--data_dir", default=None, help="folder of the Fashion-MNIST IDX files")
    parser.add_argument("--cpu", action="store_true", help="tiny CPU check of the script")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "out" / "reproduce_gpu"))
    args = parser.parse_args()
    for name in args.runs:
        small.split_name(name)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.runs:
        train(name, args, out)
        evaluate(name, args, out)
        rows.append(small.summarise(name, "gpu", out))
    summary = {"runs": rows, "epochs": args.epochs, "batch_size": args.batch_size,
               "train_images": args.train_subset or 60000}
    (out / "reproduce_gpu.json").write_text(json.dumps(summary, indent=1))
    print(gpu_table(rows))


def gpu_table(rows: list[dict[str, Any]]) -> str:
    """The runs' table in reproduce_small's layout, headed by this script's steps and batch size."""
    text = small.tables([{**r, "protocol": "main"} for r in rows], [], {}, [])
    return text.replace("**Protocol `main`**", "**Full Fashion-MNIST, one GPU**", 1)


if __name__ == "__main__":
    main()
