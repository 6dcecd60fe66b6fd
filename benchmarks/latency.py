"""Real speed of gated ResNets on CPU: dense, masked gated, compact, static export, sliced reference.

For resnet18 at 224 px and the CIFAR-stem resnet18 at 32 px, at t_d 0.1 / 0.3 / 0.5, the gates are
set to the budget (``calibrate_budget`` when the library has it; otherwise a bisection of one shared
logit offset until ``count_macs`` on the calibration images gives ``t_d`` of the dense MACs, done
here) and every variant is timed as a ratio against the plain timm model, interleaved
(plain, variant, plain, variant, ...), reporting the median of the per-pair ratios:

* ``dense``: the gated model in dense mode.       * ``masked``: gated mode (masks multiply zeros in).
* ``compact``: ``compact(model)``, kept channels only (per-image gates still run).
* ``static``: ``export_static(model, calibration)``: channels that never fired removed, no gates.
* ``sliced``: a plain network physically cut to the same per-block widths as ``compact`` uses
  (batch 1: the benchmark image's kept counts; batch N: the batch-mean kept counts), no gates: the
  achievable limit for per-sample slicing.

At batch N it also compares ``compact``'s batch strategies (union / per_sample / group).
Weights are random (timm init, gates calibrated on random images); see ``docs/speed.md``.

Usage:
    python benchmarks/latency.py                    # small preset, minutes on 2 threads
    python benchmarks/latency.py --preset full
    python benchmarks/latency.py --compile          # also try torch.compile on each variant
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved_ratios, write_json

import timm_gated_ssl  # noqa: F401
from timm_gated_ssl import detach_gates, gate_masks, gate_mode, iter_gates, set_gate_mode
from timm_gated_ssl.compact import compact, export_static

PRESETS: dict[str, dict[str, Any]] = {
    # (model, image size, big batch), budgets, repeats at batch 1 / big batch, calibration images
    "small": {"models": [("gated_resnet18", 224, 8), ("gated_resnet18_cifar", 32, 64)],
              "budgets": [0.1, 0.3, 0.5], "repeats1": 5, "repeatsN": 3, "inner1": 2, "calib": 16},
    "full": {"models": [("gated_resnet18", 224, 64), ("gated_resnet18_cifar", 32, 64)],
             "budgets": [0.1, 0.3, 0.5], "repeats1": 21, "repeatsN": 7, "inner1": 5, "calib": 64},
}


def _mac_fraction(model: torch.nn.Module, images: torch.Tensor) -> float:
    from timm_gated_ssl.compute import count_macs

    return count_macs(model, images).mean_ratio


def calibrate(model: torch.nn.Module, images: torch.Tensor, target: float) -> tuple[float, str]:
    """Set the gates to ``target`` of the dense MACs; returns (realised fraction, method)."""
    try:
        from timm_gated_ssl import calibrate_budget  # type: ignore[attr-defined]
    except ImportError:
        calibrate_budget = None
    if calibrate_budget is not None:
        calibrate_budget(model, [images], target)
        return _mac_fraction(model, images), "calibrate_budget"
    lo, hi = -20.0, 20.0  # fraction decreases as the offset grows
    for _ in range(18):
        mid = (lo + hi) / 2
        for _, gate in iter_gates(model):
            gate.logit_offset.fill_(mid)
        frac = _mac_fraction(model, images)
        if abs(frac - target) < 0.005:
            break
        lo, hi = (mid, hi) if frac > target else (lo, mid)
    return frac, "bisection of a shared logit offset (benchmark-local)"


def _kept_widths(model: torch.nn.Module, images: torch.Tensor) -> list[list[int]]:
    with torch.no_grad(), gate_mode(model, "gated"):
        model(images)
    return [[max(1, round(float(m.sum(1).mean()))) for m in masks] for masks in gate_masks(model).values()]


def _union_fraction(model: torch.nn.Module, images: torch.Tensor) -> float:
    with torch.no_grad(), gate_mode(model, "gated"):
        model(images)
    kept = total = 0
    for masks in gate_masks(model).values():
        for m in masks:
            kept += int(m.any(0).sum())
            total += m.shape[1]
    return kept / total


def _sliced(base: str, kwargs: dict[str, Any], widths: list[list[int]]) -> torch.nn.Module:
    return timm.create_model("static_resnet", base=base, base_kwargs=kwargs, widths=widths).eval()


def _try_compile(fn: torch.nn.Module, x: torch.Tensor) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        compiled = torch.compile(fn)
        with torch.inference_mode():
            for _ in range(3):
                out = compiled(x)
            ref = fn(x)
        return {"ok": True, "first_calls_s": time.perf_counter() - start,
                "max_abs_diff": float((out - ref).abs().max()), "fn": compiled}
    except Exception as e:  # noqa: BLE001  (report, never fail the benchmark)
        return {"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}


def bench_case(arch: str, size: int, big: int, budget: float, preset: dict[str, Any],
               use_compile: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    model = timm.create_model(arch, budget=budget).eval()
    base = arch.removeprefix("gated_")
    calib = torch.randn(preset["calib"], 3, size, size)
    frac, method = calibrate(model, calib, budget)
    plain = detach_gates(copy.deepcopy(model)).eval()
    dense = model
    masked = copy.deepcopy(model)
    set_gate_mode(masked, "gated")
    fast = compact(model)
    static = export_static(model, [calib])
    x1 = torch.randn(1, 3, size, size)
    xN = torch.randn(big, 3, size, size)
    result: dict[str, Any] = {
        "model": arch, "img_size": size, "budget": budget, "calibration": method,
        "mac_fraction_calib": frac, "mac_fraction_bench1": _mac_fraction(model, x1),
        "mac_fraction_benchN": _mac_fraction(model, xN), "static_mac_fraction": static.mac_fraction,
        "union_width_fraction_batchN": _union_fraction(model, xN),
    }
    sliced1 = _sliced(base, {}, _kept_widths(model, x1))
    slicedN = _sliced(base, {}, _kept_widths(model, xN))
    variants1 = {"dense": dense, "masked": masked, "compact": fast, "static": static.model, "sliced": sliced1}
    r1 = interleaved_ratios(lambda: plain(x1), {k: (lambda m=m: m(x1)) for k, m in variants1.items()},
                            repeats=preset["repeats1"], inner=preset["inner1"])
    strategies = {f"compact_{s}": compact(model, batch_strategy=s) for s in ("per_sample", "group")}
    variantsN = {"dense": dense, "masked": masked, "compact": fast, **strategies,
                 "static": static.model, "sliced": slicedN}
    rN = interleaved_ratios(lambda: plain(xN), {k: (lambda m=m: m(xN)) for k, m in variantsN.items()},
                            repeats=preset["repeatsN"], warmup=1)
    result["batch1"] = r1
    result[f"batch{big}"] = rN
    result["big_batch"] = big
    if use_compile:
        comp = {}
        for name, m in {"plain": plain, "dense": dense, "masked": masked, "compact": fast,
                        "static": static.model}.items():
            torch._dynamo.reset()
            info = _try_compile(m, x1)
            fn = info.pop("fn", None)
            if fn is not None:
                info["ratio_vs_eager_plain"] = interleaved_ratios(
                    lambda: plain(x1), {"c": lambda fn=fn: fn(x1)}, repeats=5, inner=preset["inner1"]
                )["c"]["ratio"]
            comp[name] = info
        result["compile_batch1"] = comp
    return result


def _print(results: list[dict[str, Any]]) -> None:
    cols = ["dense", "masked", "compact", "static", "sliced"]
    print("\nratios vs the plain timm model (median of interleaved pairs; lower is faster)")
    print(f"{'model':22s} {'t_d':>4s} {'MACs':>5s} {'batch':>5s} " + " ".join(f"{c:>8s}" for c in cols)
          + f" {'cmp/slc':>8s} {'cmp/dns':>8s}")
    for r in results:
        for key in ("batch1", f"batch{r['big_batch']}"):
            row = r[key]
            frac = r["mac_fraction_bench1"] if key == "batch1" else r["mac_fraction_benchN"]
            vals = " ".join(f"{row[c]['ratio']:8.3f}" for c in cols)
            print(f"{r['model']:22s} {r['budget']:4.1f} {frac:5.2f} {key[5:]:>5s} {vals} "
                  f"{row['compact']['ratio'] / row['sliced']['ratio']:8.3f} "
                  f"{row['compact']['ratio'] / row['dense']['ratio']:8.3f}")
    print("\nbatch strategies of compact at the big batch (ratio vs plain); union width fraction")
    for r in results:
        row = r[f"batch{r['big_batch']}"]
        print(f"{r['model']:22s} {r['budget']:4.1f} b{r['big_batch']:<3d} union {row['compact']['ratio']:.3f}"
              f"  per_sample {row['compact_per_sample']['ratio']:.3f}  group {row['compact_group']['ratio']:.3f}"
              f"  union-width {r['union_width_fraction_batchN']:.2f}  static MACs {r['static_mac_fraction']:.2f}")
    if any("compile_batch1" in r for r in results):
        print("\ntorch.compile at batch 1")
        for r in results:
            for name, info in r.get("compile_batch1", {}).items():
                print(f"{r['model']:22s} {r['budget']:4.1f} {name:8s} "
                      + (f"ok, ratio vs eager plain {info['ratio_vs_eager_plain']:.3f}, first 3 calls "
                         f"{info['first_calls_s']:.1f}s" if info["ok"] else f"FAILED {info['error']}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budgets", type=float, nargs="*", default=None)
    parser.add_argument("--models", nargs="*", default=None, help="subset, e.g. gated_resnet18_cifar")
    parser.add_argument("--compile", action="store_true", help="also try torch.compile (batch 1)")
    parser.add_argument("--output", default="benchmarks/out/latency.json")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    torch.set_num_threads(args.threads)
    results = []
    for arch, size, big in preset["models"]:
        if args.models and arch not in args.models:
            continue
        for budget in args.budgets or preset["budgets"]:
            print(f"{arch} {size}px t_d={budget} ...", flush=True)
            results.append(bench_case(arch, size, big, budget, preset, args.compile))
            _print(results[-1:])  # partial results survive an interrupted run
            write_json(args.output, {
                "preset": args.preset, "threads": args.threads, "torch": torch.__version__,
                "timm": timm.__version__, "platform": platform.platform(), "results": results,
            })
    _print(results)


if __name__ == "__main__":
    main()
