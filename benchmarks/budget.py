"""Budget calibration: realised MAC fraction against the target, before and after calibration.

For each t_d in {0.1, 0.2, 0.3, 0.4, 0.5}, a copy of one gated network (random timm init) is given
budget t_d and its gates are trained for a few steps with the paper's budget loss alone (compute
loss + bound loss, gate parameters only, stochastic training gates), which is what pushes a real
network towards t_d. The deterministic gated network's MAC fraction on held-out images is measured
*before* calibration (offset 0: the paper's inference rule ``logit >= 0``) and *after*
``calibrate_budget`` on a separate calibration split. It also times ``count_macs`` per batch against
a plain gated forward of the same batch (interleaved pairs, median ratio).

Everything is random: weights (untrained backbone), images (smoothed Gaussian noise). It shows the
mechanics (how far the inference rule lands from t_d, and that calibration puts it within +-0.01 on
data it was not fitted on), not the numbers of a pretrained network.

Usage:
    python benchmarks/budget.py                  # small preset: CPU, a few minutes
    python benchmarks/budget.py --preset full    # GPU: ResNet-50 at 224 px, more data and steps
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved_ratios, write_json

import timm_gated_ssl  # noqa: F401
from timm_gated_ssl import gate_mode, iter_gates
from timm_gated_ssl.budget import BudgetLoss
from timm_gated_ssl.calibration import calibrate_budget
from timm_gated_ssl.compute import count_macs

BUDGETS = (0.1, 0.2, 0.3, 0.4, 0.5)
PRESETS: dict[str, dict[str, Any]] = {
    "small": {"model": "gated_resnet18_cifar", "size": 32, "batch": 16, "train_batches": 2,
              "calib_batches": 4, "heldout_batches": 4, "steps": 6, "repeats": 3},
    "full": {"model": "gated_resnet50", "size": 224, "batch": 128, "train_batches": 8,
             "calib_batches": 8, "heldout_batches": 8, "steps": 100, "repeats": 11},
}


def smooth_noise(n: int, size: int, *, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Images with some spatial structure: Gaussian noise at 1/4 resolution, upsampled."""
    low = torch.randn(n, 3, max(size // 4, 1), max(size // 4, 1), generator=generator)
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).to(device)


def fraction(model: torch.nn.Module, batches: list[torch.Tensor]) -> float:
    """Gated / dense MACs of the deterministic network over all images of ``batches``."""
    counts = [count_macs(model, x) for x in batches]
    return sum(float(c.gated.sum()) for c in counts) / sum(c.dense * len(c.gated) for c in counts)


def train_gates(model: torch.nn.Module, batches: list[torch.Tensor], steps: int) -> float:
    """A few steps of the budget loss alone on the gates; returns the last training MAC ratio."""
    model.train()
    optimizer = torch.optim.Adam([p for _, g in iter_gates(model) for p in g.parameters()], lr=0.02)
    loss_fn = BudgetLoss()
    ratio = float("nan")
    for step in range(steps):
        images = batches[step % len(batches)]
        with gate_mode(model, "gated"):
            model(images)
        out = loss_fn(model, images, progress=0.0)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        ratio = float(out.mac_ratio)
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="JSON path (default benchmarks/out/budget_<preset>.json)")
    args = parser.parse_args()
    cfg = PRESETS[args.preset]
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    def split(n_batches: int) -> list[torch.Tensor]:
        return [smooth_noise(cfg["batch"], cfg["size"], generator=gen, device=device) for _ in range(n_batches)]

    train, calib, heldout = split(cfg["train_batches"]), split(cfg["calib_batches"]), split(cfg["heldout_batches"])
    base = timm.create_model(cfg["model"]).to(device)
    rows = []
    for budget in BUDGETS:
        model = copy.deepcopy(base)
        for _, gate in iter_gates(model):  # the training target t_d of this run
            gate.config = type(gate.config)(**{**gate.config.to_dict(), "budget": budget})
        train_ratio = train_gates(model, train, cfg["steps"])
        before = fraction(model, heldout)
        start = time.perf_counter()
        result = calibrate_budget(model, calib, budget)
        seconds = time.perf_counter() - start
        after = fraction(model, heldout)
        rows.append({
            "t_d": budget, "train_ratio": train_ratio, "before": before, "after": after,
            "calib_fraction": result.mac_fraction, "offset": result.offset,
            "calib_passes": result.evaluations, "calib_seconds": seconds,
        })
        print(f"t_d={budget:.1f}: before {before:.3f}, after {after:.3f} ({result.evaluations} passes, {seconds:.1f}s)",
              flush=True)

    model = base.eval()
    images = heldout[0]

    def forward() -> None:
        with gate_mode(model, "gated"):
            model(images)

    timing = interleaved_ratios(forward, {"count_macs": lambda: count_macs(model, images)},
                                repeats=cfg["repeats"])

    print(f"\n{cfg['model']} at {cfg['size']} px, {cfg['heldout_batches'] * cfg['batch']} held-out / "
          f"{cfg['calib_batches'] * cfg['batch']} calibration images, {cfg['steps']} budget-loss steps, "
          f"device {device}")
    print("| t_d | train ratio | held-out before | abs err before | calib split after | held-out after "
          "| abs err after | passes |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['t_d']:.1f} | {r['train_ratio']:.3f} | {r['before']:.3f} | {abs(r['before'] - r['t_d']):.3f} "
              f"| {r['calib_fraction']:.3f} | {r['after']:.3f} | {abs(r['after'] - r['t_d']):.3f} "
              f"| {r['calib_passes']} |")
    t = timing["count_macs"]
    print(f"\ncount_macs per batch of {cfg['batch']}: {t['seconds'] * 1e3:.1f} ms, "
          f"{t['ratio']:.2f}x a gated forward ({timing['baseline']['seconds'] * 1e3:.1f} ms)")
    write_json(args.output or f"benchmarks/out/budget_{args.preset}.json", {
        "preset": args.preset, "config": cfg, "device": str(device), "platform": platform.platform(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows, "count_macs": timing,
        "note": "random weights and images: calibration mechanics only",
    })


if __name__ == "__main__":
    main()
