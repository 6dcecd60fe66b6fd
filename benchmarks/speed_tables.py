"""Markdown tables for ``docs/speed.md`` from the JSON that ``latency.py`` / ``latency_gpu.py`` write.

Usage:
    python benchmarks/speed_tables.py docs/results/speed/cpu_*.json docs/results/speed/vit.json
    python benchmarks/speed_tables.py --gpu docs/results/speed/gpu.json docs/results/speed/gpu_amp.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

COLUMNS = ["dense", "masked", "compact", "static", "sliced"]


def cpu_rows(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in results:
        for key in ("batch1", f"batch{r['big_batch']}"):
            row = r[key]
            frac = r["mac_fraction_bench1"] if key == "batch1" else r["mac_fraction_benchN"]
            cells = [f"{row[c]['ratio']:.3f}" for c in COLUMNS]
            cells += [f"{row['compact']['ratio'] / row['sliced']['ratio']:.2f}",
                      f"{row['compact']['ratio'] / row['dense']['ratio']:.2f}"]
            name = f"{r['model']} {r['img_size']} px"
            lines.append(f"| {name} | {r['budget']:.1f} | {frac:.2f} | {key[5:]} | " + " | ".join(cells) + " |")
    return lines


def strategy_rows(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in results:
        row = r[f"batch{r['big_batch']}"]
        lines.append(
            f"| {r['model']} {r['img_size']} px t_d {r['budget']:.1f}, batch {r['big_batch']} | "
            f"{row['compact']['ratio']:.3f} | {row['compact_per_sample']['ratio']:.3f} | "
            f"{row['compact_group']['ratio']:.3f} | {r['union_width_fraction_batchN']:.2f} | "
            f"{r['static_mac_fraction']:.2f} |"
        )
    return lines


def gpu_rows(payload: dict[str, Any]) -> list[str]:
    lines = []
    for r in payload["results"]:
        for key in sorted((k for k in r if k.startswith("batch")), key=lambda k: int(k[5:])):
            row = r[key]
            cells = " | ".join(f"{row[c]['ratio']:.3f}" for c in ("dense", "masked", "compact", "static"))
            lines.append(f"| {r['model']} {r['img_size']} px | {'bf16' if r['amp_bf16'] else 'fp32'} | "
                         f"{r['budget']:.1f} | {key[5:]} | {cells} | {row['baseline']['seconds'] * 1e3:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--gpu", action="store_true", help="the files are latency_gpu.py output")
    args = parser.parse_args()
    payloads = [json.loads(f.read_text()) for f in args.files]
    if args.gpu:
        print("| model | precision | t_d | batch | dense | masked | compact | static | plain ms |")
        print("|---|---|---|---|---|---|---|---|---|")
        for p in payloads:
            print("\n".join(gpu_rows(p)))
        return
    results = [r for p in payloads for r in p["results"]]
    print("| model | t_d | MACs | batch | " + " | ".join(COLUMNS) + " | compact/sliced | compact/dense |")
    print("|---|---|---|---|" + "---|" * (len(COLUMNS) + 2))
    print("\n".join(cpu_rows(results)))
    print("\n| case | union | per_sample | group | union width | static MACs |")
    print("|---|---|---|---|---|---|")
    print("\n".join(strategy_rows(results)))


if __name__ == "__main__":
    main()
