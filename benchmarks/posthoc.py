"""Post-hoc gating on Fashion-MNIST: gate a trained dense SSL encoder (``--init_from``) in a fraction
of its pretraining, against co-training from scratch for the same total steps (docs/posthoc.md).

Runs (ResNet-18 CIFAR stem, 28 px, the recipe of ``benchmarks/reproduce_small.py``; a ``_s<N>``
suffix trains with seed N):

* ``init_vanilla``: the dense encoder to gate: vanilla VICReg, the reproduction's ``pilot``
  protocol (120 steps of 256); ``init_supervised``: cross-entropy on the labels, same images, steps
  and size (``benchmarks/_supervised_init.py``);
* ``posthoc_td{0.3,0.5}``: schedule (a), ``--init_from`` that encoder with the library's default
  co-training, 30 steps (25 % of the init's), lr 0.05 per 256 with a 0.3-epoch warm-up (lr 0.2
  with a 0.1-epoch warm-up, the first try, turned the loss to NaN at step 9);
* ``frozen_td{0.3,0.5}``: schedule (b), the same with ``--freeze_dense true``: the init is the
  dense mode and stays it; only gates, gated-mode norms and the projector train (lr 0.05: 0.1 turned
  the loss to NaN at step 17, as 0.2 did for (a));
* ``frozen_distill_td0.3``: (b) plus (c), a small distillation weight (0.5; the cosine form is in
  [0, 2]) from the dense features of the same view; ``frozen_width_td0.3``: (b) with width gates;
* ``distill_td{0.3,0.5}`` (channel gates), ``distill_width_td{0.3,0.5}`` (width gates, 8 levels):
  schedule (d), the post-hoc recipe (``DISTILL``): (b) and (c) with the SSL term off and AdamW;
  ``distill_width_lr*_td0.3``: its learning rate swept; ``distill_width_short_td0.3``: 12 steps
  (10 % of the init's); ``sup_distill_width_td{0.3,0.5}``: from ``init_supervised``;
* ``scratch_td0.3``, ``scratch_width_td0.3``: co-training from a random init for the same 150
  total steps (the init's 120 + 30).

Each run is evaluated as in the reproduction (linear probe on 10k labelled training images, mean of
5 probe seeds; MAC fraction on the 10k test images before and after calibration). The aims are
computed from the runs and written with them to ``docs/results/posthoc.json`` (``--publish``).

Usage:
    python benchmarks/posthoc.py --runs init_vanilla distill_width_td0.3   # train, evaluate, report
    # (a 30-step run takes under a minute on 2 cores, its evaluation about 4; a 150-step run 6)
    python benchmarks/posthoc.py --phase report --publish
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce_small as rs
from _publish import replace_between

POSTHOC_STEPS = {"train_subset": 7680, "epochs": 1}  # 30 steps of 256: 25 % of the init's 120
SHORT_STEPS = {"train_subset": 3072, "epochs": 1}  # 12 steps: 10 % of the init's
SCRATCH_STEPS = {"train_subset": 12800, "epochs": 3}  # 150 steps: the init's 120 + 30
# --budget_tolerance null: the checkpoints keep the trained threshold, so the "before calibration"
# row is what training reached (the recipe would otherwise calibrate a miss of more than 0.05)
KEEP = ["--budget_tolerance", "null"]
POSTHOC = ["--warmup_epochs", "0.3", "--lr", "0.05", "--init_from", "INIT", *KEEP]
FROZEN = ["--warmup_epochs", "0.3", "--lr", "0.05", "--init_from", "INIT", "--freeze_dense", "true", *KEEP]
DISTILL_LR = "0.03"
"""AdamW's rate per 256 images for schedule (d), the best of 0.002, 0.01, 0.03 and 0.1 tried on
``distill_width_td0.3`` (docs/posthoc.md)."""
DISTILL = [
    "--warmup_epochs", "0.3", "--optimizer", "adamw", "--lr", DISTILL_LR, "--weight_decay", "0",
    "--init_from", "INIT", "--freeze_dense", "true", "--ssl_weight", "0", "--distill_weight", "1", *KEEP,
]
"""Schedule (d), the post-hoc recipe (``recipes/configs/posthoc_width_td03.yaml`` (and ``_td05``)): the frozen
teacher, distillation of its features of the same view and the budget terms alone, no projector,
AdamW (LARS's trust ratio moves the gates about 0.1 % a step: too slow for 30 steps)."""
WIDTH = ["--model_kwargs", "{gate_type: width, gate_levels: 8}"]
RUNS: dict[str, tuple[dict[str, int], list[str]]] = {
    "init_vanilla": (rs.PROTOCOLS["pilot"], rs.RUNS["vanilla"]),
    **{f"posthoc_td{t}": (POSTHOC_STEPS, [*rs.DUAL, "--budget", str(t), *POSTHOC]) for t in (0.3, 0.5)},
    **{f"frozen_td{t}": (POSTHOC_STEPS, [*rs.DUAL, "--budget", str(t), *FROZEN]) for t in (0.3, 0.5)},
    "frozen_distill_td0.3": (POSTHOC_STEPS, [*rs.DUAL, "--budget", "0.3", *FROZEN, "--distill_weight", "0.5"]),
    "frozen_width_td0.3": (POSTHOC_STEPS, [*rs.DUAL, "--budget", "0.3", *FROZEN, *WIDTH]),
    **{f"distill_td{t}": (POSTHOC_STEPS, [*rs.DUAL, "--budget", str(t), *DISTILL]) for t in (0.3, 0.5)},
    **{f"distill_width_td{t}": (POSTHOC_STEPS, [*rs.DUAL, "--budget", str(t), *DISTILL, *WIDTH]) for t in (0.3, 0.5)},
    **{f"distill_width_lr{lr}_td0.3": (POSTHOC_STEPS, [*rs.DUAL, "--budget", "0.3", *DISTILL, *WIDTH, "--lr", lr])
       for lr in ("0.002", "0.01", "0.1")},
    "distill_width_short_td0.3": (SHORT_STEPS, [*rs.DUAL, "--budget", "0.3", *DISTILL, *WIDTH]),
    "init_supervised": (rs.PROTOCOLS["pilot"], ["SUPERVISED"]),  # benchmarks/_supervised_init.py
    **{f"sup_distill_width_td{t}": (POSTHOC_STEPS, [*rs.DUAL, "--budget", str(t), *DISTILL, *WIDTH])
       for t in (0.3, 0.5)},
    "scratch_td0.3": (SCRATCH_STEPS, [*rs.DUAL, "--budget", "0.3", *KEEP]),
    "scratch_width_td0.3": (SCRATCH_STEPS, [*rs.DUAL, "--budget", "0.3", *KEEP, *WIDTH]),
}
"""Run name -> (data size and epochs, recipe flags). A ``_s<N>`` suffix trains with seed N (the init
stays seed 0's). ``sup_*`` runs gate ``init_supervised``, the others ``init_vanilla``."""


def init_of(name: str) -> str:
    """The dense encoder run ``name`` gates."""
    return "init_supervised" if name.startswith("sup_") else "init_vanilla"
AIM_GAP, AIM_DENSE, AIM_MAC = 1.0, 0.5, 0.03
"""Markers in docs/posthoc.md between which ``--publish`` writes the tables."""


def spec(name: str) -> tuple[dict[str, int], list[str], int]:
    """Sizes, flags and seed of a run name (``distill_width_td0.3_s1``: seed 1)."""
    base, seed = rs.split_name(name, RUNS)
    sizes, args = RUNS[base]
    return sizes, args, seed


def train_command(name: str, out: Path) -> list[str]:
    sizes, args, seed = spec(name)
    if args == ["SUPERVISED"]:
        return [sys.executable, str(ROOT / "benchmarks" / "_supervised_init.py"), str(out / name), "--seed", str(seed)]
    args = [str(out / init_of(name)) if a == "INIT" else a for a in args]
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
        "--mixed_precision", "bf16", "--num_machines", "1", "--dynamo_backend", "no",
        str(ROOT / "recipes" / "pretrain.py"), "--output_dir", str(out / name), "--overwrite",
        "--channels_last", "--no_progress", *rs.COMMON, "--train_subset", str(sizes["train_subset"]),
        "--epochs", str(sizes["epochs"]), "--seed", str(seed), *args,
    ]


