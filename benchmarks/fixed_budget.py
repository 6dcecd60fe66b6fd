"""Fixed-budget export (``export_at_budget``): accuracy against the dynamic gated mode, and latency.

Two parts, run separately or together (``--parts``), each writing its JSON under ``--output``;
``--publish`` merges what is there into docs/results/fixed_budget.json (with a top-level ``aims``
list computed from the numbers) and the tables between the markers in docs/results.md and
docs/speed.md.

* ``accuracy``: the Fashion-MNIST checkpoints of ``benchmarks/reproduce_small.py`` (``--runs_dir``,
  width and channel gates at t_d 0.3 and 0.5). ``evaluate_checkpoint`` with its protocol (10k-image
  bank, linear probe of 5 seeds, 20-NN, 10k test images, calibration on held-out training images)
  gives the gated mode calibrated to ``t_d`` and the ``fixed`` row: the plain model exported at
  ``t_d`` from the same calibration images. Also a BatchNorm re-estimation check
  (``norm_batches``): 2-fold 20-NN on 2,000 test images with and without it.
* ``latency``: the plain dense model against the fixed-budget export at ``--budget`` (0.3),
  interleaved (``benchmarks/_timing.py``: median of per-pair ratios), in PyTorch (eval, no grad,
  channels_last) and onnxruntime (CPU, ``--threads`` intra-op threads), at batch 1 and 64: ``gated_resnet18``
  at 224 px with width gates (widths in steps of 1/8) and with channel gates (any width), random
  weights and gates calibrated on random images (the widths, not the weights, set the speed), and
  the CIFAR-stem width-gated checkpoint (``--latency_run``) on Fashion-MNIST images.

Usage:
    python benchmarks/fixed_budget.py --parts accuracy latency --publish
    python benchmarks/fixed_budget.py --parts latency --preset smoke   # a quick check
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import eval_images
from _publish import replace_between
from _timing import interleaved_ratios, ort_session, write_json

import timm_gated_ssl  # noqa: F401  (registers the gated models)
from timm_gated_ssl import calibrate_budget, detach_gates, export_at_budget, export_onnx

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("width_td0.3", "dual_td0.3", "width_td0.5", "dual_td0.5")
GATES = {"width": "width", "dual": "channel"}
PRESETS: dict[str, dict[str, Any]] = {
    "small": {"resnet_size": 224, "big": 64, "repeats1": 15, "repeatsN": 5, "calib": 64},
    "full": {"resnet_size": 224, "big": 64, "repeats1": 41, "repeatsN": 11, "calib": 256},
    "smoke": {"resnet_size": 32, "big": 4, "repeats1": 1, "repeatsN": 1, "calib": 8},
}
AIM_BUDGETS = (0.3, 0.5)
"""Budgets at which the issue's accuracy aim (width fixed-budget >= dynamic gated - 1.0) applies."""


# ---------------------------------------------------------------------------------- accuracy
def split_run(name: str) -> tuple[str, float]:
    """``width_td0.3_s2`` -> (``"width"``, 0.3): the gate type and the budget a run was trained for."""
    match = re.fullmatch(r"(width|dual)_td([0-9.]+)(?:_s[0-9]+)?", name)
    if match is None:
        raise SystemExit(f"unknown run {name!r}: expected width_td<t_d> or dual_td<t_d>, with an optional _s<seed>")
    return GATES[match.group(1)], float(match.group(2))


