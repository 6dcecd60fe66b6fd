"""Gated ViTs on CPU: hook overhead as ratios from one run, and realised MAC fraction vs target.

* ``dense / plain``: a gated ViT in dense mode against the same plain timm ViT: what attaching
  gates costs a user who runs the dense encoder (every hook returns at once).
* ``gated / dense``: the gated mode's masked forward against dense mode: the gate networks, two
  mask multiplies per block and the norm swaps. Masking saves no time by itself (off heads and units
  still run); the MAC fraction is what a sliced / compact execution would save.
* Realised MAC fraction: fresh gates of ``gated_vit_tiny_patch4_32`` trained by the budget loss
  alone (:class:`~timm_gated_ssl.budget.BudgetLoss` at the start of training: compute + bound loss, the paper's
  defaults), on the gate parameters only, random images; then
  measured with :func:`timm_gated_ssl.compute.count_macs` on held-out images: stochastic (training
  estimator) and deterministic (eval) gates, and deterministic after
  :func:`~timm_gated_ssl.calibration.calibrate_budget` on other random images.

Timings are interleaved (baseline then variant, back to back) and the median of per-pair ratios is
reported, because this machine's speed drifts (see ``_timing.py``).

Usage:
    python benchmarks/vit_overhead.py            # small preset: 2 threads, a few minutes
    python benchmarks/vit_overhead.py --preset full --threads 16
"""

from __future__ import annotations

import argparse
import copy
import platform

import timm
import torch
from _timing import interleaved_ratios, write_json

import timm_gated_ssl
import timm_gated_ssl.compute.vit  # registers the ViT compute family
import timm_gated_ssl.models.vit  # registers the gated ViTs
from timm_gated_ssl.budget import BudgetLoss
from timm_gated_ssl.calibration import calibrate_budget
from timm_gated_ssl.compute import count_macs

PRESETS = {
    "small": {
        "cases": [("vit_tiny_patch4_32", 1, 32, 20), ("vit_tiny_patch4_32", 64, 32, 5),
                  ("vit_tiny_patch16_224", 1, 224, 10)],
        "targets": (0.3, 0.5), "steps": 40, "batch": 16, "threads": 2,
    },
    "full": {
        "cases": [("vit_tiny_patch4_32", 1, 32, 50), ("vit_tiny_patch4_32", 64, 32, 10),
                  ("vit_tiny_patch16_224", 1, 224, 30), ("vit_small_patch16_224", 64, 224, 5)],
        "targets": (0.1, 0.2, 0.3, 0.4, 0.5), "steps": 200, "batch": 64, "threads": 16,
    },
}


def overhead(arch: str, batch: int, size: int, repeats: int) -> dict:
    plain = timm.create_model(arch).eval()
    dense = timm_gated_ssl.attach_gates(copy.deepcopy(plain), budget=0.5).eval()
    gated = copy.deepcopy(dense)
    timm_gated_ssl.set_gate_mode(gated, "gated")
    x = torch.randn(batch, 3, size, size)
    res = interleaved_ratios(lambda: plain(x), {"dense": lambda: dense(x)}, repeats=repeats)
    res_gated = interleaved_ratios(lambda: dense(x), {"gated": lambda: gated(x)}, repeats=repeats)
    return {
        "model": arch, "batch": batch, "image_size": size, "repeats": repeats,
        "plain_ms": 1e3 * res["baseline"]["seconds"],
        "dense_over_plain": res["dense"]["ratio"], "gated_over_dense": res_gated["gated"]["ratio"],
    }


def mac_fraction(target: float, steps: int, batch: int) -> dict:
    torch.manual_seed(0)
    model = timm.create_model("gated_vit_tiny_patch4_32", budget=target, num_classes=0).train()
    gates = [p for _, g in timm_gated_ssl.iter_gates(model) for p in g.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in gates:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(gates, lr=1e-2)
    budget_loss = BudgetLoss(target)
    timm_gated_ssl.set_gate_mode(model, "gated")
    for _ in range(steps):
        x = torch.randn(batch, 3, 32, 32)
        model(x)
        optimizer.zero_grad(set_to_none=True)
        budget_loss(model, x, progress=0.0).loss.backward()
        optimizer.step()
    held_out = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    row = {
        "target": target, "steps": steps,
        "stochastic": count_macs(model, held_out, stochastic=True).mean_ratio,
        "deterministic": count_macs(model, held_out).mean_ratio,
    }
    calibration = [torch.randn(32, 3, 32, 32) for _ in range(2)]
    row["calibrated_on_calibration_data"] = calibrate_budget(model, calibration, target).mac_fraction
    row["calibrated"] = count_macs(model, held_out).mean_ratio
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--only", choices=["overhead", "fraction"], default=None)
    parser.add_argument("--output", default="benchmarks/out/vit_overhead.json")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    torch.set_num_threads(args.threads or preset["threads"])

    rows = [overhead(*case) for case in preset["cases"]] if args.only != "fraction" else []
    print(f"\nViT hook overhead, CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, eval, no grad")
    print("| model | batch | px | plain ms | dense-mode / plain | gated / dense |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['image_size']} | {r['plain_ms']:.1f} | "
              f"{r['dense_over_plain']:.3f} | {r['gated_over_dense']:.3f} |")

    fractions = [] if args.only == "overhead" else [
        mac_fraction(t, preset["steps"], preset["batch"]) for t in preset["targets"]
    ]
    print("\nRealised MAC fraction of gated_vit_tiny_patch4_32 (budget loss only, random images)")
    print("| target t_d | steps | stochastic gates | deterministic gates | calibrated (held out) |")
    print("|---|---|---|---|---|")
    for f in fractions:
        print(f"| {f['target']:.2f} | {f['steps']} | {f['stochastic']:.3f} | {f['deterministic']:.3f} | "
              f"{f['calibrated']:.3f} |")
    write_json(args.output, {
        "benchmark": "vit_overhead", "preset": args.preset, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "timm": timm.__version__, "machine": platform.machine(),
        "overhead": rows, "mac_fraction": fractions,
    })


if __name__ == "__main__":
    main()
