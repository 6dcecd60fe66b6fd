"""Small real-data reproduction on Fashion-MNIST, on 2 CPU cores (docs/results.md).

Protocols (ResNet-18 with the CIFAR stem, 28 px, VICReg, LARS, lr 0.2 per 256, one warm-up epoch
then cosine over a fixed number of steps, batch 256, bf16 autocast + channels_last):

* ``main``: 350 steps (5 epochs of the first 17,920 training images), sized to fit about 100 minutes on 2 CPU cores;
* ``pilot``: 120 steps (3 epochs of the first 10,240 images), for the remedy study;
* ``long``: 700 steps (5 epochs of the first 35,840 images), for the gap-over-length curve.

Runs (``--runs``; a ``_s<N>`` suffix trains with seed N, e.g. ``dual_td0.3_s1``):

* ``vanilla``: VICReg, gating off; ``dual_td{0.1,0.3,0.5}``: VICReg-dual with the library's
  defaults; ``paper_td0.3``: the paper's exact loss settings (``PAPER``);
* ``study_*``: the paper's settings plus one change each (``STUDY``), at t_d 0.3;
* ``{anchored,symmetric,warmup}_td{0.1,0.3,0.5}``, ``width_td{0.3,0.5}``: the library defaults with
  one change each (``VARIANTS``); ``width`` uses width gates (8 levels, docs/width_gates.md) instead of
  channel gates, compared with ``dual_td*`` (or, at the pilot, ``study_noise_cosine``, whose
  settings are the defaults) of the same protocol.

Evaluation (``timm_gated_ssl.eval.evaluate_checkpoint``, fp32): linear probe on 10k labelled
training images (mean of 5 probe seeds; the main measure), weighted 20-NN and 1-NN, MAC fraction
on the 10k test images with the checkpoint's own threshold and after calibrating to the run's
``t_d`` on held-out training images. Each run is evaluated once, right after it trains
(``eval_<run>/results.json`` is reused later). ``--phase report`` gathers every evaluated run into
``results.json`` with the training curves (from the runs' TensorBoard logs) and the aims, prints
the tables, and with ``--publish`` writes docs/results/reproduce_small.json, the tables between the
markers in docs/results.md, the trade-off plot and the per-run logs.

Usage:
    python benchmarks/reproduce_small.py --protocol pilot --runs paper_td0.3 study_distill
    python benchmarks/reproduce_small.py --protocol main --runs vanilla dual_td0.3 ...
    python benchmarks/reproduce_small.py --phase report --publish
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _seeds
from _publish import replace_between

if TYPE_CHECKING:
    from timm_gated_ssl.results import TradeoffPoint

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS: dict[str, dict[str, Any]] = {
    "pilot": {"train_subset": 10240, "epochs": 3},
    "main": {"train_subset": 17920, "epochs": 5},
    "long": {"train_subset": 35840, "epochs": 5},
}
COMMON = [
    "--dataset", "fashion_mnist", "--image_size", "28", "--batch_size", "256", "--warmup_epochs", "1",
    "--lr", "0.2", "--eval_split", "null", "--eval_train_split", "null", "--log_every", "2",
]
DUAL = ["--model", "gated_resnet18_cifar"]
PAPER: dict[str, str] = {
    "bound_schedule": "progress", "bound_decay": "10", "bound_centre": "sqrt", "pairing": "asymmetric",
    "distill_weight": "0", "gate_noise_schedule": "constant", "dense_warmup_epochs": "0",
}
"""The paper's loss settings (the bound relaxation on progress: the paper's over 500 epochs)."""
STUDY: dict[str, dict[str, str]] = {
    "study_noise_cosine": {"gate_noise_schedule": "cosine"},
    "study_distill": {"distill_weight": "10", "distill_on": "features"},
    "study_distill_embeddings": {"distill_weight": "10", "distill_on": "embeddings"},
    "study_symmetric": {"pairing": "symmetric"},
    "study_centre_linear": {"bound_centre": "linear"},
    "study_dense_warmup": {"dense_warmup_epochs": "0.3"},
    "study_noise_cosine_distill": {"gate_noise_schedule": "cosine", "distill_weight": "10"},
    "study_noise_cosine_centre_linear": {"gate_noise_schedule": "cosine", "bound_centre": "linear"},
}
"""Remedy candidates: each is the paper's settings with these changes (docs/results.md)."""
VARIANTS: dict[str, dict[str, str]] = {
    "anchored": {"pairing": "anchored"},
    "symmetric": {"pairing": "symmetric"},
    "warmup": {"dense_warmup_epochs": "1"},
    "width": {"model_kwargs": "{gate_type: width, gate_levels: 8}"},
}
"""Candidates for the remaining gaps: each is the library defaults with this one change (``width``:
width gates with 8 levels instead of channel gates, docs/width_gates.md)."""


