"""ViT throughput with width gates, measured the way ToMe measures it (docs/speed.md, "ViTs").

Images per second of ``vit_small_patch16_224`` at batch 64 and 256, each variant timed interleaved
with the plain timm model (plain, variant, plain, variant, ...; the ratio is the median of the
per-pair ratios, ``benchmarks/_timing.py``), inference mode, fp32 (or ``--dtype bf16`` autocast):

* ``compact``: width gates (``gate_levels`` = the 6 heads of ViT-S), calibrated to ``--budget`` on
  ``--calib`` images, run by ``compact``: each level's inputs on a prefix view of the heads and MLP
  units (``compact/vit_width.py``), per input;
* ``fixed``: ``export_at_budget`` of the same model: a plain timm ViT with one width per block,
  costing ``--budget`` of the dense MACs for every input (``compact/fixed_budget.py``).

The weights and images are random (no download here): throughput does not depend on the weights,
but ``compact``'s does depend on how the inputs spread over the levels, so the JSON records the
level groups per block and the MAC fraction each variant ran at. A trained encoder's spread is
its own; ``fixed`` has one width for every input, so its speed holds for any weights.

Target (the ViT issue): ``fixed`` or ``compact`` >= 1.5x the plain model's images/s at t_d 0.5,
batch 64, CPU. ``--preset small`` is what runs here in minutes (2 threads); ``full`` adds repeats.

Usage:
    python benchmarks/vit_speed.py --preset small                # CPU, 2 threads
    python benchmarks/vit_speed.py --preset smoke                # end-to-end check (tiny ViT)
    python benchmarks/vit_speed.py --preset full --device cuda --dtype bf16   # a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _publish import replace_between
from _timing import interleaved_ratios, write_json

import timm_gated_ssl  # noqa: F401  (registers the gated models)
from timm_gated_ssl import attach_gates, calibrate_budget, detach_gates, export_at_budget, gate_masks
from timm_gated_ssl.compact import compact

ROOT = Path(__file__).resolve().parents[1]
PRESETS: dict[str, dict[str, Any]] = {
    "full": {"model": "vit_small_patch16_224", "size": 224, "levels": 6, "batches": (64, 256), "repeats": 7,
             "calib": 256},
    "small": {"model": "vit_small_patch16_224", "size": 224, "levels": 6, "batches": (64, 256), "repeats": 3,
              "calib": 128},
    "smoke": {"model": "vit_tiny_patch16_224", "size": 64, "levels": 3, "batches": (4,), "repeats": 1, "calib": 8},
}
TARGET = 1.5
"""ToMe's published off-the-shelf numbers (facebookresearch/ToMe README, "Using timm models": timm
ViT-S/16 AugReg weights, ImageNet-1k val, a V100), quoted beside ours; no code of it is used here."""
TOME = {"model": "ViT-S/16 (timm), ToMe r=13, off the shelf", "device": "V100", "plain_images_per_s": 953,
        "tome_images_per_s": 1564, "plain_top1": 81.41, "tome_top1": 79.30,
        "source": "https://github.com/facebookresearch/ToMe#using-timm-models"}


def flops(model: nn.Module, images: torch.Tensor) -> int:
    """FLOPs of one forward counted by torch's FlopCounterMode (an independent check of the export's
    own MAC count)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(images)
    return counter.get_total_flops()


def level_groups(model: nn.Module, images: torch.Tensor) -> float:
    """Mean number of distinct head widths per block on ``images``: the chunks ``compact`` runs."""
    with torch.inference_mode(), timm_gated_ssl.gate_mode(model, "gated"):
        model(images)
        counts = [int(mask[0].sum(1).unique().numel()) for mask in gate_masks(model).values()]
    timm_gated_ssl.clear_gate_masks(model)
    return sum(counts) / len(counts)


def build(preset: dict[str, Any], budget: float, device: torch.device) -> dict[str, Any]:
    """The plain model, its width-gated copy calibrated to ``budget`` run by ``compact``, and the
    fixed-budget export; with the MAC fraction each runs at."""
    torch.manual_seed(0)
    plain = timm.create_model(preset["model"], num_classes=0, img_size=preset["size"]).eval()
    gated = attach_gates(copy.deepcopy(plain), budget=budget, gate_type="width", levels=preset["levels"]).eval()
    gen = torch.Generator().manual_seed(0)
    size = preset["size"]
    calib = torch.randn(preset["calib"], 3, size, size, generator=gen)
    calibration = calibrate_budget(gated, [calib], budget)
    export = export_at_budget(gated, [calib], budget=budget)
    info = {"gated_mac_fraction": calibration.mac_fraction, "fixed_mac_fraction": export.mac_fraction,
            "fixed_widths": {k: list(v) for k, v in export.widths.items()},
            "fixed_flops_fraction": flops(export.model, calib[:1]) / flops(plain, calib[:1]),
            "level_groups_per_block": level_groups(gated, calib)}
    with timm_gated_ssl.gate_mode(gated, "gated"):
        fast = compact(gated)
    return {"plain": plain.to(device), "compact": fast.to(device), "fixed": export.model.eval().to(device),
            "info": info}


