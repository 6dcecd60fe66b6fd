"""Training-step cost of co-training, as ratios measured in one run (the pretraining recipe).

1. ``dual / vanilla``: one VICReg-dual step (gated pass on view 1, dense pass on view 2, budget
   losses) against one vanilla VICReg step (two dense passes) at the same batch and backbone, in
   fp32 and bf16 autocast, interleaved, median of per-pair ratios (target <= 1.10).
2. ``recipe / bare loop``: images/s of ``recipes/pretrain.py`` (data loading, augmentation,
   Accelerate, logging) against a bare loop over the same model, loss and optimizer on
   pre-augmented tensors (target >= 0.97), both in steady state (the recipe's rate is the
   difference of a long and a short run, the bare loop's excludes one warm-up step), once per
   augmentation path (``batched``: the whole
   batch at once with per-image parameters, the default; ``per_image``: torchvision v2 image by
   image). Rounds are interleaved: bare, recipe (batched), bare, recipe (per_image), bare, ...;
   each recipe run is divided by the mean of the bare loops just before and after it, and the
   median over rounds is reported, because this machine drifts.
   Each recipe run also reports ``data_fraction``: the part of its training time spent waiting
   for the next batch (reading and, with ``num_workers: 0``, augmenting), timed within the same
   steps and so free of the machine's drift (target <= 0.03, the 0.97 above).
3. ``augmentation alone``: seconds to augment one batch two ways, batched / per image,
   interleaved, median of per-pair ratios.

Usage:
    python benchmarks/train_step.py                 # small preset (CPU, minutes)
    python benchmarks/train_step.py --preset full   # GPU-sized batch and resolution
    python benchmarks/train_step.py --precision fp32  # CPUs without bf16 kernels (AVX2)
    python benchmarks/train_step.py --preset small --repeats 1 --rounds 1 --recipe_steps 2  # smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import timm
import torch
from _timing import interleaved_ratios, write_json

import timm_gated_ssl  # noqa: F401
from timm_gated_ssl.budget import BudgetLoss
from timm_gated_ssl.cli import cpu_has_fast_bf16
from timm_gated_ssl.data import SSLBatchDataset, build_ssl_views, load_image_dataset
from timm_gated_ssl.data.batched_views import build_batched_ssl_views
from timm_gated_ssl.data.wrappers import DecodedImages
from timm_gated_ssl.recipe import DualSSLModel, PretrainConfig
from timm_gated_ssl.recipe.data import SeededViews, augmentation_seed
from timm_gated_ssl.recipe.optim import build_optimizer
from timm_gated_ssl.recipe.validate import AUGMENTATIONS
from timm_gated_ssl.ssl import build_ssl_objective

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {
    "small": {"batch": 32, "size": 32, "repeats": 5, "recipe_steps": 12, "rounds": 5, "threads": 2},
    "full": {"batch": 256, "size": 32, "repeats": 20, "recipe_steps": 100, "rounds": 5, "threads": 16},
}


def make_step(gating: bool, batch: int, size: int, dtype: torch.dtype | None):
    torch.manual_seed(0)
    name = "gated_resnet18_cifar" if gating else "resnet18_cifar"
    backbone = timm.create_model(name, num_classes=0).to(memory_format=torch.channels_last)
    model = DualSSLModel(backbone, build_ssl_objective("vicreg", in_dim=512), gating=gating,
                         budget_loss=BudgetLoss(0.3) if gating else None).train()
    config = PretrainConfig()  # the recipe's defaults: its optimizer, as recipes/pretrain.py builds it
    optimizer = build_optimizer(model, config, lr=config.lr)
    v1 = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    v2 = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast("cpu", dtype=dtype) if dtype else nullcontext()

    def step() -> None:
        with autocast:
            out = model(v1, v2, progress=0.5)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def dual_over_vanilla(batch: int, size: int, repeats: int, dtype: torch.dtype | None) -> dict:
    dual, vanilla = make_step(True, batch, size, dtype), make_step(False, batch, size, dtype)
    res = interleaved_ratios(vanilla, {"dual": dual}, repeats=repeats, inference=False)
    return {"ratio": res["dual"]["ratio"], "vanilla_step_s": res["baseline"]["seconds"]}


PRECISIONS: dict[str, torch.dtype | None] = {"bf16": torch.bfloat16, "fp32": None}
"""``--precision`` of the recipe-vs-bare comparison: autocast dtype of the bare loop and the recipe's
``--mixed_precision`` (``bf16`` -> ``bf16``, ``fp32`` -> ``no``). fp32 is for CPUs without bf16
kernels (AVX2), where bf16 autocast is many times slower than fp32."""


def bare_images_per_s(batch: int, size: int, steps: int, precision: str = "bf16") -> float:
    step = make_step(True, batch, size, PRECISIONS[precision])
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def _recipe_metrics(batch: int, size: int, steps: int, augmentation: str, precision: str) -> dict:
    """``metrics.json`` of a ``steps``-step recipe run (``wall_time_s``: its training seconds)."""
    sys.path.insert(0, str(ROOT / "tests" / ".."))
    from tests.recipe.conftest import load_pretrain_module

    pretrain = load_pretrain_module()
    with tempfile.TemporaryDirectory() as out:
        pretrain.main(["--cpu", "--no_progress", "--mixed_precision", "bf16" if precision == "bf16" else "no", "--channels_last",
                       "--output_dir", out, "--dataset", "digits", "--image_size", str(size),
                       "--batch_size", str(batch), "--max_steps", str(steps), "--epochs", "50",
                       "--eval_split", "null", "--eval_train_split", "null", "--budget", "0.3",
                       "--augmentation", augmentation])
        return json.loads((Path(out) / "metrics.json").read_text())


def recipe_steady_state(batch: int, size: int, steps: int, augmentation: str, *, precision: str = "bf16",
                        warm: int = 2) -> tuple[float, float]:
    """Steady-state images/s of the recipe, a ``warm + steps`` run minus a ``warm``-step run, and
    the steady-state fraction of its training time spent waiting for batches (the same difference
    of the runs' ``data_fraction x wall_time_s``).

    The difference cancels the one-off cost of the first steps (the loader's first batch, the
    first forward and backward), which the bare loop also leaves out (one untimed step). The data
    fraction is timed within the same steps as the training, so the machine's drift cancels.
    """
    short = _recipe_metrics(batch, size, warm, augmentation, precision)
    long = _recipe_metrics(batch, size, warm + steps, augmentation, precision)
    seconds = long["wall_time_s"] - short["wall_time_s"]
    if seconds <= 0:
        raise RuntimeError(f"a {warm + steps}-step recipe run took no longer than a {warm}-step one "
                           f"({long['wall_time_s']:.3f} s vs {short['wall_time_s']:.3f} s): raise --recipe_steps")
    data = long["data_fraction"] * long["wall_time_s"] - short["data_fraction"] * short["wall_time_s"]
    return steps * batch / seconds, data / seconds


def recipe_over_bare(batch: int, size: int, steps: int, rounds: int, precision: str = "bf16") -> dict:
    """Interleaved rounds: bare, recipe per augmentation path, bare, ...; median of ratios."""
    bare = [bare_images_per_s(batch, size, steps, precision)]
    runs: dict[str, list[float]] = {name: [] for name in AUGMENTATIONS}
    ratios: dict[str, list[float]] = {name: [] for name in AUGMENTATIONS}
    data: dict[str, list[float]] = {name: [] for name in AUGMENTATIONS}
    for _ in range(rounds):
        for name in AUGMENTATIONS:
            recipe, fraction = recipe_steady_state(batch, size, steps, name, precision=precision)
            bare.append(bare_images_per_s(batch, size, steps, precision))
            runs[name].append(recipe)
            data[name].append(fraction)
            ratios[name].append(recipe / ((bare[-2] + bare[-1]) / 2))
    return {name: {"ratio": statistics.median(ratios[name]), "ratios": ratios[name],
                   "images_per_s": runs[name], "data_fraction": statistics.median(data[name]),
                   "data_fractions": data[name]} for name in AUGMENTATIONS} | {"bare_images_per_s": bare}


def augmentation_ratio(batch: int, size: int, repeats: int) -> dict:
    """Seconds to augment one batch of digits two ways: batched / per image (interleaved)."""
    info = load_image_dataset("digits", split="train", image_size=size)
    args = {"crop_size": size, "mean": info.mean, "std": info.std}
    images = DecodedImages(info.dataset, image_column=info.image_column, cache_decoded=True)
    per_image = SeededViews(SSLBatchDataset(info.dataset, build_ssl_views(**args), image_column=info.image_column,
                                            cache_decoded=True), seed=0)
    batched = build_batched_ssl_views(**args)
    index = list(range(batch))
    for i in index:  # decode once, outside the timing
        images[i], per_image[i]

    def one_by_one() -> None:
        torch.utils.data.default_collate([per_image[i] for i in index])

    def all_at_once() -> None:
        batched.collate([(images[i], augmentation_seed(0, 0, i)) for i in index])

    res = interleaved_ratios(one_by_one, {"batched": all_at_once}, repeats=repeats)
    return {"batched_over_per_image": res["batched"]["ratio"], "per_image_batch_s": res["baseline"]["seconds"],
            "batched_batch_s": res["batched"]["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "out" / "train_step.json"))
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="bf16",
                        help="recipe vs bare loop in bf16 autocast (default) or fp32 (CPUs without bf16 kernels); "
                             "with fp32 the bf16 dual/vanilla row is left out")
    for name in ("batch", "size", "repeats", "recipe_steps", "rounds", "threads"):
        parser.add_argument(f"--{name}", type=int, default=None, help="override the preset's value")
    args = parser.parse_args()
    p = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in PRESETS[args.preset].items()}
    torch.set_num_threads(p["threads"])
    rows = {
        "fp32": dual_over_vanilla(p["batch"], p["size"], p["repeats"], None),
    }
    if args.precision == "bf16":
        rows["bf16"] = dual_over_vanilla(p["batch"], p["size"], p["repeats"], torch.bfloat16)
    augment = augmentation_ratio(p["batch"], p["size"], p["repeats"])
    recipe = recipe_over_bare(p["batch"], p["size"], p["recipe_steps"], p["rounds"], args.precision)
    print(f"\nresnet18 (CIFAR stem), batch {p['batch']}, {p['size']} px, {torch.get_num_threads()} threads")
    print("| measure | value | target |")
    print("|---|---|---|")
    for k, r in rows.items():
        print(f"| dual / vanilla step time, {k} | {r['ratio']:.3f} (vanilla {r['vanilla_step_s']:.2f} s) | <= 1.10 |")
    print(f"| two-view augmentation of a batch, batched / per image | {augment['batched_over_per_image']:.3f} "
          f"({augment['batched_batch_s'] * 1e3:.1f} vs {augment['per_image_batch_s'] * 1e3:.1f} ms) | < 1 |")
    for name in AUGMENTATIONS:
        r = recipe[name]
        print(f"| recipe / bare loop images/s, {args.precision}, augmentation: {name} | {r['ratio']:.3f} "
              f"(median of {len(r['ratios'])} interleaved rounds) | >= 0.97 |")
        print(f"| recipe's training time waiting for batches, augmentation: {name} | {r['data_fraction']:.3f} "
              f"(median; range {min(r['data_fractions']):.3f}-{max(r['data_fractions']):.3f}) | <= 0.03 |")
    write_json(args.output, {"benchmark": "train_step", "preset": args.preset, "settings": p,
                             "precision": args.precision, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                             "cpu_has_fast_bf16": cpu_has_fast_bf16(), "threads": torch.get_num_threads(), "dual_over_vanilla": rows,
                             "augmentation": augment, "recipe_over_bare": recipe})


if __name__ == "__main__":
    main()