def _flags(values: dict[str, str]) -> list[str]:
    return [token for key, value in values.items() for token in (f"--{key}", value)]


RUNS: dict[str, list[str]] = {
    "vanilla": ["--model", "resnet18_cifar", "--gating", "false"],
    **{f"dual_td{t}": [*DUAL, "--budget", str(t)] for t in (0.1, 0.3, 0.5)},
    "paper_td0.3": [*DUAL, "--budget", "0.3", *_flags(PAPER)],
    **{name: [*DUAL, "--budget", "0.3", *_flags({**PAPER, **extra})] for name, extra in STUDY.items()},
    **{f"{variant}_td{t}": [*DUAL, "--budget", str(t), *_flags(extra)]
       for variant, extra in VARIANTS.items() for t in (0.1, 0.3, 0.5) if (variant, t) != ("width", 0.1)},
    "width_td0.1": [*DUAL, "--budget", "0.1", "--model_kwargs", "{gate_type: width, gate_levels: 16}"],
}
"""``width_td0.1`` has 16 levels: with 8 the narrowest width gates still run 0.138 of the dense
MACs at 28 px (``timm_gated_ssl.mac_floor``), so the recipe refuses t_d 0.1 for them."""
SWEEP = (0.1, 0.3, 0.5, 0.7)
"""Budgets calibrated from one checkpoint with ``--sweep`` (the report reads only the run's own t_d)."""
AIMS_GAP = {0.1: 2.0, 0.3: 1.0, 0.5: 1.0}
"""Largest allowed dense - gated linear-probe gap (points) per budget (the reproduction's aims; v0.1's
were 2.5, 1.5, 1.5)."""
DEFAULT_VARIANT = "dual"
"""The variant the aims judge: the library's default gates (``dual``: channel gates; ``width``)."""
AIM_DENSE_VS_VANILLA, AIM_MAC_BEFORE, AIM_MAC_AFTER = 1.5, 0.03, 0.01


def split_name(name: str, runs: dict[str, Any] | None = None) -> tuple[str, int]:
    """``"dual_td0.3_s1"`` -> ``("dual_td0.3", 1)``; the base must be one of ``runs`` (``RUNS``)."""
    runs = RUNS if runs is None else runs
    match = re.fullmatch(r"(.+)_s(\d+)", name)
    base, seed = (match.group(1), int(match.group(2))) if match else (name, 0)
    if base not in runs:
        raise SystemExit(f"unknown run {name!r}; valid: {', '.join(runs)} (optionally with _s<seed>)")
    return base, seed


def budget_of(name: str, runs: dict[str, list[str]] | None = None) -> float | None:
    runs = RUNS if runs is None else runs
    args = runs[split_name(name, runs)[0]]
    return float(args[args.index("--budget") + 1]) if "--budget" in args else None


PRECISIONS = ("bf16", "fp32")
"""``--precision``: bf16 autocast (every published CPU run; needs AMX or AVX-512-BF16 kernels to be
fast, docs/training.md) or plain fp32 (``accelerate --mixed_precision no``)."""


def train_command(name: str, protocol: str, out: Path, *, precision: str = "bf16",
                  runs: dict[str, list[str]] | None = None, common: list[str] | None = None) -> list[str]:
    """The launch command of run ``name`` (``runs``: ``RUNS``; ``common``: ``COMMON``, the flags
    every run of the family shares; benchmarks/reproduce_vit.py passes its own)."""
    if precision not in PRECISIONS:
        raise SystemExit(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    runs, common = (RUNS if runs is None else runs), (COMMON if common is None else common)
    base, seed = split_name(name, runs)
    sizes = PROTOCOLS[protocol]
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
        "--mixed_precision", "bf16" if precision == "bf16" else "no", "--num_machines", "1",
        "--dynamo_backend", "no",
        str(ROOT / "recipes" / "pretrain.py"), "--output_dir", str(out / name), "--overwrite",
        "--channels_last", "--no_progress", "--report_to", "tensorboard", *common,
        "--train_subset", str(sizes["train_subset"]), "--epochs", str(sizes["epochs"]),
        "--save_every", str(sizes["epochs"]), "--seed", str(seed), *runs[base],
    ]