def measure(preset: dict[str, Any], *, budget: float, device: torch.device, dtype: str) -> dict[str, Any]:
    built = build(preset, budget, device)
    size = preset["size"]
    result: dict[str, Any] = {"model": preset["model"], "img_size": size, "budget": budget, **built["info"]}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def call(module: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
        def run() -> Any:
            with autocast:
                out = module(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return out
        return run

    for batch in preset["batches"]:
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
        timed = interleaved_ratios(call(built["plain"], x), {k: call(built[k], x) for k in ("compact", "fixed")},
                                   repeats=preset["repeats"], warmup=1)
        plain_ips = batch / timed["baseline"]["seconds"]
        result[f"batch{batch}"] = {
            "plain_images_per_s": plain_ips,
            **{k: {"speedup": 1.0 / timed[k]["ratio"], "images_per_s": batch / timed[k]["seconds"]}
               for k in ("compact", "fixed")},
        }
    return result


def aims(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's target at batch 64 (where measured), per variant."""
    found = []
    if "batch64" in result:
        for variant in ("compact", "fixed"):
            speedup = result["batch64"][variant]["speedup"]
            found.append({"aim": f"{result['model']} t_d {result['budget']:g}, batch 64, {variant}: "
                                 f">= {TARGET}x the plain model's images/s",
                          "value": round(speedup, 3), "target": TARGET, "met": speedup >= TARGET})
    return found


def table(result: dict[str, Any]) -> str:
    lines = ["| batch | plain (img/s) | compact (img/s) | compact speed-up | fixed (img/s) | fixed speed-up |",
             "|---|---|---|---|---|---|"]
    for key in sorted((k for k in result if k.startswith("batch")), key=lambda k: int(k[5:])):
        r = result[key]
        lines.append(f"| {key[5:]} | {r['plain_images_per_s']:.1f} | {r['compact']['images_per_s']:.1f} "
                     f"| {r['compact']['speedup']:.2f}x | {r['fixed']['images_per_s']:.1f} "
                     f"| {r['fixed']['speedup']:.2f}x |")
    return "\n".join(lines)


def tome_line() -> str:
    """ToMe's published row, in the same units."""
    return (f"ToMe, published ({TOME['model']}, {TOME['device']}): {TOME['plain_images_per_s']} -> "
            f"{TOME['tome_images_per_s']} images/s ({TOME['tome_images_per_s'] / TOME['plain_images_per_s']:.2f}x) "
            f"for {TOME['tome_top1'] - TOME['plain_top1']:+.2f} points of ImageNet top-1, without training "
            f"([source]({TOME['source']})).")


def publish(payload: dict[str, Any]) -> None:
    """docs/results/speed/vit_speed_<device>.json and the table between the markers of docs/speed.md."""
    device = "gpu" if payload["device"].startswith("cuda") else "cpu"
    write_json(ROOT / "docs" / "results" / "speed" / f"vit_speed_{device}.json", payload)
    rows = []
    for path in sorted((ROOT / "docs" / "results" / "speed").glob("vit_speed_*.json")):
        found = json.loads(path.read_text())
        r = found["result"]
        rows.append(f"{r['model']}, t_d {r['budget']:g} ({found['device_name']}, {found['threads']} threads, "
                    f"{found['dtype']}; gated at {r['gated_mac_fraction']:.3f}, fixed at {r['fixed_mac_fraction']:.3f} "
                    f"of the dense MACs; `{found['command']}`, "
                    f"[{path.relative_to(ROOT / 'docs').as_posix()}]({path.relative_to(ROOT / 'docs').as_posix()})):"
                    f"\n\n{table(r)}\n")
    text = "\n".join(rows) + "\n" + tome_line()
    replace_between(ROOT / "docs" / "speed.md", "vit_speed", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--output", default="benchmarks/out/vit_speed.json")
    parser.add_argument("--publish", action="store_true",
                        help="write docs/results/speed/vit_speed_<cpu|gpu>.json and the table in docs/speed.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    preset = PRESETS[args.preset]
    result = measure(preset, budget=args.budget, device=device, dtype=args.dtype)
    found = aims(result)
    print(f"{result['model']} {result['img_size']} px, t_d {args.budget}: gated at {result['gated_mac_fraction']:.3f}, "
          f"fixed at {result['fixed_mac_fraction']:.3f} of the dense MACs; "
          f"{result['level_groups_per_block']:.2f} level groups per block\n")
    print(table(result))
    for aim in found:
        print(f"{aim['aim']}: {aim['value']} ({'met' if aim['met'] else 'missed'})")
    payload = {
        "preset": args.preset, "threads": args.threads, "device": str(device), "dtype": args.dtype,
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {platform.machine()}",
        "torch": torch.__version__, "timm": timm.__version__, "platform": platform.platform(),
        "command": "python benchmarks/vit_speed.py " + " ".join(sys.argv[1:]), "aims": found, "result": result,
    }
    write_json(args.output, payload)
    print(tome_line())
    if args.publish:
        publish(payload)


if __name__ == "__main__":
    main()
