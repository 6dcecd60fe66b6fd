"""Hook overhead of gates on CPU, as ratios measured in one run (gated timm ResNets).

* ``dense / plain``: a gated resnet18 in dense mode against the plain timm resnet18 (target <= 1.03):
  what attaching gates costs a user who runs the dense encoder.
* ``gated / dense``: the gated mode's masked forward against dense mode (target <= 1.15): the gate
  networks, mask multiplies and norm swaps; masking saves no time by itself (see ``latency.py`` for
  the real-speed paths).

Usage:
    python benchmarks/hook_overhead.py            # small preset: 2 threads, minutes
    python benchmarks/hook_overhead.py --preset full --threads 16
"""

from __future__ import annotations

import argparse
import copy
import platform

import timm
import torch
from _timing import interleaved_ratios, write_json

import timm_gated_ssl

PRESETS = {
    "small": {"cases": [(1, 224, 20), (64, 224, 3)], "threads": 2},
    "full": {"cases": [(1, 224, 50), (64, 224, 10)], "threads": 16},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", default="benchmarks/out/hook_overhead.json")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    torch.set_num_threads(args.threads or preset["threads"])

    plain = timm.create_model("resnet18").eval()
    gated = timm_gated_ssl.attach_gates(copy.deepcopy(plain), budget=0.5).eval()
    gated_mode = copy.deepcopy(gated)
    timm_gated_ssl.set_gate_mode(gated_mode, "gated")

    rows = []
    for batch, size, repeats in preset["cases"]:
        x = torch.randn(batch, 3, size, size)
        res = interleaved_ratios(
            lambda x=x: plain(x), {"dense": lambda x=x: gated(x)}, repeats=repeats
        )
        res_gated = interleaved_ratios(
            lambda x=x: gated(x), {"gated": lambda x=x: gated_mode(x)}, repeats=repeats
        )
        rows.append({
            "batch": batch, "image_size": size, "repeats": repeats,
            "plain_ms": 1e3 * res["baseline"]["seconds"],
            "dense_over_plain": res["dense"]["ratio"],
            "gated_over_dense": res_gated["gated"]["ratio"],
        })

    print(f"\nresnet18 hook overhead, CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| batch | px | plain ms | dense-mode / plain (<= 1.03) | gated / dense (<= 1.15) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['image_size']} | {r['plain_ms']:.1f} | "
              f"{r['dense_over_plain']:.3f} | {r['gated_over_dense']:.3f} |")
    write_json(args.output, {
        "benchmark": "hook_overhead", "preset": args.preset, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "timm": timm.__version__, "machine": platform.machine(),
        "rows": rows,
    })


if __name__ == "__main__":
    main()
