"""Real speed of gated ResNets on a CUDA GPU: dense, masked gated, compact and static export.

The CPU benchmark (``latency.py``) is the one the speed targets refer to; this one answers what a
GPU user gets. ``compact`` decides per image which channels to run, which on a GPU means a
device-to-host sync per block (``nonzero``) and many small kernels; the static export is a plain,
narrower network. Ratios against the plain timm model, interleaved (plain, variant, ...), median
of the per-pair ratios, each call synchronised.

``fixed`` is ``export_at_budget`` at the same budget: a plain timm model with one width per block,
the deployment the fixed-budget export is for (docs/speed.md#fixed-budget-export).

``--gate_types channel width`` also times width gates (``gate_type="width"``, ``compact/width.py``:
inputs grouped by level, one host sync per block for the level counts) next to the channel gates.

Usage:
    python benchmarks/latency_gpu.py                     # resnet18 224 px, t_d 0.3
    python benchmarks/latency_gpu.py --budgets 0.1 0.3 0.5 --batches 1 256
    python benchmarks/latency_gpu.py --gate_types channel width --amp --output benchmarks/out/latency_gpu_width.json
    python benchmarks/latency_gpu.py --gate_types width --amp --budgets 0.3 --batches 1 64 256   # fixed-budget export
    python benchmarks/latency_gpu.py --device cpu --models gated_resnet18_cifar:16 --batches 2 --repeats 1  # check here
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
from pathlib import Path
from typing import Any

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved_ratios, write_json

import timm_gated_ssl  # noqa: F401  (registers the gated models)
from timm_gated_ssl import calibrate_budget, detach_gates, set_gate_mode
from timm_gated_ssl.compact import compact, export_at_budget, export_static


def _synced(module: torch.nn.Module, x: torch.Tensor, amp: bool) -> Any:
    def call() -> None:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            module(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize()

    return call


def bench(arch: str, size: int, budget: float, batches: list[int], repeats: int, amp: bool,
          gate_type: str = "channel", device: str = "cuda") -> dict[str, Any]:
    torch.manual_seed(0)
    model = timm.create_model(arch, budget=budget, gate_type=gate_type).eval().to(device)
    calib = torch.randn(64, 3, size, size, device=device)
    cal = calibrate_budget(model, [calib], budget)
    plain = detach_gates(copy.deepcopy(model)).eval()
    masked = copy.deepcopy(model)
    set_gate_mode(masked, "gated")
    fixed = export_at_budget(model, [calib], budget=budget)  # one width per block: a plain timm model
    variants = {"dense": model, "masked": masked, "compact": compact(model),
                "static": export_static(model, [calib]).model, "fixed": fixed.model}
    result: dict[str, Any] = {"model": arch, "gate_type": gate_type, "img_size": size, "budget": budget, "amp_bf16": amp,
                              "mac_fraction_calib": cal.mac_fraction, "mac_fraction_fixed": fixed.mac_fraction}
    for b in batches:
        x = torch.randn(b, 3, size, size, device=device)
        result[f"batch{b}"] = interleaved_ratios(
            _synced(plain, x, amp), {k: _synced(m, x, amp) for k, m in variants.items()},
            repeats=repeats, inner=5 if b == 1 else 2, warmup=3,
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["gated_resnet18:224", "gated_resnet18_cifar:32"])
    parser.add_argument("--budgets", type=float, nargs="*", default=[0.3])
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 256])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--gate_types", nargs="*", default=["channel"], choices=["channel", "width"])
    parser.add_argument("--output", default="benchmarks/out/latency_gpu.json")
    parser.add_argument("--device", default="cuda",
                        help="cuda; cpu only to check the script end to end before a GPU run (latency.py measures CPU)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: this benchmark measures GPU speed (latency.py measures CPU)")
    torch.backends.cudnn.benchmark = True
    results = []
    for spec in args.models:
        arch, size = spec.split(":")
        for budget, gate_type in [(b, g) for b in args.budgets for g in args.gate_types]:
            results.append(bench(arch, int(size), budget, args.batches, args.repeats, args.amp, gate_type, args.device))
            r = results[-1]
            for b in args.batches:
                row = r[f"batch{b}"]
                print(f"{arch:22s} {gate_type:7s} t_d {budget:.1f} MACs {r['mac_fraction_calib']:.2f} batch {b:4d} "
                      + " ".join(f"{k} {row[k]['ratio']:.3f}" for k in ("dense", "masked", "compact", "static", "fixed"))
                      + f"  (plain {row['baseline']['seconds'] * 1e3:.2f} ms)", flush=True)
            device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu (check run: {platform.processor()})"
            write_json(args.output, {"device": device_name, "torch": torch.__version__,
                                     "timm": timm.__version__, "platform": platform.platform(),
                                     "results": results})


if __name__ == "__main__":
    main()