def train(name: str, protocol: str, out: Path, *, precision: str = "bf16",
          runs: dict[str, list[str]] | None = None, common: list[str] | None = None) -> None:
    cmd = train_command(name, protocol, out, precision=precision, runs=runs, common=common)
    print(f"[{time.strftime('%H:%M:%S')}] train {name}: {' '.join(cmd[2:])}", flush=True)
    with open(out / f"{name}.log", "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    print(f"[{time.strftime('%H:%M:%S')}] {name} exited {code}", flush=True)
    if code:
        raise SystemExit(f"training {name} failed; see {out / f'{name}.log'}")
    (out / name / "precision.txt").write_text(precision + "\n")  # read back by summarise


def evaluate(name: str, protocol: str, out: Path, *, sweep: bool = False,
             runs: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Evaluate one trained run (dense, gated at its threshold, calibrated to its t_d or ``SWEEP``)."""
    import timm_gated_ssl  # noqa: F401
    from timm_gated_ssl.eval.checkpoint import evaluate_checkpoint

    budget = budget_of(name, runs)
    budgets: tuple[float, ...] = ()
    if budget is not None:
        budgets = SWEEP if sweep else (budget,)
    print(f"[{time.strftime('%H:%M:%S')}] evaluate {name} (budgets {budgets})", flush=True)
    result = evaluate_checkpoint(out / name, dataset="fashion_mnist", image_size=28, max_train=10000,
                                 budgets=budgets, progress=False, output_dir=out / f"eval_{name}")
    print(result.to_markdown(), flush=True)
    return result.to_dict()


def training_curve(run_dir: Path, *, every: int = 10) -> dict[str, list[list[float]]]:
    """``{tag: [[step, value], ...]}`` every ``every`` steps from the run's TensorBoard log."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted(run_dir.glob("timm_gated_ssl/events.out.tfevents.*"))
    if not events:
        return {}
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    curves = {}
    for tag in ("loss", "ssl", "compute", "bound", "distill", "mac_ratio", "lr"):
        if tag in acc.Tags()["scalars"]:
            curves[tag] = [[e.step, round(e.value, 5)] for e in acc.Scalars(tag) if e.step % every == 0]
    return curves


SCHEDULE_NOTE = (f"Schedule `v0.1`: the cosine stopped short of `min_lr` (runs before v0.2, shown for the "
                 f"record); `{_seeds.CURRENT_SCHEDULE}`: it ends at `min_lr`. The aims judge "
                 f"`{_seeds.CURRENT_SCHEDULE}` runs of `{DEFAULT_VARIANT}_*` only.")


def schedule_of(metrics: dict[str, Any]) -> str:
    """``v0.2``: the cosine ended at ``min_lr`` on the last update (``metrics.json`` has
    ``final_lr``); ``v0.1``: a run made before that fix, whose cosine stopped at 9.8 % (``main``)
    or 25.6 % (``pilot``) of the peak (``_seeds.SCHEDULES``)."""
    return "v0.2" if "final_lr" in metrics else "v0.1"


def summarise(name: str, protocol: str, out: Path, runs: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """One run's row: its results, metrics, recorded config and training curve."""
    import yaml

    result = json.loads((out / f"eval_{name}" / "results.json").read_text())
    metrics = json.loads((out / name / "metrics.json").read_text())
    precision = out / name / "precision.txt"
    variant, seed = split_name(name, runs)
    row: dict[str, Any] = {"run": name, "variant": variant, "seed": seed,
                           "protocol": protocol, "budget": budget_of(name, runs),
                           "schedule": schedule_of(metrics),
                           "precision": precision.read_text().strip() if precision.exists() else "bf16",
                           "steps": metrics["steps"], "images_per_s": metrics["images_per_s"],
                           "wall_time_s": metrics["wall_time_s"], "final_lr": metrics.get("final_lr")}
    if metrics.get("budget_calibrated"):  # the recipe's end-of-training check moved the threshold
        row["recipe_calibrated_from"] = metrics["mac_ratio_trained"]
    for entry in result["entries"]:
        if entry["mode"] in ("dense", "vanilla"):
            key = entry["mode"]
        elif entry.get("calibration_mac_fraction") is None:  # the gates as the run exported them
            key = "gated"  # (``calibrated`` when the recipe's end-of-training check moved them)
        elif entry["budget"] == row["budget"]:
            key = "gated_calibrated"
        else:
            continue
        row[key] = {k: entry[k] for k in ("linear_top1", "linear_top1_std", "knn_top1", "knn1_top1",
                                          "mac_fraction", "calibration_mac_fraction") if k in entry}
    if "gated" in row:
        row["gap"] = round(row["dense"]["linear_top1"] - row["gated"]["linear_top1"], 2)
    if "gated_calibrated" in row:
        row["gap_calibrated"] = round(row["dense"]["linear_top1"] - row["gated_calibrated"]["linear_top1"], 2)
    row["config"] = yaml.safe_load((out / name / "config.yaml").read_text())  # as the run recorded it
    row["curve"] = training_curve(out / name)
    if row["curve"].get("mac_ratio"):
        row["train_mode_mac_ratio"] = row["curve"]["mac_ratio"][-1][1]  # stochastic gates, last logged step
    return row


def before_calibration(row: dict[str, Any]) -> float:
    """The MAC fraction training reached: the evaluated gates', unless the recipe's end-of-training
    check calibrated them (a miss over its ``budget_tolerance``), then what it measured before
    (``mac_ratio_trained``, on un-augmented training images)."""
    return row.get("recipe_calibrated_from", row["gated"]["mac_fraction"])


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def aims(rows: list[dict[str, Any]], variants: dict[float, str] | None = None, *,
         gaps: dict[float, float] | None = None, dense_vs_vanilla: float = AIM_DENSE_VS_VANILLA,
         mac_before: float = AIM_MAC_BEFORE, mac_after: float | None = AIM_MAC_AFTER) -> list[dict[str, Any]]:
    """The reproduction's aims, computed from the main-protocol runs with the library defaults
    made with the current schedule (``_seeds.current``; older runs are shown, not judged).

    ``variants`` maps each budget to the variant whose runs are judged (default: ``dual_td<t_d>``
    at 0.1, 0.3 and 0.5). An aim whose runs have not been made yet is listed with ``value`` and
    ``met`` None and the ``missing`` runs, so the JSON never reads as if it had been measured.
    The tolerances default to this reproduction's (``AIMS_GAP`` per budget, ...); ``mac_after``
    None leaves out the after-calibration aim (benchmarks/reproduce_vit.py passes its own).
    """
    gaps = AIMS_GAP if gaps is None else gaps
    variants = variants or {budget: f"{DEFAULT_VARIANT}_td{budget}" for budget in gaps}
    main = _seeds.current(rows)
    vanilla = [r["vanilla"]["linear_top1"] for r in main if r["variant"] == "vanilla"]
    found: list[dict[str, Any]] = []

    def add(aim: str, value: float | None, target: float, met: bool | None, missing: list[str]) -> None:
        entry = {"aim": aim, "value": None if value is None else round(value, 4), "target": target, "met": met}
        found.append({**entry, "missing": missing} if missing else entry)

    for budget, name in variants.items():
        tol = gaps[budget]
        runs = [r for r in main if r["variant"] == name]
        missing = [] if runs else [name]
        dense = _mean([r["dense"]["linear_top1"] for r in runs]) if runs else None
        gated = _mean([r["gated"]["linear_top1"] for r in runs]) if runs else None
        gap_ok = None if dense is None else gated >= dense - tol
        add(f"gated >= dense - {tol} (linear top-1, t_d {budget})",
            None if dense is None else gated - dense, -tol, gap_ok, missing)
        v = _mean(vanilla) if vanilla else None
        add(f"dense >= vanilla - {dense_vs_vanilla} (t_d {budget})",
            None if dense is None or v is None else dense - v, -dense_vs_vanilla,
            None if dense is None or v is None else dense >= v - dense_vs_vanilla,
            missing + ([] if vanilla else ["vanilla"]))
        macs = [("gated", mac_before, "before")] + ([("gated_calibrated", mac_after, "after")] if mac_after else [])
        for key, tol_mac, when in macs:
            worst = max((before_calibration(r) if key == "gated" else r[key]["mac_fraction"] for r in runs),
                        key=lambda f: abs(f - budget)) if runs else None
            add(f"MAC fraction {when} calibration within +-{tol_mac} of {budget}", worst, budget,
                None if worst is None else abs(worst - budget) <= tol_mac, missing)
    return found


def variant_aims(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The same aims for every other gated ``main``-protocol variant at its own budget (options and
    width gates against the defaults' numbers; not the verdict, which is on the defaults)."""
    names = sorted({r["variant"] for r in _seeds.current(rows) if r["budget"] is not None
                    and not r["variant"].startswith(f"{DEFAULT_VARIANT}_") and r["budget"] in AIMS_GAP})
    return {name: aims(rows, {budget_of(name): name}) for name in names}


def seed_spread(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per ``main``-protocol variant trained with several seeds (current schedule): mean and spread
    of each measure."""
    spread = []
    rows = _seeds.current(rows)
    for variant in sorted({r["variant"] for r in rows}):
        runs = [r for r in rows if r["variant"] == variant]
        if len(runs) < 2:
            continue
        entry: dict[str, Any] = {"variant": variant, "seeds": [r["seed"] for r in runs]}
        base = "vanilla" if "vanilla" in runs[0] else "dense"
        measures = {f"{base}_linear": [r[base]["linear_top1"] for r in runs]}
        if base == "dense":
            measures["gated_linear"] = [r["gated"]["linear_top1"] for r in runs]
            measures["gap"] = [r["gap"] for r in runs]
            measures["mac_fraction"] = [r["gated"]["mac_fraction"] for r in runs]
        for name, values in measures.items():
            entry[name] = {"values": values, "mean": round(_mean(values), 4),
                           "range": round(max(values) - min(values), 4)}
        spread.append(entry)
    return spread


LENGTH_SERIES: dict[str, dict[str, str]] = {
    "defaults": {"pilot": "study_noise_cosine", "main": "dual_td0.3", "long": "dual_td0.3"},
    "paper": {"pilot": "paper_td0.3", "main": "paper_td0.3", "long": "paper_td0.3"},
}
"""The t_d 0.3 run of each setting per protocol (the pilot's ``study_noise_cosine`` has the defaults'
settings; ``dual_*`` runs at the pilot predate them)."""


def _log_fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares ``value = a + b * log2(steps)``: ``(a, b)``; ``b`` is the change per doubling."""
    xs, ys = [math.log2(steps) for steps, _ in points], [value for _, value in points]
    mx, my = _mean(xs), _mean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def over_length(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The gated-dense and dense-vanilla gaps at t_d 0.3 against training steps (seed 0 of each
    protocol), and per setting a fit over ``log2(steps)``: the change per doubling of the steps and
    the steps at which the fit reaches the aim (None where it moves away from it). A fit through
    two or three single-seed points says which way the curve goes, not where it will be.
    """
    vanilla = {(r["protocol"], r.get("schedule", "v0.1")): r for r in rows if r["variant"] == "vanilla" and r["seed"] == 0}
    points: list[dict[str, Any]] = []
    for setting, runs in LENGTH_SERIES.items():
        for protocol, variant in runs.items():
            run = next((r for r in rows if (r["protocol"], r["variant"], r["seed"]) == (protocol, variant, 0)), None)
            if run is None or "gated" not in run:
                continue
            schedule = run.get("schedule", "v0.1")
            point = {"setting": setting, "schedule": schedule, "protocol": protocol, "run": run["run"],
                     "steps": run["steps"],
                     "dense": run["dense"]["linear_top1"], "gated": run["gated"]["linear_top1"], "gap": run["gap"],
                     "gap_calibrated": run.get("gap_calibrated"), "mac_fraction": run["gated"]["mac_fraction"]}
            if (protocol, schedule) in vanilla:
                point["vanilla"] = vanilla[protocol, schedule]["vanilla"]["linear_top1"]
                point["dense_minus_vanilla"] = round(point["dense"] - point["vanilla"], 2)
            points.append(point)
    trends = []
    for setting, schedule in [(s, sch) for s in LENGTH_SERIES for sch in _seeds.SCHEDULES]:
        for measure, aim in (("gap", AIMS_GAP[0.3]), ("dense_minus_vanilla", -AIM_DENSE_VS_VANILLA)):
            series = [(p["steps"], p[measure]) for p in points
                      if p["setting"] == setting and p["schedule"] == schedule and measure in p]
            if len(series) < 2:  # a fit never mixes schedules
                continue
            a, b = _log_fit(series)
            toward = b < 0 if measure == "gap" else b > 0
            reach = round(2 ** ((aim - a) / b)) if b and toward else None
            trends.append({"setting": setting, "schedule": schedule, "measure": measure, "steps": [s for s, _ in series],
                           "per_doubling": round(b, 3), "aim": aim, "steps_to_aim": reach})
    return {"points": points, "trends": trends}


def _fmt(value: float | None, fmt: str = "{:.2f}") -> str:
    return "" if value is None else fmt.format(value)


def _cell(row: dict[str, Any], mode: str, key: str, fmt: str = "{:.2f}") -> str:
    return _fmt(row.get(mode, {}).get(key), fmt)


def aims_table(found: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of aims (``{"aim", "value", "target", "met"}``); ``met`` None: not measured yet."""
    verdict = {True: "yes", False: "**no**", None: "not measured yet"}
    return ["| aim | value | target | met |", "|---|---|---|---|",
            *(f"| {a['aim']} | {'' if a['value'] is None else a['value']} | {a['target']} | {verdict[a['met']]} |"
              for a in found)]


def _mac_cell(row: dict[str, Any]) -> str:
    """The evaluated MAC fraction, with what training reached where the recipe calibrated it."""
    cell = _cell(row, "gated", "mac_fraction", "{:.3f}")
    if "recipe_calibrated_from" in row:
        cell += f" (recipe-calibrated from {row['recipe_calibrated_from']:.3f})"
    return cell


def tables(rows: list[dict[str, Any]], found: list[dict[str, Any]], others: dict[str, list[dict[str, Any]]],
           spread: list[dict[str, Any]], length: dict[str, list[dict[str, Any]]] | None = None,
           paired: list[dict[str, Any]] | None = None) -> str:
    """The Markdown tables of docs/results.md, from the runs and what :func:`report` computed of them."""
    lines = []
    for protocol in PROTOCOLS:
        chosen = [r for r in rows if r["protocol"] == protocol]
        if not chosen:
            continue
        batch = chosen[0].get("config", {}).get("batch_size", 256)
        lines += [f"**Protocol `{protocol}`** ({chosen[0]['steps']} steps of {batch})", "",
                  ("| run | seed | schedule | t_d | dense / vanilla linear | gated linear | gap | gated k-NN | "
                   "MAC fraction | train-mode MAC fraction | calibrated MAC fraction | calibrated linear | "
                   "gap, calibrated |"),
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in chosen:
            base = "vanilla" if "vanilla" in r else "dense"
            lines.append(
                f"| {r['variant']} | {r['seed']} | {r.get('schedule', 'v0.1')} | {r['budget'] or ''} | "
                f"{_cell(r, base, 'linear_top1')} | "
                f"{_cell(r, 'gated', 'linear_top1')} | {r.get('gap', '')} | {_cell(r, 'gated', 'knn_top1')} | "
                f"{_mac_cell(r)} | {_fmt(r.get('train_mode_mac_ratio'), '{:.3f}')} | "
                f"{_cell(r, 'gated_calibrated', 'mac_fraction', '{:.3f}')} | "
                f"{_cell(r, 'gated_calibrated', 'linear_top1')} | {r.get('gap_calibrated', '')} |")
        lines.append("")
    if spread:
        lines += ["**Pretraining seeds** (`main`): mean and range (max - min) over the seeds", "",
                  "| run | seeds | dense / vanilla linear | gated linear | gap | MAC fraction |",
                  "|---|---|---|---|---|---|"]
        for e in spread:
            cells = [f"{e[k]['mean']:.2f} ({e[k]['range']:.2f})" if k in e else ""
                     for k in ("dense_linear" if "dense_linear" in e else "vanilla_linear",
                               "gated_linear", "gap")]
            mac = f"{e['mac_fraction']['mean']:.3f} ({e['mac_fraction']['range']:.3f})" if "mac_fraction" in e else ""
            lines.append(f"| {e['variant']} | {', '.join(map(str, e['seeds']))} | {' | '.join(cells)} | {mac} |")
        lines.append("")
    if length and length["points"]:
        lines += ["**Over training length** (t_d 0.3, seed 0; vanilla of the same protocol and schedule)", "",
                  ("| setting | schedule | run | steps | dense | gated | gap | gap, calibrated | MAC fraction | "
                   "vanilla | dense - vanilla |"), "|---|---|---|---|---|---|---|---|---|---|---|"]
        for p in length["points"]:
            lines.append(f"| {p['setting']} | {p.get('schedule', 'v0.1')} | {p['protocol']} {p['run']} | "
                         f"{p['steps']} | {p['dense']:.2f} | "
                         f"{p['gated']:.2f} | {p['gap']} | {_fmt(p['gap_calibrated'])} | {p['mac_fraction']:.3f} | "
                         f"{_fmt(p.get('vanilla'))} | {p.get('dense_minus_vanilla', '')} |")
        lines += ["", ("| setting | schedule | measure | fit over steps | change per doubling | aim | "
                       "fit reaches the aim at |"), "|---|---|---|---|---|---|---|"]
        for t in length["trends"]:
            reach = "never (moves away)" if t["steps_to_aim"] is None else f"{t['steps_to_aim']} steps"
            lines.append(f"| {t['setting']} | {t.get('schedule', 'v0.1')} | {t['measure'].replace('_', ' ')} | "
                         f"{', '.join(map(str, t['steps']))} | {t['per_doubling']:+.2f} | {t['aim']} | {reach} |")
        lines.append("")
    if paired:
        lines += _seeds.paired_table(paired, _seeds.choose_default(paired))
    if found:
        lines += [*aims_table(found), ""]
    if others:
        verdict = {True: "yes", False: "no", None: ""}
        after = any("after calibration" in a["aim"] for entries in others.values() for a in entries)
        header = ["run", "gated - dense", "dense - vanilla", "MAC fraction before calibration"] + (["after"] if after else [])
        lines += ["**The same aims for the other `main` runs** (each at its own t_d; value, met)", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name, entries in others.items():
            cells = [f"{'' if a['value'] is None else a['value']} ({verdict[a['met']]})" for a in entries]
            lines.append(f"| {name} | {' | '.join(cells)} |")
        lines.append("")
    return "\n".join(lines)


def merge_rows(local: list[dict[str, Any]], published: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every run evaluated under the output folder, plus the published runs it does not hold.

    Runs are made over several sessions and machines, and an output folder is scratch: a run kept
    from the published JSON keeps the numbers, config and curve it was published with, and a run
    evaluated again here replaces it. Ordered by protocol, then run name.
    """
    order = {protocol: i for i, protocol in enumerate(PROTOCOLS)}
    rows = {(r["protocol"], r["run"]): r for r in published}
    rows.update({(r["protocol"], r["run"]): r for r in local})
    return [rows[key] for key in sorted(rows, key=lambda k: (order.get(k[0], len(order)), k[1]))]


def gather_rows(out: Path, published_path: Path, runs: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """Every run evaluated under ``out`` (``<protocol>/eval_<run>/``, run names from ``runs``) merged
    with the runs of the published JSON at ``published_path`` (:func:`merge_rows`)."""
    local = []
    for protocol in PROTOCOLS:
        base = out / protocol
        for result in sorted(base.glob("eval_*/results.json")) if base.exists() else []:
            local.append(summarise(result.parent.name.removeprefix("eval_"), protocol, base, runs))
    published = json.loads(published_path.read_text())["runs"] if published_path.exists() else []
    rows = merge_rows(local, published)
    print(f"{len(local)} runs evaluated under {out}; {len(rows) - len(local)} kept from {published_path.name}")
    return rows


def report(out: Path, *, publish: bool) -> None:
    rows = gather_rows(out, ROOT / "docs" / "results" / "reproduce_small.json")
    found, others, spread, length = aims(rows), variant_aims(rows), seed_spread(rows), over_length(rows)
    paired = _seeds.paired_gate_types(rows)
    text = SCHEDULE_NOTE + "\n\n" + tables(rows, found, others, spread, length, paired)
    print(text)
    summary = {"aims": found, "variant_aims": others, "seed_spread": spread, "paired_gate_types": paired,
               "default_gate_type": _seeds.choose_default(paired), "default_variant": DEFAULT_VARIANT,
               "over_length": length, "runs": rows, "protocols": PROTOCOLS, "common_args": COMMON,
               "paper_args": PAPER}
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    if publish:
        docs = ROOT / "docs"
        (docs / "results" / "reproduce_small.json").write_text(json.dumps(summary, indent=1))
        replace_between(docs / "results.md", "reproduce_small", text)
        plot(rows, docs / "results" / "tradeoff.png")
        copy_logs(rows, out, docs / "results" / "reproduce_small_logs")


def copy_logs(rows: list[dict[str, Any]], out: Path, logs: Path) -> list[Path]:
    """Copy the training log of each row evaluated under ``out`` into ``logs`` (as
    ``<protocol>_<run>.log``) and return the copies. A run whose training failed has a log but no
    evaluation: its row is the published one, whose log stays."""
    logs.mkdir(exist_ok=True)
    copied = []
    for r in rows:
        folder = out / r["protocol"]
        src = folder / f"{r['run']}.log"
        if src.exists() and (folder / f"eval_{r['run']}" / "results.json").exists():
            copied.append(logs / f"{r['protocol']}_{r['run']}.log")
            copied[-1].write_text(src.read_text())
    return copied


PLOTTED = ("dual", *(v for v, extra in VARIANTS.items() if set(extra) == {"model_kwargs"}))
"""Variants of the trade-off plot: the library defaults (``dual``) and each variant that changes only
the model's gate arguments (``width``: width gates), so every gate type run with the defaults is
drawn; the option variants and the paper-setting and study runs are in the tables."""


def gate_type_of(row: dict[str, Any]) -> str:
    """The gate type a run trained with, from its recorded config (``model_kwargs``; channel gates
    when it names none)."""
    kwargs = row.get("config", {}).get("model_kwargs") or {}
    return str(kwargs.get("gate_type", "channel"))


def tradeoff_points(rows: list[dict[str, Any]]) -> list[TradeoffPoint]:
    """The points of :func:`plot`: per ``main``-protocol variant of :data:`PLOTTED` (and vanilla)
    and mode, the mean over its pretraining seeds (the seeds' own points are in the tables), each
    gated and dense point tagged with its run's gate type."""
    from timm_gated_ssl.results import TradeoffPoint

    main = [r for r in rows if r["protocol"] == "main"
            and (r["variant"] == "vanilla" or r["variant"].rsplit("_td", 1)[0] in PLOTTED)]
    points = []
    for variant in sorted({r["variant"] for r in main}):
        runs = [r for r in main if r["variant"] == variant]
        label = f"{variant} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
        if "vanilla" in runs[0]:
            points.append(TradeoffPoint(label, macs=1.0, mac_fraction=1.0, kind="vanilla",
                                        accuracy=_mean([r["vanilla"]["linear_top1"] for r in runs])))
            continue
        gate_type = gate_type_of(runs[0])
        points.append(TradeoffPoint(f"{label} dense", macs=1.0, mac_fraction=1.0, kind="dense",
                                    accuracy=_mean([r["dense"]["linear_top1"] for r in runs]),
                                    gate_type=gate_type))
        for key in ("gated", "gated_calibrated"):
            if all(key in r for r in runs):
                fraction = _mean([r[key]["mac_fraction"] for r in runs])
                points.append(TradeoffPoint(f"{label} {key}", macs=fraction, mac_fraction=fraction,
                                            accuracy=_mean([r[key]["linear_top1"] for r in runs]),
                                            budget=runs[0]["budget"], calibrated=key == "gated_calibrated",
                                            gate_type=gate_type))
    return points


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Linear top-1 against the MAC fraction (:func:`tradeoff_points`): one set of series (calibrated
    curve, trained threshold, dense) per gate type run with the library defaults, and vanilla."""
    from timm_gated_ssl.eval.plots import plot_tradeoff

    plot_tradeoff(tradeoff_points(rows), path=path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=["train", "evaluate", "all", "report", "plot"], default="all",
                        help="plot: redraw docs/results/tradeoff.png from the published JSON, no training")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="main")
    parser.add_argument("--runs", nargs="+", default=["vanilla", "dual_td0.3"])
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "out" / "reproduce_small"))
    parser.add_argument("--publish", action="store_true", help="write the docs/results files (report phase)")
    parser.add_argument("--precision", choices=PRECISIONS, default="bf16",
                        help="bf16 autocast (default, every published run) or fp32 (train phase)")
    parser.add_argument("--sweep", action="store_true",
                        help=f"also calibrate each gated run to every budget in {SWEEP} (evaluate phase; slower)")
    args = parser.parse_args()
    out = Path(args.output)
    if args.phase == "report":
        report(out, publish=args.publish)
        return
    if args.phase == "plot":
        docs = ROOT / "docs" / "results"
        plot(json.loads((docs / "reproduce_small.json").read_text())["runs"], docs / "tradeoff.png")
        return
    for name in args.runs:
        split_name(name)  # refuse an unknown run before any training
    base = out / args.protocol
    base.mkdir(parents=True, exist_ok=True)
    for name in args.runs:
        if args.phase in ("train", "all"):
            train(name, args.protocol, base, precision=args.precision)
        if args.phase in ("evaluate", "all"):
            evaluate(name, args.protocol, base, sweep=args.sweep)


if __name__ == "__main__":
    main()
