"""Training-step cost of co-training, as ratios measured in one run (issue: pretraining recipe).

1. ``dual / vanilla``: one VICReg-dual step (gated pass on view 1, dense pass on view 2, budget
   losses) against one vanilla VICReg step (two dense passes) at the same batch and backbone, in
   fp32 and bf16 autocast, interleaved, median of per-pair ratios (target <= 1.10).
2. ``recipe / bare loop``: images/s of ``recipes/pretrain.py`` (data loading, augmentation,
   Accelerate, logging) against a bare loop over the same model, loss and optimizer on
   pre-augmented tensors (target >= 0.95). The bare loop is timed before and after the recipe run
   and the mean is used, because this machine drifts.

Usage:
    python benchmarks/train_step.py                 # small preset (CPU, minutes)
    python benchmarks/train_step.py --preset full   # GPU-sized batch and resolution
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import timm
import torch
from _timing import interleaved_ratios, write_json

import timm_gated_ssl  # noqa: F401
from timm_gated_ssl.budget import BudgetLoss
from timm_gated_ssl.recipe import DualSSLModel
from timm_gated_ssl.ssl import build_ssl_objective

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {
    "small": {"batch": 32, "size": 32, "repeats": 5, "recipe_steps": 12, "threads": 2},
    "full": {"batch": 256, "size": 32, "repeats": 20, "recipe_steps": 100, "threads": 16},
}


def make_step(gating: bool, batch: int, size: int, dtype: torch.dtype | None):
    torch.manual_seed(0)
    name = "gated_resnet18_cifar" if gating else "resnet18_cifar"
    backbone = timm.create_model(name, num_classes=0).to(memory_format=torch.channels_last)
    model = DualSSLModel(backbone, build_ssl_objective("vicreg", in_dim=512), gating=gating,
                         budget_loss=BudgetLoss(0.3) if gating else None).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    v1 = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    v2 = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast("cpu", dtype=dtype) if dtype else nullcontext()

    def step() -> None:
        with autocast:
            out = model(v1, v2)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def dual_over_vanilla(batch: int, size: int, repeats: int, dtype: torch.dtype | None) -> dict:
    dual, vanilla = make_step(True, batch, size, dtype), make_step(False, batch, size, dtype)
    res = interleaved_ratios(vanilla, {"dual": dual}, repeats=repeats, inference=False)
    return {"ratio": res["dual"]["ratio"], "vanilla_step_s": res["baseline"]["seconds"]}


def bare_images_per_s(batch: int, size: int, steps: int) -> float:
    step = make_step(True, batch, size, torch.bfloat16)
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def recipe_images_per_s(batch: int, size: int, steps: int) -> float:
    sys.path.insert(0, str(ROOT / "tests" / ".."))
    from tests.recipe.conftest import load_pretrain_module

    pretrain = load_pretrain_module()
    with tempfile.TemporaryDirectory() as out:
        pretrain.main(["--cpu", "--no_progress", "--mixed_precision", "bf16", "--channels_last",
                       "--output_dir", out, "--dataset", "digits", "--image_size", str(size),
                       "--batch_size", str(batch), "--max_steps", str(steps + 2), "--epochs", "50",
                       "--eval_split", "null", "--eval_train_split", "null", "--budget", "0.3"])
        metrics = json.loads((Path(out) / "metrics.json").read_text())
    return metrics["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "out" / "train_step.json"))
    args = parser.parse_args()
    p = PRESETS[args.preset]
    torch.set_num_threads(p["threads"])
    rows = {
        "fp32": dual_over_vanilla(p["batch"], p["size"], p["repeats"], None),
        "bf16": dual_over_vanilla(p["batch"], p["size"], p["repeats"], torch.bfloat16),
    }
    before = bare_images_per_s(p["batch"], p["size"], p["recipe_steps"])
    recipe = recipe_images_per_s(p["batch"], p["size"], p["recipe_steps"])
    after = bare_images_per_s(p["batch"], p["size"], p["recipe_steps"])
    bare = (before + after) / 2
    print(f"\nresnet18 (CIFAR stem), batch {p['batch']}, {p['size']} px, {torch.get_num_threads()} threads")
    print("| measure | value | target |")
    print("|---|---|---|")
    for k, r in rows.items():
        print(f"| dual / vanilla step time, {k} | {r['ratio']:.3f} (vanilla {r['vanilla_step_s']:.2f} s) | <= 1.10 |")
    print(f"| recipe / bare loop images/s, bf16 | {recipe / bare:.3f} ({recipe:.1f} vs {bare:.1f}) | >= 0.95 |")
    write_json(args.output, {"benchmark": "train_step", "preset": args.preset, "threads": torch.get_num_threads(),
                             "dual_over_vanilla": rows, "recipe_images_per_s": recipe,
                             "bare_images_per_s": [before, after], "recipe_over_bare": recipe / bare})


if __name__ == "__main__":
    main()
