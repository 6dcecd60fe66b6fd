"""Small real-data reproduction on Fashion-MNIST (runs on 2 CPU cores in about 2 hours).

Protocol (see docs/results.md for the numbers and the reasoning behind the sizes):

* data: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (``apt-get install -y
  dataset-fashion-mnist``), 28 px, pretraining on the first 10,240 training images (120 steps of 256);
* encoder: ResNet-18 with the CIFAR stem; VICReg; the paper's recipe (LARS, lr 0.3 per 256,
  warm-up then cosine, lambda 5, gamma 1) over a fixed number of steps, bf16 autocast + channels_last;
* runs, same recipe and steps: vanilla VICReg (gating off) and VICReg-dual at the chosen budgets;
  a random-initialised encoder is evaluated as the floor;
* evaluation (``timm_gated_ssl.eval.evaluate_checkpoint``): linear probe on 10k labelled training
  images (the informative measure on this data), k-NN (k=20 and k=1), realised MAC fraction on the
  10k test images before calibration and after calibrating to each budget on held-out training
  images, and a budget sweep by calibration from the dual checkpoint.

Usage:
    python benchmarks/reproduce_small.py --phase all            # train, then evaluate, then report
    python benchmarks/reproduce_small.py --phase train --jobs 2 # runs in parallel, 1 thread each
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = [
    "--dataset", "fashion_mnist", "--image_size", "28", "--train_subset", "10240",
    "--batch_size", "256", "--epochs", "3", "--warmup_epochs", "1", "--lr", "0.2",
    "--eval_split", "null", "--eval_train_split", "null", "--log_every", "2", "--save_every", "1",
]
RUNS = {
    "vanilla": ["--model", "resnet18_cifar", "--gating", "false"],
    "dual_td0.1": ["--model", "gated_resnet18_cifar", "--budget", "0.1"],
    "dual_td0.3": ["--model", "gated_resnet18_cifar", "--budget", "0.3"],
    "dual_td0.5": ["--model", "gated_resnet18_cifar", "--budget", "0.5"],
}
SWEEP = (0.1, 0.3, 0.5, 0.7)


def train(names: list[str], out: Path, *, jobs: int) -> None:
    """Launch the pretraining runs (``jobs`` at a time, threads split between them)."""
    threads = max(1, (os.cpu_count() or 2) // jobs)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    pending, running = list(names), []
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
                   "--mixed_precision", "bf16", "--num_machines", "1", "--dynamo_backend", "no",
                   str(ROOT / "recipes" / "pretrain.py"), "--output_dir", str(out / name), "--overwrite",
                   "--channels_last", *COMMON, *RUNS[name]]
            log = open(out / f"{name}.log", "w")  # noqa: SIM115  (closed when the run exits)
            print(f"[{time.strftime('%H:%M:%S')}] start {name}: {' '.join(cmd[2:])}", flush=True)
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
            running.append((name, proc, log))
        time.sleep(10)
        for name, proc, log in list(running):
            if proc.poll() is not None:
                running.remove((name, proc, log))
                log.close()
                print(f"[{time.strftime('%H:%M:%S')}] {name} exited {proc.returncode}", flush=True)


def evaluate(names: list[str], out: Path) -> dict[str, dict]:
    """Evaluate the random-init floor and the trained runs; returns ``{run: results dict}``.

    A dual run is evaluated together with the vanilla run (same protocol, one table and plot);
    the vanilla run is evaluated alone only when no dual run is given.
    """
    import timm
    import torch

    import timm_gated_ssl  # noqa: F401
    from timm_gated_ssl.eval.checkpoint import evaluate_checkpoint

    torch.set_num_threads(os.cpu_count() or 2)
    kw = {"dataset": "fashion_mnist", "image_size": 28, "max_train": 10000, "progress": False}
    results = {}
    floor = timm.create_model("resnet18_cifar", num_classes=0)
    results["random_init"] = evaluate_checkpoint(floor, output_dir=out / "eval_random_init",
                                                 model_name="random_init", **kw).to_dict()
    trained = [n for n in names if (out / n / "model.safetensors").exists()]
    vanilla = out / "vanilla" if "vanilla" in trained else None
    duals = [n for n in trained if n.startswith("dual")]
    for name in duals or trained:
        budgets = SWEEP if name.startswith("dual") else ()
        result = evaluate_checkpoint(out / name, budgets=budgets, vanilla=vanilla if duals else None,
                                     output_dir=out / f"eval_{name}", **kw)
        results[name] = result.to_dict()
        print(result.to_markdown(), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=["train", "evaluate", "all"], default="all")
    parser.add_argument("--runs", nargs="+", default=["vanilla", "dual_td0.3"], choices=sorted(RUNS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "out" / "reproduce_small"))
    args = parser.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if args.phase in ("train", "all"):
        train(args.runs, out, jobs=args.jobs)
    if args.phase in ("evaluate", "all"):
        evaluate(args.runs, out)


if __name__ == "__main__":
    main()
