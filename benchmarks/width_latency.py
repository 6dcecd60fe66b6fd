"""CPU latency of width gates' ``compact`` next to channel gates' ``compact`` and sliced limits.

For each case the width-gated and the channel-gated model are calibrated to the same ``t_d`` with
``calibrate_budget``, and every variant is timed as a ratio against the plain timm model,
interleaved in one run (plain, variant, plain, variant, ...; median of per-pair ratios,
``benchmarks/_timing.py``):

* ``width_compact``: ``compact(width_model)``: inputs grouped by level, each level on a weight
  prefix view (``compact/width.py``).
* ``channel_compact``: ``compact(channel_model)`` (default ``union`` strategy): the paper's gates.
* ``width_sliced`` / ``channel_sliced``: a plain network physically cut to the kept widths, no gates:
  at batch 1 each image's own widths (one network per image), at the big batch the batch-mean
  widths (the limit ``docs/speed.md`` reports, 0.42x for trained channel gates at batch 64).

Cases (``--preset full``): resnet18 at 224 px and the CIFAR-stem resnet18 at 32 px, random init and
random images, batch 1 and 64; with ``--checkpoint`` (a width-gated co-trained run, e.g.
``recipes/configs/fashion_mnist_vicreg_width_td03.yaml``) and ``--channel_checkpoint`` (the
channel-gated run of the same protocol, ``dual_td0.3`` of ``benchmarks/reproduce_small.py``) on the
held-out images of ``--images`` (e.g. ``fashion_mnist``, 28 px). Without ``--channel_checkpoint``
the trained case reports the width model alone. Writes JSON and prints a table.

Usage:
    python benchmarks/width_latency.py --preset smoke --repeats 1 1          # end-to-end check
    python benchmarks/width_latency.py --preset full \\
        --checkpoint benchmarks/out/reproduce_small/width_td0.3 \\
        --channel_checkpoint benchmarks/out/reproduce_small/dual_td0.3 --images fashion_mnist
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved_ratios, latency_preset, write_json
from latency import _masks, _sliced, _widths, load_images

import timm_gated_ssl  # noqa: F401  (registers the gated models)
from timm_gated_ssl import calibrate_budget, detach_gates, gate_config
from timm_gated_ssl.compact import compact
from timm_gated_ssl.compute import count_macs

ROOT = Path(__file__).resolve().parents[1]
PRESETS: dict[str, dict[str, Any]] = {
    # (model, image size), big batch, repeats at batch 1 / big batch, images per batch-1 call, calibration images
    "full": {"models": [("gated_resnet18", 224), ("gated_resnet18_cifar", 32)], "big": 64,
             "repeats1": 21, "repeatsN": 7, "images1": 8, "calib": 128},
    "small": {"models": [("gated_resnet18", 224), ("gated_resnet18_cifar", 32)], "big": 64,
              "repeats1": 7, "repeatsN": 3, "images1": 4, "calib": 64},
    "smoke": {"models": [("gated_resnet18_cifar", 16)], "big": 4, "repeats1": 1, "repeatsN": 1,
              "images1": 2, "calib": 8},
}
COLUMNS = ["width_compact", "channel_compact", "width_sliced", "channel_sliced"]


def recorded_path(path: str | None) -> str | None:
    """``path`` as the JSON records it: relative to the repository root when it lies inside it, else
    exactly as the user passed it.

    A committed result then names ``benchmarks/out/...`` instead of one machine's absolute layout
    (``/work/main/...``), while a folder outside the repository keeps the only name that finds it.
    """
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:  # outside the repository
        return path


def _level_groups(model: nn.Module, images: torch.Tensor) -> float:
    """Mean number of distinct kept widths per block on ``images`` (width gates: level groups)."""
    masks = _masks(model, images)
    return sum(int(block[0].sum(1).unique().numel()) for block in masks) / len(masks)


def _prepare(model: nn.Module, budget: float, calib: torch.Tensor, xs: list[torch.Tensor],
             xN: torch.Tensor) -> dict[str, Any]:
    """Calibrate, build compact and the sliced limits; the MAC fractions they run at."""
    model.eval()
    cal = calibrate_budget(model, [calib], budget)
    return {
        "model": model,
        "compact": compact(model),
        "sliced1": [_sliced(model, _widths(_masks(model, x))) for x in xs],
        "slicedN": _sliced(model, _widths(_masks(model, xN))),
        "info": {
            "gate_type": gate_config(model).gate_type,
            "mac_fraction_calib": cal.mac_fraction,
            "mac_fraction_bench1": sum(count_macs(model, x).mean_ratio for x in xs) / len(xs),
            "mac_fraction_benchN": count_macs(model, xN).mean_ratio,
            "distinct_widths_per_block_batchN": _level_groups(model, xN),
        },
    }


def measure(width: nn.Module, channel: nn.Module | None, *, label: str, budget: float, calib: torch.Tensor,
            bench: torch.Tensor, big: int, preset: dict[str, Any]) -> dict[str, Any]:
    """Time width compact, channel compact and both sliced limits against plain timm at batch 1 and ``big``."""
    xs = [bench[i : i + 1] for i in range(preset["images1"])]
    xN = bench.repeat(-(-big // bench.shape[0]), 1, 1, 1)[:big]
    prepared = {"width": _prepare(width, budget, calib, xs, xN)}
    if channel is not None:
        prepared["channel"] = _prepare(channel, budget, calib, xs, xN)
    plain = detach_gates(copy.deepcopy(width)).eval()
    result: dict[str, Any] = {"model": label, "img_size": int(bench.shape[-1]), "budget": budget, "big_batch": big,
                              **{f"{k}_info": v["info"] for k, v in prepared.items()}}

    def cycle(module: Callable[[torch.Tensor], Any]) -> Callable[[], Any]:
        return lambda: [module(x) for x in xs]

    variants1: dict[str, Callable[[], Any]] = {}
    variantsN: dict[str, Callable[[], Any]] = {}
    for kind, p in prepared.items():
        variants1[f"{kind}_compact"] = cycle(p["compact"])
        variants1[f"{kind}_sliced"] = lambda s=p["sliced1"]: [m(x) for m, x in zip(s, xs)]
        variantsN[f"{kind}_compact"] = lambda m=p["compact"]: m(xN)
        variantsN[f"{kind}_sliced"] = lambda m=p["slicedN"]: m(xN)
    result["batch1"] = interleaved_ratios(cycle(plain), variants1, repeats=preset["repeats1"])
    result[f"batch{big}"] = interleaved_ratios(lambda: plain(xN), variantsN, repeats=preset["repeatsN"], warmup=1)
    return result


def _print(results: list[dict[str, Any]]) -> None:
    print("\nratios vs the plain timm model (median of interleaved pairs; lower is faster)")
    print(f"{'model':30s} {'t_d':>4s} {'batch':>5s} {'MACs w':>6s} {'MACs c':>6s} "
          + " ".join(f"{c:>15s}" for c in COLUMNS) + f" {'w/c compact':>11s}")
    for r in results:
        for key in ("batch1", f"batch{r['big_batch']}"):
            row = r[key]
            frac = "bench1" if key == "batch1" else "benchN"
            macs = [f"{r[f'{k}_info'][f'mac_fraction_{frac}']:6.2f}" if f"{k}_info" in r else f"{'-':>6s}"
                    for k in ("width", "channel")]
            vals = " ".join(f"{row[c]['ratio']:15.3f}" if c in row else f"{'-':>15s}" for c in COLUMNS)
            rel = (f"{row['width_compact']['ratio'] / row['channel_compact']['ratio']:11.3f}"
                   if "channel_compact" in row else f"{'-':>11s}")
            print(f"{r['model']:30s} {r['budget']:4.1f} {key[5:]:>5s} {' '.join(macs)} {vals} {rel}")
    print("\nwidth gates: distinct kept widths per block at the big batch (= level groups compact runs)")
    for r in results:
        print(f"{r['model']:30s} {r['width_info']['distinct_widths_per_block_batchN']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=0.3)
    parser.add_argument("--levels", type=int, default=8, help="gate_levels of the random-init width models")
    parser.add_argument("--checkpoint", default=None, help="a width-gated saved model folder (recipe output)")
    parser.add_argument("--channel_checkpoint", default=None,
                        help="the channel-gated run of the same protocol (compared in the trained case)")
    parser.add_argument("--images", default=None, help="held-out images of the checkpoints: a dataset preset "
                        "(fashion_mnist) or a .pt tensor")
    parser.add_argument("--image_size", type=int, default=None)
    parser.add_argument("--no_random", action="store_true", help="skip the random-init cases")
    parser.add_argument("--repeats", type=int, nargs=2, default=None, metavar=("BATCH1", "BATCHN"),
                        help="override the preset's interleaved repeats at batch 1 and at the big batch")
    parser.add_argument("--output", default="benchmarks/out/width_latency.json")
    args = parser.parse_args()
    preset = latency_preset(parser, args, PRESETS)
    results: list[dict[str, Any]] = []
    big = preset["big"]

    def run(label: str, width: Callable[[], nn.Module], channel: Callable[[], nn.Module] | None,
            calib: torch.Tensor, bench: torch.Tensor) -> None:
        print(f"{label} {bench.shape[-1]}px t_d={args.budget} ...", flush=True)
        torch.manual_seed(0)
        results.append(measure(width(), channel() if channel else None, label=label, budget=args.budget,
                               calib=calib, bench=bench, big=big, preset=preset))
        _print(results[-1:])  # partial results survive an interrupted run
        write_json(args.output, {
            "preset": args.preset, "threads": args.threads, "torch": torch.__version__, "timm": timm.__version__,
            "platform": platform.platform(), "checkpoint": recorded_path(args.checkpoint),
            "channel_checkpoint": recorded_path(args.channel_checkpoint), "results": results,
        })

    if args.checkpoint:
        images = load_images(args.images, size=args.image_size, count=preset["calib"] + big)
        calib, bench = images[: preset["calib"]], images[preset["calib"] :]
        width_dir, channel_dir = args.checkpoint, args.channel_checkpoint
        run(f"trained:{Path(width_dir).name}",
            lambda: timm.create_model(f"local-dir:{width_dir}", pretrained=True),
            (lambda: timm.create_model(f"local-dir:{channel_dir}", pretrained=True)) if channel_dir else None,
            calib, bench)
    if not args.no_random:
        for arch, size in preset["models"]:
            gen = torch.Generator().manual_seed(0)
            calib = torch.randn(preset["calib"], 3, size, size, generator=gen)
            bench = torch.randn(max(big, preset["images1"]), 3, size, size, generator=gen)
            run(f"random:{arch}",
                lambda arch=arch: timm.create_model(arch, budget=args.budget, gate_type="width",
                                                    gate_levels=args.levels),
                lambda arch=arch: timm.create_model(arch, budget=args.budget), calib, bench)
    _print(results)


if __name__ == "__main__":
    main()