def shown(cmd: list[str]) -> str:
    """A command as the docs show it: without the interpreter (and ``-m``)."""
    return " ".join(cmd[2:] if cmd[1] == "-m" else cmd[1:]).replace(str(ROOT) + "/", "")


def train(name: str, out: Path) -> None:
    cmd = train_command(name, out)
    print(f"[{time.strftime('%H:%M:%S')}] train {name}: {shown(cmd)}", flush=True)
    with open(out / f"{name}.log", "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    if code:
        raise SystemExit(f"training {name} failed; see {out / f'{name}.log'}")


def evaluate(name: str, out: Path) -> dict[str, Any]:
    import timm_gated_ssl  # noqa: F401
    from timm_gated_ssl.eval.checkpoint import evaluate_checkpoint

    args = spec(name)[1]
    budgets = (float(args[args.index("--budget") + 1]),) if "--budget" in args else ()
    print(f"[{time.strftime('%H:%M:%S')}] evaluate {name} (budgets {budgets})", flush=True)
    result = evaluate_checkpoint(out / name, dataset="fashion_mnist", image_size=28, max_train=10000,
                                 budgets=budgets, progress=False, output_dir=out / f"eval_{name}")
    data = result.to_dict()
    (out / f"eval_{name}" / "results.json").write_text(json.dumps(data, indent=1))
    return data


def row(name: str, result: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one run: linear and weighted 20-NN top-1 and MAC fraction per mode, steps, budget."""
    entries = result["entries"]

    def pick(mode: str, calibrated: bool) -> dict[str, float] | None:
        found = [e for e in entries if e["mode"] == mode and bool(e.get("calibrated")) == calibrated]
        keys = ("linear_top1", "knn_top1", "mac_fraction")
        return {k: found[0][k] for k in keys} if found else None

    dense = pick("dense", False) or pick("vanilla", False)
    sizes = spec(name)[0]
    return {"run": name, "steps": sizes["train_subset"] // 256 * sizes["epochs"],
            "budget": next((e["budget"] for e in entries if e["mode"] == "gated"), None),
            "dense": dense, "gated": pick("gated", False), "gated_calibrated": pick("gated", True)}


def scratch_of(name: str) -> str:
    """The from-scratch run with the same gate type as ``name`` (equal total steps)."""
    return "scratch_width_td0.3" if "width" in name else "scratch_td0.3"


def run_aims(name: str, r: dict[str, Any], init_linear: float | None, *, frozen: bool) -> list[dict[str, Any]]:
    """The aims of one post-hoc run ``r`` against its init's dense linear top-1 (None: not measured
    yet): gated >= init - AIM_GAP; the dense mode unchanged when ``frozen`` (its dense mode is the
    init), else >= init - AIM_DENSE; the MAC fraction training reached within AIM_MAC of t_d
    (``reproduce_small.before_calibration``). benchmarks/reproduce_vit.py judges its ViT runs with it."""
    gap = None if init_linear is None else r["gated"]["linear_top1"] - init_linear
    drift = None if init_linear is None else r["dense"]["linear_top1"] - init_linear
    miss = rs.before_calibration(r) - r["budget"]
    return [
        {"aim": f"{name}: gated - init dense (linear)", "value": None if gap is None else round(gap, 3),
         "target": f">= -{AIM_GAP}", "met": None if gap is None else gap >= -AIM_GAP},
        {"aim": f"{name}: dense - init dense (linear)", "value": None if drift is None else round(drift, 3),
         "target": "== 0 (frozen)" if frozen else f">= -{AIM_DENSE}",
         "met": None if drift is None else (drift == 0 if frozen else drift >= -AIM_DENSE)},
        {"aim": f"{name}: MAC fraction before calibration - t_d", "value": round(miss, 4),
         "target": f"within +-{AIM_MAC}", "met": abs(miss) <= AIM_MAC},
    ]


def aims(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's aims, each ``{"aim", "value", "target", "met"}``, for every post-hoc run present
    (``posthoc_*``, ``frozen_*`` and ``distill_*``, against the init and, at t_d 0.3, against the
    from-scratch run of the same gate type)."""
    found = []
    for name, r in rows.items():
        init = rows.get(init_of(name))
        if not name.startswith(("posthoc", "frozen", "distill", "sup_")) or init is None:
            continue
        t = r["budget"]
        found += run_aims(name, r, init["dense"]["linear_top1"], frozen="--freeze_dense" in spec(name)[1])
        scratch = rows.get(scratch_of(name))
        if scratch is not None and t == 0.3 and init_of(name) == "init_vanilla":
            # equal total steps: the init's 120 + 30 post-hoc against 150 from scratch
            diff = r["gated"]["linear_top1"] - scratch["gated"]["linear_top1"]
            found.append({"aim": f"{name}: gated - {scratch_of(name)} gated at equal total steps (linear)",
                          "value": round(diff, 3), "target": ">= 0", "met": diff >= 0})
    return found


def table(rows: dict[str, dict[str, Any]], found: list[dict[str, Any]]) -> str:
    lines = ["| run | steps | dense | gated | dense k-NN | gated k-NN | MAC before | gated calibrated | MAC after |",
             "|---|---|---|---|---|---|---|---|---|"]

    def cell(d: dict[str, float] | None, key: str, fmt: str) -> str:
        return fmt.format(d[key]) if d and key in d else "-"

    for r in rows.values():
        d, g, c = r["dense"], r["gated"], r["gated_calibrated"]
        lines.append(f"| {r['run']} | {r['steps']} | {cell(d, 'linear_top1', '{:.2f}')} | {cell(g, 'linear_top1', '{:.2f}')} "
                     f"| {cell(d, 'knn_top1', '{:.2f}')} | {cell(g, 'knn_top1', '{:.2f}')} "
                     f"| {cell(g, 'mac_fraction', '{:.4f}')} | {cell(c, 'linear_top1', '{:.2f}')} "
                     f"| {cell(c, 'mac_fraction', '{:.4f}')} |")
    lines += ["", "| aim | value | target | met |", "|---|---|---|---|"]
    lines += [f"| {a['aim']} | {a['value']} | {a['target']} | {'yes' if a['met'] else 'no'} |" for a in found]
    return "\n".join(lines)


def run_order(name: str) -> tuple[int, int]:
    base, seed = rs.split_name(name, RUNS)
    return list(RUNS).index(base), seed


def published(path: Path, init: dict[str, Any] | None) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Rows and commands of an earlier ``--publish`` (``path``) to keep beside this output's runs.

    They were trained from an init of the same command; they are kept only when this output's
    init evaluates to the same numbers (the runs are deterministic on one machine), so that every
    row in the tables is measured against the same encoder.
    """
    if not path.is_file():
        return {}, {}
    earlier = json.loads(path.read_text())
    rows = {r["run"]: r for r in earlier["runs"]}
    if init is not None and rows.get("init_vanilla", {}).get("dense") != init["dense"]:
        print(f"note: {path} was measured from another init ({rows.get('init_vanilla')}); its runs are not kept")
        return {}, {}
    return rows, earlier.get("commands", {})


def report(out: Path, *, publish: bool) -> None:
    names = sorted((d.name.removeprefix("eval_") for d in out.glob("eval_*") if (d / "results.json").is_file()),
                   key=run_order)
    rows = {name: row(name, json.loads((out / f"eval_{name}" / "results.json").read_text())) for name in names}
    json_path = ROOT / "docs" / "results" / "posthoc.json"
    kept, kept_commands = published(json_path, rows.get("init_vanilla")) if publish else ({}, {})
    rows = dict(sorted({**kept, **rows}.items(), key=lambda item: run_order(item[0])))
    found = aims(rows)
    print(table(rows, found))
    if publish:
        commands = {name: kept_commands[name] if name in kept and name not in names else
                    shown(train_command(name, Path("benchmarks/out/posthoc")))
                    for name in rows}
        summary = {"aims": found, "runs": list(rows.values()), "commands": commands}
        json_path.write_text(json.dumps(summary, indent=1) + "\n")
        replace_between(ROOT / "docs" / "posthoc.md", "posthoc", table(rows, found))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=["all", "report"], default="all")
    parser.add_argument("--runs", nargs="+", default=list(RUNS),
                        help=f"runs to train and evaluate, each optionally with _s<seed>: {', '.join(RUNS)}")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "out" / "posthoc"))
    parser.add_argument("--publish", action="store_true", help="write docs/results/posthoc.json")
    args = parser.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.runs:
        rs.split_name(name, RUNS)  # refuse an unknown run before any training
    if args.phase == "all":
        for name in args.runs:
            train(name, out)
            evaluate(name, out)
    report(out, publish=args.publish)


if __name__ == "__main__":
    main()
