"""Real speed of gated models on CPU: dense, masked gated, compact, static export, sliced reference.

For resnet18 at 224 px and the CIFAR-stem resnet18 at 32 px (and, with ``--checkpoint``, a trained
co-trained checkpoint on its own held-out images), at t_d 0.1 / 0.3 / 0.5, the gates are calibrated
to the budget with ``calibrate_budget`` and every variant is timed as a ratio against the plain
timm model, interleaved (plain, variant, plain, variant, ...), reporting the median of the per-pair
ratios (``benchmarks/_timing.py``):

* ``dense``: the gated model in dense mode.       * ``masked``: gated mode (masks multiply zeros in).
* ``compact``: ``compact(model)``, kept channels only (per-image gates still run).
* ``static``: ``export_static(model, calibration)``: channels that never fired removed, no gates.
* ``sliced``: a plain network physically cut to each image's kept per-block widths, no gates: the
  achievable limit for per-image slicing (batch N: cut to the batch-mean widths).

Batch 1 cycles through several images per timed call (masks differ per image); batch N also
compares ``compact``'s batch strategies (union / per_sample / group). ``--compile`` also times
``torch.compile`` of each variant at batch 1 (relative to the eager plain model). Random-weight
models see random images; see ``docs/speed.md`` for the measured tables.

Usage:
    python benchmarks/latency.py                    # small preset, minutes on 2 threads
    python benchmarks/latency.py --preset full
    python benchmarks/latency.py --checkpoint runs/td0.3 --images fashion_mnist
    python benchmarks/latency.py --preset vit --compile
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import eval_images
from _timing import interleaved_ratios, latency_preset, write_json

import timm_gated_ssl  # noqa: F401  (registers the gated models)
from timm_gated_ssl import calibrate_budget, detach_gates, gate_masks, gate_mode, set_gate_mode
from timm_gated_ssl.compact import compact, export_static
from timm_gated_ssl.compact.static_common import base_of
from timm_gated_ssl.compact.static_vit import is_vit
from timm_gated_ssl.compute import count_macs

PRESETS: dict[str, dict[str, Any]] = {
    # (model, image size, big batch), budgets, repeats at batch 1 / big batch, images per batch-1
    # call, calibration images
    "small": {"models": [("gated_resnet18", 224, 8), ("gated_resnet18_cifar", 32, 64)],
              "budgets": [0.1, 0.3, 0.5], "repeats1": 7, "repeatsN": 3, "images1": 4, "calib": 32},
    "full": {"models": [("gated_resnet18", 224, 64), ("gated_resnet18_cifar", 32, 64)],
             "budgets": [0.1, 0.3, 0.5], "repeats1": 21, "repeatsN": 7, "images1": 8, "calib": 128},
    "smoke": {"models": [("gated_resnet18_cifar", 16, 4)], "budgets": [0.3], "repeats1": 1, "repeatsN": 1,
              "images1": 2, "calib": 8},
    "vit": {"models": [("gated_vit_tiny_patch16_224", 224, 8), ("gated_vit_tiny_patch4_32", 32, 64)],
            "budgets": [0.3], "repeats1": 7, "repeatsN": 3, "images1": 4, "calib": 32},
}
COLUMNS = ["dense", "masked", "compact", "static", "sliced"]


def _masks(model: nn.Module, images: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """The gated model's masks on ``images``, per block in forward order."""
    with torch.no_grad(), gate_mode(model, "gated"):
        model(images)
    return list(gate_masks(model).values())


def _widths(masks: list[tuple[torch.Tensor, ...]]) -> list[list[int]]:
    """Kept channels per block and gated width (batch-mean, at least 1)."""
    return [[max(1, round(float(m.float().sum(1).mean()))) for m in block] for block in masks]


def _union_fraction(masks: list[tuple[torch.Tensor, ...]]) -> float:
    """Fraction of the gated channels that any image of the batch keeps."""
    kept = sum(int(m.any(0).sum()) for block in masks for m in block)
    return kept / sum(m.shape[1] for block in masks for m in block)


def _sliced(model: nn.Module, widths: list[list[int]]) -> nn.Module:
    """A plain network of the same family cut to ``widths`` (random weights: timing only)."""
    base, kwargs = base_of(model)
    entry = "static_vit" if is_vit(model) else "static_resnet"
    return timm.create_model(entry, base=base, base_kwargs=kwargs, widths=widths).eval()


