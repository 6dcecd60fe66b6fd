"""The README's main job, timed: the quickstart recipe on the embedded digits, and what it prints.

Runs ``accelerate launch --cpu --num_processes 1 recipes/pretrain.py --config
recipes/configs/quickstart.yaml`` as the README does, times the whole command, and reads the run's
``metrics.json``. ``--publish`` writes docs/results/quickstart.json and the expected numbers
between the markers in README.md (measured numbers, not typed ones). Run it on a quiet machine:
the time is part of the result.

Usage:
    python benchmarks/quickstart.py --publish
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _publish import replace_between
from _timing import write_json

ROOT = Path(__file__).resolve().parents[1]


def run(output: Path) -> dict:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
               "recipes/pretrain.py", "--config", "recipes/configs/quickstart.yaml", "--output_dir", str(output),
               "--overwrite", "--no_progress"]
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    seconds = time.perf_counter() - start
    metrics = json.loads((output / "metrics.json").read_text())
    return {"command": "accelerate launch --cpu --num_processes 1 recipes/pretrain.py --config "
                       "recipes/configs/quickstart.yaml --output_dir runs/quickstart --overwrite",
            "command_seconds": round(seconds, 1), "metrics": metrics, "date": time.strftime("%Y-%m-%d"),
            "platform": platform.platform(), "processor": platform.processor() or platform.machine()}


def expected(result: dict) -> str:
    m = result["metrics"]
    return (f"Expected (measured {result['date']} on 2 CPU cores, `benchmarks/quickstart.py`): "
            f"{m['wall_time_s']:.0f} s of training ({m['steps']} steps), {result['command_seconds']:.0f} s for "
            f"the whole command after the install; k-NN top-1 {m['knn_dense']:.1f} % dense and "
            f"{m['knn_gated']:.1f} % gated, the gated mode at {m['mac_ratio']:.3f} of the dense MACs "
            f"(`t_d` 0.3). Numbers move by a few points with the machine's float rounding.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="benchmarks/out/quickstart")
    parser.add_argument("--publish", action="store_true")
    args = parser.parse_args()
    result = run(Path(args.output).resolve())
    write_json(Path(args.output) / "quickstart.json", result)
    text = expected(result)
    print(text)
    if args.publish:
        write_json(ROOT / "docs/results/quickstart.json", result)
        replace_between(ROOT / "README.md", "quickstart", text)


if __name__ == "__main__":
    main()