def accuracy_part(runs_dir: Path, out: Path, *, runs: tuple[str, ...] = RUNS) -> dict[str, Any]:
    """One row per run found: the calibrated gated mode and the fixed-budget export at its t_d.

    Rows already in ``out/accuracy.json`` are kept, so a later call adds the runs trained since.
    """
    from torch.utils.data import DataLoader

    from timm_gated_ssl.data import EvalDataset, build_eval_transform, load_image_dataset
    from timm_gated_ssl.eval.checkpoint import evaluate_checkpoint
    from timm_gated_ssl.hub import load_run

    train = load_image_dataset("fashion_mnist", split="train", image_size=28)
    test = load_image_dataset("fashion_mnist", split="test", image_size=28)
    transform = build_eval_transform(image_size=28, mean=train.mean, std=train.std)

    def loader(info: Any, rows: range) -> DataLoader:
        return DataLoader(EvalDataset(info.dataset.select(rows), transform, image_column=info.image_column,
                                      label_column=info.label_column), batch_size=256)

    previous = out / "accuracy.json"  # rows already measured are kept: a rerun adds the missing runs
    rows = json.loads(previous.read_text())["rows"] if previous.is_file() else []
    for name in runs:
        run_dir = runs_dir / name
        if any(r["run"] == name for r in rows):
            continue
        if not (run_dir / "config.json").is_file():
            print(f"skip {name}: no checkpoint in {run_dir}", flush=True)
            continue
        gate_type, budget = split_run(name)
        start = time.time()
        print(f"[{time.strftime('%H:%M:%S')}] evaluate {name}", flush=True)
        result = evaluate_checkpoint(run_dir, dataset="fashion_mnist", image_size=28, max_train=10000,
                                     budgets=(budget,), fixed_budgets=(budget,), progress=False)
        print(result.to_markdown(), flush=True)
        entry = {e.mode + ("_calibrated" if e.calibrated else ""): e.to_dict() for e in result.entries}
        model = load_run(run_dir).model.eval()
        calibration, knn_test = loader(train, range(50000, 52048)), loader(test, range(2000))
        norms = {}
        for batches in (0, 8):
            export = export_at_budget(model, calibration, budget=budget, norm_batches=batches, eval_loader=knn_test)
            norms[str(batches)] = {"knn_fixed": export.accuracy_static, "knn_gated_calibrated": export.accuracy_gated,
                                   "mac_fraction": export.mac_fraction}
        rows.append({"run": name, "gate_type": gate_type, "budget": budget,
                     "gated": entry["gated_calibrated"], "fixed": entry["fixed"], "dense": entry["dense"],
                     "norm_batches_check": norms, "seconds": round(time.time() - start, 1), "command": _command()})
        write_json(out / "accuracy.json", {"runs_dir": str(runs_dir), "rows": rows, "command": _command()})
    return {"rows": rows}


