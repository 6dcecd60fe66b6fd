"""The Fashion-MNIST reproduction with a gated ViT instead of a ResNet (docs/vit.md, "Co-training on
Fashion-MNIST").

Same protocols, evaluation and report as ``benchmarks/reproduce_small.py`` (whose functions this
script runs with its own runs and aims): ViT-Ti with 4 px patches at 28 px
(``gated_vit_tiny_patch4_32`` with ``img_size: 28``: 49 patches + class token), VICReg, the settings
of ``recipes/configs/fashion_mnist_vicreg_vit_td05.yaml`` (AdamW, lr 5e-4 per 256, weight decay
0.05), batch 256, bf16 autocast.

Runs (``--runs``; a ``_s<N>`` suffix trains with seed N):

* ``vanilla``: the plain ``vit_tiny_patch4_32``, gating off, the identical recipe;
* ``dual_td{0.3,0.5}``: channel gates (any subset of heads and MLP units per input);
* ``width_td0.5``: width gates, 3 levels (a prefix of the 3 heads and of the MLP units; ``RUNS``
  says why not at t_d 0.3);
* ``lr2e-3_td0.5``: ``dual_td0.5`` at 4x the config's learning rate (the config's search);
* ``gatelr10_td0.5``: ``dual_td0.5`` with the gates alone at 10x the rate (``--gate_lr_scale 10``);
* ``posthoc_width_td0.5``, ``posthoc_td{0.3,0.5}``: post-hoc gating (item 4 of the ViT issue) of the
  ``vanilla`` checkpoint of the same output, with the post-hoc recipe of ``benchmarks/posthoc.py``
  (``POSTHOC``: frozen dense mode as the teacher, feature distillation and the budget terms alone,
  AdamW) for 88 steps, 25 % of the vanilla run's 350 as there; width gates (3 levels) or channel
  gates. Judged by that issue's aims (:func:`posthoc_aims`); ``posthoc_width_long_td0.5``: the
  same for 176 steps (half of vanilla's).

Aims (the ViT issue), judged on ``main``-protocol runs with the current schedule: gated >= dense -
1.5 (linear top-1) at t_d 0.5 and - 2.5 at 0.3; dense >= vanilla - 2.0; MAC fraction within +-0.03
of t_d before calibration. ``dual_*`` give the verdict; ``width_*`` get the same aims alongside.
``--phase report --publish`` writes docs/results/reproduce_vit.json (runs, aims) and the tables
between the ``reproduce_vit`` markers in docs/vit.md.

Usage:
    python benchmarks/reproduce_vit.py --protocol main --runs vanilla dual_td0.5 dual_td0.5_s1 dual_td0.3
    python benchmarks/reproduce_vit.py --protocol main --runs posthoc_width_td0.5   # after vanilla
    python benchmarks/reproduce_vit.py --phase report --publish
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _seeds
import posthoc
import reproduce_small as small
from _publish import replace_between

ROOT = small.ROOT
CONFIG = "recipes/configs/fashion_mnist_vicreg_vit_td05.yaml"
COMMON = ["--config", CONFIG]
"""Everything but the run's model, gates and budget comes from the config (the protocol's length
and the seed from ``reproduce_small.train_command``)."""
WIDTH = "{img_size: 28, gate_type: width, gate_levels: 3}"
POSTHOC = [
    "--init_from", "INIT", "--freeze_dense", "true", "--ssl_weight", "0", "--distill_weight", "1",
    "--optimizer", "adamw", "--lr", posthoc.DISTILL_LR, "--weight_decay", "0", "--warmup_epochs", "0.3",
    "--budget_tolerance", "null", "--train_subset", "22528", "--epochs", "1",
]
"""The post-hoc recipe (``benchmarks/posthoc.py``'s ``DISTILL``, ``recipes/configs/posthoc_width_td05.yaml``)
for 88 steps of 256; ``INIT`` is the ``vanilla`` run of the same output (:func:`with_init`);
``--budget_tolerance null`` keeps the trained threshold, so "before calibration" is what training reached."""
RUNS: dict[str, list[str]] = {
    "vanilla": ["--model", "vit_tiny_patch4_32", "--gating", "false"],
    **{f"dual_td{t}": ["--budget", str(t)] for t in (0.3, 0.5)},
    "width_td0.5": ["--budget", "0.5", "--model_kwargs", WIDTH],
    "lr2e-3_td0.5": ["--budget", "0.5", "--lr", "0.002"],
    "gatelr10_td0.5": ["--budget", "0.5", "--gate_lr_scale", "10"],
    "posthoc_width_td0.5": ["--budget", "0.5", "--model_kwargs", WIDTH, *POSTHOC],
    **{f"posthoc_td{t}": ["--budget", str(t), *POSTHOC] for t in (0.3, 0.5)},
    "posthoc_width_long_td0.5": ["--budget", "0.5", "--model_kwargs", WIDTH, *POSTHOC, "--train_subset", "45056"],
}
"""No ``width_td0.3``: ViT-Ti has 3 heads, so width gates have at most 3 levels, and the narrowest
(one head, a third of the MLP units) still runs 0.335 of the dense MACs at 28 px
(``timm_gated_ssl.mac_floor``); the recipe refuses the budget."""
AIMS_GAP = {0.3: 2.5, 0.5: 1.5}
"""Largest allowed dense - gated linear-probe gap (points) per budget."""
AIM_DENSE_VS_VANILLA, AIM_MAC_BEFORE = 2.0, 0.03
JSON_PATH = ROOT / "docs" / "results" / "reproduce_vit.json"
DOC_PATH, MARKER = ROOT / "docs" / "vit.md", "reproduce_vit"


def with_init(runs: dict[str, list[str]], out: Path) -> dict[str, list[str]]:
    """``runs`` with each ``INIT`` replaced by the ``vanilla`` checkpoint under ``out`` (the
    protocol's folder), which a post-hoc run gates."""
    return {name: [str(out / "vanilla") if a == "INIT" else a for a in args] for name, args in runs.items()}


def is_posthoc(row: dict[str, Any]) -> bool:
    return row["variant"].startswith("posthoc")


def posthoc_aims(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The post-hoc issue's aims (``benchmarks/posthoc.py``: gated >= init dense - 1.0, the frozen
    dense mode equal to the init's, MAC fraction within 0.03 of t_d before calibration) for each
    post-hoc run, against the seed-0 ``vanilla`` run of the current schedule, the encoder it gates."""
    init = next((r for r in _seeds.current(rows) if r["variant"] == "vanilla" and r["seed"] == 0), None)
    base = None if init is None else init["vanilla"]["linear_top1"]
    return [a for r in rows if is_posthoc(r) and "gated" in r for a in posthoc.run_aims(r["run"], r, base, frozen=True)]


def posthoc_table(rows: list[dict[str, Any]], found: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of the post-hoc runs and their aims (none: no lines)."""
    chosen = [r for r in rows if is_posthoc(r)]
    if not chosen:
        return []
    lines = ["**Post-hoc gating of `vanilla`** (the post-hoc recipe, `POSTHOC`)", "",
             "| run | steps | t_d | dense linear | gated linear | gated k-NN | MAC fraction | calibrated MAC fraction "
             "| calibrated linear |", "|---|---|---|---|---|---|---|---|---|"]
    for r in chosen:
        lines.append(f"| {r['run']} | {r['steps']} | {r['budget']} | {small._cell(r, 'dense', 'linear_top1')} | "
                     f"{small._cell(r, 'gated', 'linear_top1')} | {small._cell(r, 'gated', 'knn_top1')} | "
                     f"{small._mac_cell(r)} | "
                     f"{small._cell(r, 'gated_calibrated', 'mac_fraction', '{:.3f}')} | "
                     f"{small._cell(r, 'gated_calibrated', 'linear_top1')} |")
    return [*lines, "", *small.aims_table(found), ""]


def vit_aims(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The aims of the channel-gated runs (the verdict) and, per budget, the same aims of the
    width-gated runs."""
    kwargs = {"gaps": AIMS_GAP, "dense_vs_vanilla": AIM_DENSE_VS_VANILLA, "mac_before": AIM_MAC_BEFORE,
              "mac_after": None}
    found = small.aims(rows, {t: f"dual_td{t}" for t in AIMS_GAP}, **kwargs)
    width = {name: small.aims(rows, {small.budget_of(name, RUNS): name}, **kwargs)
             for name in RUNS if name.startswith("width_")}
    return found, {name: entries for name, entries in width.items()
                   if any(entry["met"] is not None for entry in entries)}


def report(out: Path, *, publish: bool) -> dict[str, Any]:
    """Every run evaluated under ``out`` (plus the published runs it does not hold): tables, aims,
    JSON; with ``publish`` into docs/."""
    rows = small.gather_rows(out, JSON_PATH, RUNS)
    found, width = vit_aims(rows)
    trained = [r for r in rows if not is_posthoc(r)]  # the runs pretrained by this script's protocol
    spread = small.seed_spread(trained)
    gating = posthoc_aims(rows)
    text = small.tables(trained, found, width, spread)
    text = "\n".join([text.rstrip("\n"), "", *posthoc_table(rows, gating)]) if gating else text
    print(text)
    summary = {"aims": found, "width_aims": width, "posthoc_aims": gating, "seed_spread": spread, "runs": rows,
               "protocols": small.PROTOCOLS, "config": CONFIG, "run_args": RUNS}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    if publish:
        JSON_PATH.write_text(json.dumps(summary, indent=1))
        replace_between(DOC_PATH, MARKER, text)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=["train", "evaluate", "all", "report"], default="all")
    parser.add_argument("--protocol", choices=sorted(small.PROTOCOLS), default="main")
    parser.add_argument("--runs", nargs="+", default=["vanilla", "dual_td0.5"])
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "out" / "reproduce_vit"))
    parser.add_argument("--precision", choices=small.PRECISIONS, default="bf16")
    parser.add_argument("--publish", action="store_true", help="write the docs files (report phase)")
    args = parser.parse_args()
    out = Path(args.output)
    if args.phase == "report":
        report(out, publish=args.publish)
        return
    for name in args.runs:
        small.split_name(name, RUNS)  # refuse an unknown run before any training
    base = out / args.protocol
    base.mkdir(parents=True, exist_ok=True)
    for name in args.runs:
        if args.phase in ("train", "all"):
            small.train(name, args.protocol, base, precision=args.precision, runs=with_init(RUNS, base), common=COMMON)
        if args.phase in ("evaluate", "all"):
            small.evaluate(name, args.protocol, base, runs=RUNS)


if __name__ == "__main__":
    main()
