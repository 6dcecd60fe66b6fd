"""bf16 autocast against fp32 on this CPU: one training step of ResNet-18 (CIFAR stem), interleaved.

bf16 autocast with channels_last is the fast CPU setting where oneDNN has bf16 kernels (AVX-512
and newer) and a slow one where it has not (AVX2): the recipes warn in the second case
(``timm_gated_ssl.cli.slow_bf16_warning``). This measures the ratio on the machine at hand, in one
run: forward + backward + SGD step of a batch, fp32 and bf16 back to back, median of per-pair
ratios (``_timing.interleaved_ratios``).

Usage:
    python benchmarks/cpu_bf16.py                       # batch 32 at 28 px, 2 threads, 3 pairs
    python benchmarks/cpu_bf16.py --batch 256 --repeats 5
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

import timm
import torch
from _timing import interleaved_ratios, write_json

import timm_gated_ssl  # noqa: F401
from timm_gated_ssl.cli import cpu_has_fast_bf16

ROOT = Path(__file__).resolve().parents[1]


def make_step(batch: int, size: int, dtype: torch.dtype | None):
    torch.manual_seed(0)
    model = timm.create_model("resnet18_cifar", num_classes=10).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    autocast = torch.autocast("cpu", dtype=dtype) if dtype else nullcontext()

    def step() -> None:
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "out" / "cpu_bf16.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    res = interleaved_ratios(make_step(args.batch, args.size, None),
                             {"bf16": make_step(args.batch, args.size, torch.bfloat16)},
                             repeats=args.repeats, warmup=1, inference=False)
    capability, fast = torch.backends.cpu.get_cpu_capability(), cpu_has_fast_bf16()
    print(f"\nresnet18 (CIFAR stem) training step, batch {args.batch}, {args.size} px, {args.threads} threads, "
          f"CPU capability {capability}, oneDNN bf16 kernels: {fast}")
    print("| setting | step time (s) | / fp32 |")
    print("|---|---|---|")
    print(f"| fp32 | {res['baseline']['seconds']:.3f} | 1 |")
    print(f"| bf16 autocast | {res['bf16']['seconds']:.3f} | {res['bf16']['ratio']:.2f} |")
    write_json(args.output, {"benchmark": "cpu_bf16", "batch": args.batch, "size": args.size,
                             "threads": args.threads, "repeats": args.repeats, "cpu_capability": capability,
                             "cpu_has_fast_bf16": fast, "fp32_step_s": res["baseline"]["seconds"],
                             "bf16_step_s": res["bf16"]["seconds"], "bf16_over_fp32": res["bf16"]["ratio"]})


if __name__ == "__main__":
    main()