# ----------------------------------------------------------------------------------- latency
def measure_latency(model: nn.Module, *, label: str, budget: float, calib: torch.Tensor, bench: torch.Tensor,
                    preset: dict[str, Any], threads: int, folder: Path) -> dict[str, Any]:
    """Dense vs fixed-budget export of ``model``: PyTorch and onnxruntime, batch 1 and ``big``."""
    model.eval()
    fixed = export_at_budget(model, [calib], budget=budget)
    dense = detach_gates(copy.deepcopy(model)).eval()
    size = (3, int(bench.shape[-2]), int(bench.shape[-1]))
    stem = re.sub(r"[^A-Za-z0-9_.]+", "_", label)
    paths = {"dense": folder / f"{stem}_dense.onnx", "fixed": folder / f"{stem}_fixed.onnx"}
    export_onnx(dense, paths["dense"], input_size=size)
    export_onnx(fixed.model.eval(), paths["fixed"], input_size=size)
    sessions = {k: ort_session(p, threads) for k, p in paths.items()}
    big = preset["big"]
    x1 = bench[:1].contiguous()
    xb = bench.repeat(-(-big // bench.shape[0]), 1, 1, 1)[:big].contiguous()
    with torch.no_grad():
        ort_diff = float((torch.from_numpy(sessions["fixed"].run(None, {"images": xb.numpy()})[0])
                          - fixed.model(xb)).abs().max())
    result: dict[str, Any] = {"model": label, "img_size": size[-1], "budget": budget, "threads": threads,
                              "mac_fraction": fixed.mac_fraction, "widths": {k: list(v) for k, v in fixed.widths.items()},
                              "onnx_max_abs_diff": ort_diff}
    def pair(run_dense: Any, run_fixed: Any, x: Any, repeats: int) -> dict[str, dict[str, float]]:
        return interleaved_ratios(lambda: run_dense(x), {"fixed": lambda: run_fixed(x)}, repeats=repeats)

    def ort(name: str) -> Any:
        return lambda arr: sessions[name].run(None, {"images": arr})

    # PyTorch runs both models in channels_last (as the recipes train): NCHW eager is slower for both
    # and hides less of the small convolutions' overhead (at 224 px, batch 64: 0.52 vs 0.47 of dense).
    last = torch.channels_last
    dense_cl, fixed_cl = copy.deepcopy(dense).to(memory_format=last), copy.deepcopy(fixed.model).to(memory_format=last)
    for batch, x, repeats in ((1, x1, preset["repeats1"]), (big, xb, preset["repeatsN"])):
        torch_t = pair(dense_cl, fixed_cl, x.contiguous(memory_format=last), repeats)
        ort_t = pair(ort("dense"), ort("fixed"), x.numpy(), repeats)
        result[f"batch{batch}"] = {
            "pytorch": {"dense_ms": 1e3 * torch_t["baseline"]["seconds"], "ratio": torch_t["fixed"]["ratio"]},
            "onnxruntime": {"dense_ms": 1e3 * ort_t["baseline"]["seconds"], "ratio": ort_t["fixed"]["ratio"]},
        }
    return result


def latency_part(runs_dir: Path, out: Path, *, preset: dict[str, Any], budget: float, threads: int,
                 run: str) -> dict[str, Any]:
    import timm

    from timm_gated_ssl.hub import load_run

    torch.set_num_threads(threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="fixed_budget_") as tmp:
        size = preset["resnet_size"]
        gen = torch.Generator().manual_seed(0)
        calib = torch.randn(preset["calib"], 3, size, size, generator=gen)
        bench = torch.randn(8, 3, size, size, generator=gen)
        for gate_type in ("width", "channel"):  # width: widths in steps of 1/8; channel: any width
            torch.manual_seed(0)
            model = timm.create_model("gated_resnet18", budget=budget, num_classes=0, gate_type=gate_type)
            calibrate_budget(model, [calib], budget)  # random gates: put the usage near the budget first
            label = f"resnet18 ({gate_type} gates)"
            print(f"[{time.strftime('%H:%M:%S')}] latency {label} {size}px", flush=True)
            results.append(measure_latency(model, label=label, budget=budget, calib=calib, bench=bench,
                                           preset=preset, threads=threads, folder=Path(tmp)))
        run_dir = runs_dir / run
        if not (run_dir / "config.json").is_file():
            print(f"skip the CIFAR-stem checkpoint: none in {run_dir}", flush=True)
        else:
            print(f"[{time.strftime('%H:%M:%S')}] latency {run_dir.name}", flush=True)
            calib = eval_images("fashion_mnist", split="train", count=preset["calib"], size=28, seed=0)[0]
            bench = eval_images("fashion_mnist", split="test", count=8, size=28)[0]
            results.append(measure_latency(load_run(run_dir).model, label=f"cifar_stem_{run_dir.name}",
                                           budget=budget, calib=calib, bench=bench, preset=preset,
                                           threads=threads, folder=Path(tmp)))
    import onnxruntime

    payload = {"results": results, "command": _command(), "threads": threads, "torch": torch.__version__,
               "onnxruntime": onnxruntime.__version__, "platform": platform.platform(),
               "processor": platform.processor() or platform.machine()}
    write_json(out / "latency.json", payload)
    return payload


# ------------------------------------------------------------------------------------ report
def aims(accuracy: dict[str, Any] | None, latency: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The issue's aims, each ``{"aim", "value", "target", "met"}``, from the parts present."""
    found = []
    for row in (accuracy or {}).get("rows", []):
        fixed, gated = row["fixed"], row["gated"]
        if row["gate_type"] == "width":
            gap = fixed["linear_top1"] - gated["linear_top1"]
            found.append({"aim": f"width fixed-budget linear >= dynamic gated - 1.0 at t_d {row['budget']:g}",
                          "value": round(gap, 2), "target": -1.0, "met": gap >= -1.0})
        off = abs(fixed["mac_fraction"] - row["budget"])
        found.append({"aim": f"{row['gate_type']} fixed-budget MAC fraction within 0.03 of t_d {row['budget']:g}",
                      "value": round(fixed["mac_fraction"], 4), "target": row["budget"], "met": off <= 0.03})
    for budget in AIM_BUDGETS:  # an aim without a measurement is listed as such, not left out
        if not any(r["gate_type"] == "width" and r["budget"] == budget for r in (accuracy or {}).get("rows", [])):
            found.append({"aim": f"width fixed-budget linear >= dynamic gated - 1.0 at t_d {budget:g}", "value": None,
                          "target": -1.0, "met": None,
                          "missing": f"no width-gated checkpoint trained for t_d {budget:g} was evaluated"})
    for r in (latency or {}).get("results", []):
        if not r["model"].startswith("resnet18"):
            continue
        for runtime in ("onnxruntime", "pytorch"):
            big = max(int(k[5:]) for k in r if k.startswith("batch"))
            ratio = r[f"batch{big}"][runtime]["ratio"]
            found.append({"aim": f"{r['model']} {r['img_size']} px, batch {big}, {runtime}: fixed / dense latency <= 0.45",
                          "value": round(ratio, 3), "target": 0.45, "met": ratio <= 0.45})
    return found


def accuracy_table(accuracy: dict[str, Any]) -> str:
    lines = [("| run | gates | t_d | dense linear | gated (calibrated) linear | fixed linear | fixed - gated "
              "| gated MAC | fixed MAC | fixed 20-NN, BN kept / re-estimated |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in accuracy.get("rows", []):
        g, f, d, n = r["gated"], r["fixed"], r["dense"], r["norm_batches_check"]
        lines.append(f"| {r['run']} | {r['gate_type']} | {r['budget']:g} | {d['linear_top1']:.2f} | {g['linear_top1']:.2f} "
                     f"| {f['linear_top1']:.2f} | {f['linear_top1'] - g['linear_top1']:+.2f} | {g['mac_fraction']:.3f} "
                     f"| {f['mac_fraction']:.3f} | {n['0']['knn_fixed']:.2f} / {n['8']['knn_fixed']:.2f} |")
    return "\n".join(lines)


def latency_table(latency: dict[str, Any]) -> str:
    lines = [("| model | px | MAC fraction | batch | PyTorch dense (ms) | PyTorch fixed / dense "
              "| onnxruntime dense (ms) | onnxruntime fixed / dense |"), "|---|---|---|---|---|---|---|---|"]
    for r in latency.get("results", []):
        for key in sorted((k for k in r if k.startswith("batch")), key=lambda k: int(k[5:])):
            p, o = r[key]["pytorch"], r[key]["onnxruntime"]
            lines.append(f"| {r['model']} | {r['img_size']} | {r['mac_fraction']:.3f} | {key[5:]} | {p['dense_ms']:.2f} "
                         f"| {p['ratio']:.3f} | {o['dense_ms']:.2f} | {o['ratio']:.3f} |")
    return "\n".join(lines)


def aims_table(found: list[dict[str, Any]]) -> str:
    lines = ["| aim | value | met |", "|---|---|---|"]
    verdict = {True: "yes", False: "**no**", None: "not measured"}
    lines += [f"| {a['aim']} | {'-' if a['value'] is None else a['value']} | {verdict[a['met']]} |" for a in found]
    return "\n".join(lines)


def _command() -> str:
    """The command line that measured a part (kept in its JSON, since the parts may run apart)."""
    return "python benchmarks/fixed_budget.py " + shlex.join(sys.argv[1:])


def merge_rows(new: dict[str, Any] | None, old: dict[str, Any] | None) -> dict[str, Any] | None:
    """The accuracy part with ``old``'s rows of runs that ``new`` did not measure, each row keeping
    the command that measured it (rows published before rows carried one take their part's)."""
    if new is None or old is None:
        return new or old
    measured = {r["run"] for r in new["rows"]}
    kept = [{**r, "command": r.get("command", old.get("command"))} for r in old["rows"] if r["run"] not in measured]
    return {**new, "rows": kept + new["rows"]}


def report(out: Path, *, publish: bool) -> None:
    def load(name: str) -> dict[str, Any] | None:
        path = out / name
        return json.loads(path.read_text()) if path.is_file() else None

    accuracy, latency = load("accuracy.json"), load("latency.json")
    published = ROOT / "docs/results/fixed_budget.json"
    if publish and published.is_file():  # keep the published part, and accuracy rows, that were not rerun
        old = json.loads(published.read_text())
        accuracy, latency = merge_rows(accuracy, old.get("accuracy")), latency or old.get("latency")
    found = aims(accuracy, latency)
    tables = {"results": (accuracy_table(accuracy) if accuracy else "(accuracy part not run)") + "\n\n" + aims_table(
        [a for a in found if "latency" not in a["aim"]]),
        "speed": (latency_table(latency) if latency else "(latency part not run)") + "\n\n" + aims_table(
        [a for a in found if "latency" in a["aim"]])}
    print(tables["results"], "\n", tables["speed"], sep="\n")
    if publish:
        write_json(published, {"aims": found, "accuracy": accuracy, "latency": latency, "command": _command()})
        replace_between(ROOT / "docs/results.md", "fixed_budget", tables["results"])
        replace_between(ROOT / "docs/speed.md", "fixed_budget_speed", tables["speed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="*", choices=["accuracy", "latency"], default=["accuracy", "latency"])
    parser.add_argument("--runs_dir", default="benchmarks/out/reproduce_v02/main",
                        help="the reproduction's run folders (width_td0.3, dual_td0.3, ...)")
    parser.add_argument("--runs", nargs="+", default=list(RUNS),
                        help="accuracy part: run folders in --runs_dir (width_td<t_d>[_s<seed>], dual_td<t_d>[_s<seed>])")
    parser.add_argument("--latency_run", default="width_td0.3",
                        help="latency part: the CIFAR-stem width-gated checkpoint in --runs_dir")
    parser.add_argument("--output", default="benchmarks/out/fixed_budget")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--budget", type=float, default=0.3, help="budget of the latency part")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--publish", action="store_true")
    args = parser.parse_args()
    out, runs_dir = Path(args.output), Path(args.runs_dir)
    if "accuracy" in args.parts:
        for name in args.runs:
            split_run(name)  # refuse an unknown run before evaluating any
        accuracy_part(runs_dir, out, runs=tuple(args.runs))
    if "latency" in args.parts:
        latency_part(runs_dir, out, preset=PRESETS[args.preset], budget=args.budget, threads=args.threads,
                     run=args.latency_run)
    report(out, publish=args.publish)


if __name__ == "__main__":
    main()
