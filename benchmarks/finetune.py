"""Fine-tuning against the frozen probe of the same checkpoint (docs/finetune.md, "Measured").

A fine-tune must not end below what a linear probe on frozen features already gives. This script
runs both on the same checkpoint and judges each fine-tuned head against the frozen probe's
accuracy in the same mode (dense, gated at the checkpoint's threshold):

* ``quickstart``: the README's checkpoint (``recipes/configs/quickstart.yaml``, trained here if
  ``--output`` does not hold it) on the embedded digits. Frozen probe: ``recipes/evaluate.py``.
  Fine-tunes: ``recipes/configs/finetune_quickstart.yaml`` (linear, 3 seeds) and
  ``finetune_quickstart_full.yaml`` (full, 1 seed), exactly as docs/finetune.md runs them.
* ``fashion_mnist``: checkpoints of ``benchmarks/reproduce_small.py`` (``--runs_dir``, ``--runs``).
  Frozen probe: the run's own ``eval_<run>/results.json`` (10k labelled images, 5 probe seeds).
  Fine-tunes on the same 10k-image budget (``FASHION``): linear and full, one seed each, bf16.

Aim (the fine-tuning issue): every fine-tuned head >= its mode's frozen probe - 2 points. Each
row keeps its command, wall time and the load average when it started (the machine is shared; a
time measured under load says so). ``--publish`` writes docs/results/finetune.json and the table
between the markers in docs/finetune.md.

Usage:
    python benchmarks/finetune.py --targets quickstart
    python benchmarks/finetune.py --targets fashion_mnist --runs_dir benchmarks/out/reproduce_v02/main \
        --runs dual_td0.3_s2
    python benchmarks/finetune.py --targets --publish      # report what --output holds
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _publish import replace_between
from quickstart import run as run_quickstart
from _timing import write_json

ROOT = Path(__file__).resolve().parents[1]
MARGIN = 2.0
MODES = ("dense", "gated")
QUICKSTART = "quickstart (digits, 16 px)"
LAUNCH = ["-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
          "--dynamo_backend", "no"]
"""Fine-tunes of a Fashion-MNIST reproduction checkpoint: 10k seeded training images (the probe's
bank size), mild crops with flips (clothes survive a flip; 8 % crops of 28 px do not hold one),
bf16 autocast as the checkpoints were trained."""
FASHION: dict[str, list[str]] = {
    "linear": ["--mode", "linear", "--epochs", "5", "--batch_size", "256", "--lr", "0.4", "--crop_scale_min", "0.8",
               "--seeds", "0"],
    "full": ["--mode", "full", "--epochs", "5", "--batch_size", "256", "--lr", "0.05", "--weight_decay", "0.0005",
             "--warmup_epochs", "0.5", "--crop_scale_min", "0.8", "--seeds", "0"],
}


def _shown(command: list[str]) -> str:
    """A command as a user types it (``accelerate launch ...``, paths relative to the repository)."""
    text = shlex.join(command[1:] if command[0] == sys.executable else command)
    return text.replace("-m accelerate.commands.launch", "accelerate launch").replace(str(ROOT) + "/", "")


def _run(command: list[str], log: Path) -> dict[str, Any]:
    """Run ``command`` from the repository root, its output in ``log``; its wall time and load."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    print(f"[{time.strftime('%H:%M:%S')}] {_shown(command)}", flush=True)
    with open(log, "w") as handle:
        code = subprocess.call(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    if code:
        raise SystemExit(f"{_shown(command)} failed (exit {code}); see {log}")
    return {"command": _shown(command), "seconds": round(time.perf_counter() - start, 1),
            "load_average_at_start": round(load, 2)}


def probe_of(results: Path) -> dict[str, dict[str, float]]:
    """``{mode: {"top1", "std", "mac_fraction"}}`` of the uncalibrated rows of an evaluation's results.json."""
    entries = json.loads(results.read_text())["entries"]
    return {e["mode"]: {"top1": e["linear_top1"], "std": e["linear_top1_std"], "mac_fraction": e["mac_fraction"]}
            for e in entries if e["mode"] in MODES and not e.get("calibrated")}


def finetuned_of(metrics: Path) -> dict[str, dict[str, float | None]]:
    """``{mode: {"top1", "std", "mac_fraction"}}`` of a fine-tune's metrics.json (heads dense and gated)."""
    m = json.loads(metrics.read_text())
    return {mode: {"top1": m[f"top1_{mode}"], "std": m.get(f"top1_{mode}_std"), "mac_fraction": m[f"mac_fraction_{mode}"]}
            for mode in MODES if f"top1_{mode}" in m}


def _finetune(checkpoint: Path, out: Path, name: str, flags: list[str], *, precision: str) -> dict[str, Any]:
    run_dir = out / name
    command = [sys.executable, *LAUNCH, "--mixed_precision", precision, "recipes/finetune.py",
               "--checkpoint", str(checkpoint), "--output_dir", str(run_dir), "--overwrite", "--no_progress", *flags]
    if (run_dir / "metrics.json").is_file():  # measured earlier: keep it (delete the folder to rerun)
        return json.loads((out / f"{name}.run.json").read_text())
    ran = _run(command, out / f"{name}.log")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ran.update(heads=finetuned_of(run_dir / "metrics.json"), train_seconds=round(metrics["wall_time_s"], 1),
               steps=metrics["steps"])
    write_json(out / f"{name}.run.json", ran)
    return ran


def quickstart(out: Path) -> dict[str, Any]:
    """The README's checkpoint on digits: frozen probe, linear and full fine-tunes."""
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "quickstart"
    pretrain = None
    if not (checkpoint / "model.safetensors").is_file():  # the README's command, as benchmarks/quickstart.py runs it
        pretrain = run_quickstart(checkpoint)
    probe_dir = checkpoint / "eval"
    if not (probe_dir / "results.json").is_file():
        _run([sys.executable, "recipes/evaluate.py", "--checkpoint", str(checkpoint), "--dataset", "digits",
              "--output_dir", str(probe_dir), "--no_progress", "--cpu"], out / "quickstart_probe.log")
    fine = {mode: _finetune(checkpoint, out, f"quickstart_{mode}",
                            ["--config", f"recipes/configs/finetune_quickstart{'' if mode == 'linear' else '_full'}.yaml"],
                            precision="no") for mode in ("linear", "full")}
    return _row(QUICKSTART, "recipes/evaluate.py --checkpoint runs/quickstart --dataset digits",
                probe_of(probe_dir / "results.json"), fine, pretrain=pretrain)


def fashion_mnist(runs_dir: Path, run: str, out: Path) -> dict[str, Any]:
    """A reproduction checkpoint on Fashion-MNIST: its own probe against linear and full fine-tunes."""
    checkpoint, probe = runs_dir / run, runs_dir / f"eval_{run}" / "results.json"
    for needed in (checkpoint / "model.safetensors", probe):
        if not needed.is_file():
            raise SystemExit(f"{needed} is missing: train and evaluate the run first "
                             f"(python benchmarks/reproduce_small.py --protocol main --runs {run})")
    out.mkdir(parents=True, exist_ok=True)
    data = ["--dataset", "fashion_mnist", "--image_size", "28", "--train_subset", "10000"]
    fine = {mode: _finetune(checkpoint, out, f"{run}_{mode}", data + FASHION[mode], precision="bf16")
            for mode in ("linear", "full")}
    return _row(f"{run} (Fashion-MNIST, 28 px)", "benchmarks/reproduce_small.py (evaluate phase)",
                probe_of(probe), fine)


def _row(name: str, probe_command: str, probe: dict[str, Any], fine: dict[str, dict[str, Any]], *,
         pretrain: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"checkpoint": name, "probe": probe, "probe_command": probe_command, "finetune": fine,
            "pretrain": pretrain, "date": time.strftime("%Y-%m-%d")}


def aims(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every fine-tuned head against its mode's frozen probe: ``{"aim", "value", "target", "met"}``,
    ``value`` being fine-tuned minus probe (points)."""
    found = []
    for row in rows:
        for how, run in row["finetune"].items():
            for mode in MODES:
                head, probe = run["heads"].get(mode), row["probe"].get(mode)
                if head is None or probe is None:
                    continue
                diff = head["top1"] - probe["top1"]
                found.append({"aim": f"{row['checkpoint']}: {how} fine-tune, {mode} >= frozen probe - {MARGIN:g}",
                              "value": round(diff, 2), "target": -MARGIN, "met": diff >= -MARGIN})
    return found


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| checkpoint | mode | frozen probe | linear fine-tune | full fine-tune | full: gated MAC fraction |",
             "|---|---|---|---|---|---|"]

    def cell(run: dict[str, Any] | None, mode: str, probe: float) -> str:
        head = (run or {}).get("heads", {}).get(mode)
        if head is None:
            return "-"
        std = f" ± {head['std']:.2f}" if head.get("std") else ""
        return f"{head['top1']:.2f}{std} ({head['top1'] - probe:+.2f})"

    for row in rows:
        for mode in MODES:
            probe = row["probe"][mode]
            full = row["finetune"].get("full", {}).get("heads", {}).get(mode)
            mac = f"{full['mac_fraction']:.3f}" if mode == "gated" and full else "-"
            lines.append(f"| {row['checkpoint']} | {mode} | {probe['top1']:.2f} ± {probe['std']:.2f} "
                         f"| {cell(row['finetune'].get('linear'), mode, probe['top1'])} "
                         f"| {cell(row['finetune'].get('full'), mode, probe['top1'])} | {mac} |")
    return "\n".join(lines)


def times_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| checkpoint | run | steps | training (s) | whole command (s) | load average at start |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        for how, run in row["finetune"].items():
            lines.append(f"| {row['checkpoint']} | {how} | {run['steps']} | {run['train_seconds']:.0f} "
                         f"| {run['seconds']:.0f} | {run['load_average_at_start']:.1f} |")
    return "\n".join(lines)


def aims_table(found: list[dict[str, Any]]) -> str:
    lines = ["| aim | fine-tuned - probe | met |", "|---|---|---|"]
    lines += [f"| {a['aim']} | {a['value']:+.2f} | {'yes' if a['met'] else '**no**'} |" for a in found]
    return "\n".join(lines)


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def expected(row: dict[str, Any]) -> str:
    """The README's expected numbers for the quickstart's probe and fine-tunes (measured, not typed)."""
    probe, fine = row["probe"], row["finetune"]

    def heads(run: dict[str, Any]) -> str:
        return f"{run['heads']['dense']['top1']:.1f} % dense / {run['heads']['gated']['top1']:.1f} % gated"

    return (f"Expected (measured {row['date']} on 2 CPU cores, `benchmarks/finetune.py`): frozen linear probe "
            f"{probe['dense']['top1']:.1f} % dense / {probe['gated']['top1']:.1f} % gated; linear evaluation "
            f"(3 seeds) {heads(fine['linear'])} in {_minutes(fine['linear']['seconds'])}; full fine-tune "
            f"{heads(fine['full'])} at {fine['full']['heads']['gated']['mac_fraction']:.3f} of the dense MACs in "
            f"{_minutes(fine['full']['seconds'])} (whole commands, load average at start "
            f"{fine['linear']['load_average_at_start']:.1f} / {fine['full']['load_average_at_start']:.1f}).")


def report(rows: list[dict[str, Any]], *, publish: bool) -> None:
    found = aims(rows)
    text = "\n\n".join([table(rows), times_table(rows), aims_table(found)])
    print(text)
    if publish:
        write_json(ROOT / "docs/results/finetune.json", {"aims": found, "rows": rows, "margin": MARGIN})
        replace_between(ROOT / "docs/finetune.md", "finetune", text)  # the tables
        quick = [r for r in rows if r["checkpoint"] == QUICKSTART]
        if quick:
            replace_between(ROOT / "README.md", "finetune", expected(quick[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="*", choices=["quickstart", "fashion_mnist"], default=["quickstart"])
    parser.add_argument("--runs_dir", default="benchmarks/out/reproduce_v02/main")
    parser.add_argument("--runs", nargs="+", default=["dual_td0.3_s2"])
    parser.add_argument("--output", default="benchmarks/out/finetune")
    parser.add_argument("--publish", action="store_true")
    args = parser.parse_args()
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.json"
    rows = {r["checkpoint"]: r for r in (json.loads(rows_path.read_text())["rows"] if rows_path.is_file() else [])}
    if "quickstart" in args.targets:
        row = quickstart(out)
        rows[row["checkpoint"]] = row
        write_json(rows_path, {"rows": list(rows.values())})
    for run in args.runs if "fashion_mnist" in args.targets else []:
        row = fashion_mnist(Path(args.runs_dir).resolve(), run, out / "fashion_mnist")
        rows[row["checkpoint"]] = row
        write_json(rows_path, {"rows": list(rows.values())})
    report(list(rows.values()), publish=args.publish)


if __name__ == "__main__":
    main()
