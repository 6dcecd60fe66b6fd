"""onnxruntime CPU latency: the static export vs the dense model (and the gated-mode export).

For a trained co-trained checkpoint (``--checkpoint``, e.g. the Fashion-MNIST one of
docs/reproduce.md, on its own images) and for resnet18 at 224 px (random weights, random images),
the gates are calibrated to ``t_d`` (default 0.3) with ``calibrate_budget``, and three ONNX files
are exported with ``timm_gated_ssl.export_onnx`` (dynamic batch):

* ``dense``: the plain network (gates detached, same weights): the baseline;
* ``static``: ``export_static(model, calibration).model``: channels the gates never used removed;
* ``gated``: the gated mode with its masks in the graph (onnxruntime computes every channel: this
  row shows the cost of exporting the gates, not a saving).

Each variant is timed against the dense session, interleaved (dense, variant, dense, variant, ...),
reporting the median of the per-pair ratios (``benchmarks/_timing.py``), at batch 1 (cycling through
several images) and at a larger batch. Prints a Markdown table and writes JSON. See docs/speed.md.

Usage:
    python benchmarks/onnx_latency.py --checkpoint runs/td0.3 --images fashion_mnist   # both rows
    python benchmarks/onnx_latency.py --preset smoke --repeats 1 1                   # a quick check
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import eval_images
from _timing import interleaved_ratios, latency_preset, ort_session, write_json

import timm_gated_ssl  # noqa: F401  (registers the gated models)
from timm_gated_ssl import (
    calibrate_budget,
    count_macs,
    detach_gates,
    export_onnx,
    export_static,
    gate_mode,
)
from timm_gated_ssl.hub import load_run

PRESETS: dict[str, dict[str, Any]] = {
    # (model, image size, big batch); repeats at batch 1 / big batch; images per batch-1 call; calibration
    "small": {"models": [("gated_resnet18", 224, 8)], "repeats1": 15, "repeatsN": 5, "images1": 8, "calib": 64},
    "full": {"models": [("gated_resnet18", 224, 32)], "repeats1": 31, "repeatsN": 9, "images1": 8, "calib": 256},
    "smoke": {"models": [("gated_resnet18_cifar", 16, 4)], "repeats1": 1, "repeatsN": 1, "images1": 2, "calib": 8},
}
VARIANTS = ("static", "gated")


def measure(model: nn.Module, *, label: str, budget: float, calib: torch.Tensor, bench: torch.Tensor,
            big: int, preset: dict[str, Any], threads: int, folder: Path) -> dict[str, Any]:
    """Calibrate ``model`` to ``budget``, export the three variants and time them in onnxruntime."""
    model.eval()
    cal = calibrate_budget(model, [calib], budget)
    size = (3, int(bench.shape[-2]), int(bench.shape[-1]))
    static = export_static(model, [calib])
    paths = {"dense": folder / f"{label}_dense.onnx", "static": folder / f"{label}_static.onnx",
             "gated": folder / f"{label}_gated.onnx"}
    export_onnx(detach_gates(copy.deepcopy(model)).eval(), paths["dense"], input_size=size)
    export_onnx(static.model.eval(), paths["static"], input_size=size)
    with gate_mode(model, "gated"):
        export_onnx(model, paths["gated"], input_size=size)
    sessions = {name: ort_session(path, threads) for name, path in paths.items()}
    xs = [bench[i : i + 1].numpy() for i in range(preset["images1"])]
    x_big = bench.repeat(-(-big // bench.shape[0]), 1, 1, 1)[:big].numpy()

    def call(name: str, batches: list[Any]) -> Any:
        session = sessions[name]
        return lambda: [session.run(None, {"images": x}) for x in batches]

    with torch.no_grad(), gate_mode(model, "gated"):
        reference = model(torch.from_numpy(xs[0]))
    gated_diff = float((torch.from_numpy(sessions["gated"].run(None, {"images": xs[0]})[0]) - reference).abs().max())
    result: dict[str, Any] = {
        "model": label, "img_size": size[-1], "budget": budget, "threads": threads, "big_batch": big,
        "mac_fraction_calib": cal.mac_fraction,
        "mac_fraction_bench": count_macs(model, torch.from_numpy(x_big)).mean_ratio,
        "static_mac_fraction": static.mac_fraction,
        "gated_export_max_abs_diff": gated_diff,
    }
    for key, batches, repeats in (("batch1", xs, preset["repeats1"]), (f"batch{big}", [x_big], preset["repeatsN"])):
        timing = interleaved_ratios(call("dense", batches), {v: call(v, batches) for v in VARIANTS},
                                    repeats=repeats)
        result[key] = {"dense_s_per_call": timing["baseline"]["seconds"] / len(batches),
                       **{v: {"ratio": timing[v]["ratio"]} for v in VARIANTS}}
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| model | px | t_d | static MACs | batch | dense (ms) | static / dense | gated export / dense |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for key in ("batch1", f"batch{r['big_batch']}"):
            row = r[key]
            lines.append(f"| {r['model']} | {r['img_size']} | {r['budget']:g} | {r['static_mac_fraction']:.3f} "
                         f"| {key[5:]} | {1e3 * row['dense_s_per_call']:.2f} | {row['static']['ratio']:.3f} "
                         f"| {row['gated']['ratio']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--budget", type=float, default=0.3)
    parser.add_argument("--checkpoint", default=None, help="a trained gated checkpoint folder")
    parser.add_argument("--images", default=None, help="its dataset preset (e.g. fashion_mnist)")
    parser.add_argument("--image_size", type=int, default=None)
    parser.add_argument("--no_random", action="store_true", help="skip the preset's random-weight models")
    parser.add_argument("--repeats", type=int, nargs=2, default=None, metavar=("BATCH1", "BATCHN"))
    parser.add_argument("--output", default="benchmarks/out/onnx_latency.json")
    args = parser.parse_args()
    preset = latency_preset(parser, args, PRESETS, images="a dataset preset such as fashion_mnist")
    results: list[dict[str, Any]] = []
    import onnxruntime

    header = {"preset": args.preset, "threads": args.threads, "torch": torch.__version__,
              "onnxruntime": onnxruntime.__version__, "platform": platform.platform()}
    with tempfile.TemporaryDirectory(prefix="onnx_latency_") as tmp:
        def run(label: str, model: nn.Module, calib: torch.Tensor, bench: torch.Tensor, big: int) -> None:
            print(f"{label} {bench.shape[-1]}px t_d={args.budget} ...", flush=True)
            torch.manual_seed(0)
            results.append(measure(model, label=label, budget=args.budget, calib=calib, bench=bench, big=big,
                                   preset=preset, threads=args.threads, folder=Path(tmp)))
            write_json(args.output, {**header, "results": results})  # partial results survive

        if args.checkpoint:
            loaded = load_run(args.checkpoint)  # its config.yaml gives the training resolution
            size = args.image_size or loaded.pretrain_config.get("image_size")
            calib = eval_images(args.images, split="train", count=preset["calib"], size=size, seed=0)[0]
            bench = eval_images(args.images, split="test", count=64, size=size)[0]
            run(f"trained_{Path(args.checkpoint).name}", loaded.model, calib, bench, 64)
        for arch, size, big in [] if args.no_random else preset["models"]:
            gen = torch.Generator().manual_seed(0)
            calib = torch.randn(preset["calib"], 3, size, size, generator=gen)
            bench = torch.randn(max(big, preset["images1"]), 3, size, size, generator=gen)
            run(arch, timm.create_model(arch, budget=args.budget), calib, bench, big)
    print("\nonnxruntime CPU latency, ratios vs the dense export (median of interleaved pairs; lower is faster)")
    print(markdown(results))


if __name__ == "__main__":
    main()