def _try_compile(fn: nn.Module, xs: list[torch.Tensor]) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        compiled = torch.compile(fn)
        with torch.inference_mode():
            outs = [compiled(x) for x in xs]
            refs = [fn(x) for x in xs]
        return {"ok": True, "compile_and_first_calls_s": time.perf_counter() - start,
                "max_abs_diff": max(float((o - r).abs().max()) for o, r in zip(outs, refs)), "fn": compiled}
    except Exception as e:  # noqa: BLE001  (report, never fail the benchmark)
        return {"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}


def _cycle(module: Callable[[torch.Tensor], Any], xs: list[torch.Tensor]) -> Callable[[], Any]:
    return lambda: [module(x) for x in xs]


def measure(model: nn.Module, *, label: str, budget: float, calib: torch.Tensor, bench: torch.Tensor,
            big: int, preset: dict[str, Any], use_compile: bool) -> dict[str, Any]:
    """Calibrate ``model`` to ``budget`` on ``calib`` and time every variant on ``bench`` images."""
    model.eval()
    cal = calibrate_budget(model, [calib], budget)
    plain = detach_gates(copy.deepcopy(model)).eval()
    masked = copy.deepcopy(model)
    set_gate_mode(masked, "gated")
    fast = compact(model)
    static = export_static(model, [calib])
    xs = [bench[i : i + 1] for i in range(preset["images1"])]
    xN = bench.repeat(-(-big // bench.shape[0]), 1, 1, 1)[:big]
    masksN = _masks(model, xN)
    result: dict[str, Any] = {
        "model": label, "img_size": int(bench.shape[-1]), "budget": budget,
        "mac_fraction_calib": cal.mac_fraction,
        "mac_fraction_bench1": sum(count_macs(model, x).mean_ratio for x in xs) / len(xs),
        "mac_fraction_benchN": count_macs(model, xN).mean_ratio,
        "static_mac_fraction": static.mac_fraction,
        "union_width_fraction_batchN": _union_fraction(masksN), "big_batch": big,
    }
    sliced1 = [_sliced(model, _widths(_masks(model, x))) for x in xs]
    variants1: dict[str, Callable[[], Any]] = {
        name: _cycle(m, xs) for name, m in
        {"dense": model, "masked": masked, "compact": fast, "static": static.model}.items()
    }
    variants1["sliced"] = lambda: [s(x) for s, x in zip(sliced1, xs)]
    result["batch1"] = interleaved_ratios(_cycle(plain, xs), variants1, repeats=preset["repeats1"])
    strategies = {f"compact_{s}": compact(model, batch_strategy=s) for s in ("per_sample", "group")}
    variantsN = {"dense": model, "masked": masked, "compact": fast, **strategies,
                 "static": static.model, "sliced": _sliced(model, _widths(masksN))}
    result[f"batch{big}"] = interleaved_ratios(
        lambda: plain(xN), {k: (lambda m=m: m(xN)) for k, m in variantsN.items()},
        repeats=preset["repeatsN"], warmup=1,
    )
    if use_compile:
        result["compile_batch1"] = _compile_all(
            {"plain": plain, "dense": model, "masked": masked, "compact": fast, "static": static.model},
            plain, xs,
        )
    return result


def _compile_all(modules: dict[str, nn.Module], plain: nn.Module, xs: list[torch.Tensor]) -> dict[str, Any]:
    out = {}
    for name, m in modules.items():
        torch._dynamo.reset()
        info = _try_compile(m, xs)
        fn = info.pop("fn", None)
        if fn is not None:
            info["ratio_vs_eager_plain"] = interleaved_ratios(
                _cycle(plain, xs), {"c": _cycle(fn, xs)}, repeats=5
            )["c"]["ratio"]
        out[name] = info
    return out


def load_images(spec: str, *, size: int | None, count: int) -> torch.Tensor:
    """``count`` evaluation images: a saved ``(N, 3, H, W)`` tensor (``.pt``) or a dataset preset's
    test split through the library's evaluation transform."""
    if spec.endswith(".pt"):
        return torch.load(spec)[:count]
    return eval_images(spec, split="test", count=count, size=size)[0]


def _print(results: list[dict[str, Any]]) -> None:
    print("\nratios vs the plain timm model (median of interleaved pairs; lower is faster)")
    print(f"{'model':28s} {'t_d':>4s} {'MACs':>5s} {'batch':>5s} " + " ".join(f"{c:>8s}" for c in COLUMNS)
          + f" {'cmp/slc':>8s} {'cmp/dns':>8s}")
    for r in results:
        for key in ("batch1", f"batch{r['big_batch']}"):
            row = r[key]
            frac = r["mac_fraction_bench1"] if key == "batch1" else r["mac_fraction_benchN"]
            vals = " ".join(f"{row[c]['ratio']:8.3f}" for c in COLUMNS)
            print(f"{r['model']:28s} {r['budget']:4.1f} {frac:5.2f} {key[5:]:>5s} {vals} "
                  f"{row['compact']['ratio'] / row['sliced']['ratio']:8.3f} "
                  f"{row['compact']['ratio'] / row['dense']['ratio']:8.3f}")
    print("\nbatch strategies of compact at the big batch (ratio vs plain); union width fraction")
    for r in results:
        row = r[f"batch{r['big_batch']}"]
        print(f"{r['model']:28s} {r['budget']:4.1f} b{r['big_batch']:<3d} union {row['compact']['ratio']:.3f}"
              f"  per_sample {row['compact_per_sample']['ratio']:.3f}  group {row['compact_group']['ratio']:.3f}"
              f"  union-width {r['union_width_fraction_batchN']:.2f}  static MACs {r['static_mac_fraction']:.2f}")
    if any("compile_batch1" in r for r in results):
        print("\ntorch.compile at batch 1 (ratio vs the eager plain model)")
        for r in results:
            for name, info in r.get("compile_batch1", {}).items():
                print(f"{r['model']:28s} {r['budget']:4.1f} {name:8s} "
                      + (f"ok {info['ratio_vs_eager_plain']:.3f}, compile + first calls "
                         f"{info['compile_and_first_calls_s']:.1f}s, max |diff| {info['max_abs_diff']:.1e}"
                         if info["ok"] else f"FAILED {info['error']}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budgets", type=float, nargs="*", default=None)
    parser.add_argument("--models", nargs="*", default=None,
                        help="subset of the preset's models (e.g. gated_resnet18_cifar); none with --checkpoint only")
    parser.add_argument("--checkpoint", default=None, help="a saved gated model folder (save_for_hf / recipe output)")
    parser.add_argument("--images", default=None,
                        help="the checkpoint's held-out images: a dataset preset (fashion_mnist) or a .pt tensor")
    parser.add_argument("--image_size", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile at batch 1")
    parser.add_argument("--repeats", type=int, nargs=2, default=None, metavar=("BATCH1", "BATCHN"),
                        help="override the preset's interleaved repeats at batch 1 and at the big batch")
    parser.add_argument("--output", default="benchmarks/out/latency.json")
    args = parser.parse_args()
    preset = latency_preset(parser, args, PRESETS)
    results: list[dict[str, Any]] = []

    def run(label: str, make: Callable[[], nn.Module], calib: torch.Tensor, bench: torch.Tensor,
            big: int, budget: float) -> None:
        print(f"{label} {bench.shape[-1]}px t_d={budget} ...", flush=True)
        torch.manual_seed(0)
        results.append(measure(make(), label=label, budget=budget, calib=calib, bench=bench, big=big,
                               preset=preset, use_compile=args.compile))
        _print(results[-1:])  # partial results survive an interrupted run
        write_json(args.output, {
            "preset": args.preset, "threads": args.threads, "torch": torch.__version__,
            "timm": timm.__version__, "platform": platform.platform(), "results": results,
        })

    budgets = args.budgets or preset["budgets"]
    if args.checkpoint:
        images = load_images(args.images, size=args.image_size, count=preset["calib"] + 64)
        calib, bench = images[: preset["calib"]], images[preset["calib"] :]
        for budget in budgets:
            run(f"trained:{Path(args.checkpoint).name}",
                lambda: timm.create_model(f"local-dir:{args.checkpoint}", pretrained=True),
                calib, bench, 64, budget)
    for arch, size, big in preset["models"]:
        if (args.models is not None or args.checkpoint) and arch not in (args.models or []):
            continue
        gen = torch.Generator().manual_seed(0)
        calib = torch.randn(preset["calib"], 3, size, size, generator=gen)
        bench = torch.randn(max(big, preset["images1"]), 3, size, size, generator=gen)
        for budget in budgets:
            run(arch, lambda arch=arch, budget=budget: timm.create_model(arch, budget=budget),
                calib, bench, big, budget)
    _print(results)


if __name__ == "__main__":
    main()
