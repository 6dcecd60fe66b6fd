"""Timing helpers for the benchmarks: interleaved pairs and the median of per-pair ratios.

This machine's speed drifts by up to 30% within minutes, so a variant is never compared with a
baseline timed minutes apart: each repeat times the baseline then the variant back to back, and the
reported ratio is the median over repeats of ``variant / baseline``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def time_call(fn: Callable[[], Any], *, inner: int = 1) -> float:
    """Seconds per call of ``fn`` averaged over ``inner`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


def interleaved_ratios(
    baseline: Callable[[], Any],
    variants: dict[str, Callable[[], Any]],
    *,
    repeats: int,
    inner: int = 1,
    warmup: int = 2,
    inference: bool = True,
) -> dict[str, dict[str, float]]:
    """Median ratio ``variant / baseline`` over interleaved repeats, plus median times (seconds).

    ``inference=True`` times the calls under ``torch.inference_mode``; pass False for training steps.
    """
    with torch.inference_mode(inference):
        return _interleaved(baseline, variants, repeats=repeats, inner=inner, warmup=warmup)


def _interleaved(
    baseline: Callable[[], Any],
    variants: dict[str, Callable[[], Any]],
    *,
    repeats: int,
    inner: int,
    warmup: int,
) -> dict[str, dict[str, float]]:
    for fn in [baseline, *variants.values()]:
        for _ in range(warmup):
            fn()
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    times: dict[str, list[float]] = {name: [] for name in ["baseline", *variants]}
    for _ in range(repeats):
        for name, fn in variants.items():
            base = time_call(baseline, inner=inner)
            value = time_call(fn, inner=inner)
            ratios[name].append(value / base)
            times["baseline"].append(base)
            times[name].append(value)
    out = {"baseline": {"seconds": statistics.median(times["baseline"])}}
    for name in variants:
        out[name] = {"ratio": statistics.median(ratios[name]), "seconds": statistics.median(times[name])}
    return out


def ort_session(path: str | Path, threads: int) -> Any:
    """An onnxruntime CPU session with ``threads`` intra-op threads and one inter-op thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")


def latency_preset(parser: argparse.ArgumentParser, args: argparse.Namespace, presets: dict[str, dict[str, Any]],
                   *, images: str = "a dataset preset such as fashion_mnist, or a .pt tensor") -> dict[str, Any]:
    """The latency benchmarks' shared option handling: refuse ``--checkpoint`` without ``--images``
    (``images`` says what that option takes), copy the chosen preset with ``--repeats`` applied,
    and set torch's thread count to ``--threads``."""
    if args.checkpoint and not args.images:
        parser.error(f"--checkpoint needs --images ({images})")
    preset = dict(presets[args.preset])
    if args.repeats:
        preset["repeats1"], preset["repeatsN"] = args.repeats
    torch.set_num_threads(args.threads)
    return preset
