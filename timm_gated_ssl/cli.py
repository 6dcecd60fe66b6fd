"""The top-level error handling of every script in ``recipes/``: one line, no traceback.

A script's ``main`` raises; :func:`run_main` turns the library's own errors
(:class:`~timm_gated_ssl.errors.GatingError` and its subclasses), invalid values (``ValueError``),
file-system errors (``OSError``: a missing file, a full disk, a permission) and running out of
memory (torch's CPU allocator, CUDA's ``OutOfMemoryError``, Python's ``MemoryError``: a batch or
image size too large for the machine) into a single ``error: ...`` line on stderr and exit status
2. Anything else is a bug and keeps its traceback; ``TIMM_GATED_SSL_TRACEBACK=1`` shows the
traceback of the handled errors too.

Example:
    >>> if __name__ == "__main__":  # doctest: +SKIP
    ...     run_main(main)
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from .errors import GatingError

__all__ = [
    "HANDLED_ERRORS", "add_training_run_arguments", "cpu_has_fast_bf16", "error_line", "exit_status", "one_line",
    "out_of_memory_line", "run_main", "slow_bf16_warning", "warn_slow_bf16",
]

HANDLED_ERRORS: tuple[type[BaseException], ...] = (GatingError, ValueError, OSError)
"""Errors printed as one line; the rest are bugs and keep their traceback."""
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
_CPU_ALLOC = re.compile(r"can't allocate memory: you tried to allocate (\d+) bytes")


def add_training_run_arguments(parser: argparse.ArgumentParser, *, config_name: str) -> None:
    """The infrastructure flags every training recipe takes (not part of its typed config).

    Args:
        parser: The recipe's parser.
        config_name: The config class named in ``--config``'s help, e.g. ``"PretrainConfig"``.
    """
    parser.add_argument("--config", default=None, help=f"YAML file of {config_name} fields")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a state folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in output_dir")
    parser.add_argument("--report_to", default=None, help="tensorboard, wandb, all, ... (Accelerate trackers)")
    parser.add_argument("--mixed_precision", default=None, choices=["no", "fp16", "bf16"])
    parser.add_argument("--cpu", action="store_true", help="force the CPU")
    parser.add_argument("--no_progress", action="store_true")
    parser.add_argument("--channels_last", action="store_true",
                        help="NHWC memory format for the backbone and the training batches (faster "
                             "convolutions on GPUs and with bf16 on CPUs)")


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (AVX-512 or newer); True when torch cannot say.

    Without them (AVX2-only CPUs) bf16 autocast falls back to slow reference code
    (``benchmarks/cpu_bf16.py``: a ResNet-18 training step many times slower than in fp32).
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def slow_bf16_warning(mixed_precision: str | None, device_type: str) -> str | None:
    """The one-line warning for bf16 autocast on a CPU without bf16 kernels, else None.

    A warning, not an error: the run is correct, only slow, and the user may want bf16 numerics.

    Args:
        mixed_precision: Accelerate's setting (``"no"``, ``"fp16"``, ``"bf16"``, or None).
        device_type: The device the run trains on (``accelerator.device.type``).
    """
    if mixed_precision != "bf16" or device_type != "cpu" or cpu_has_fast_bf16():
        return None
    return ("warning: bf16 autocast on this CPU has no bf16 kernels (oneDNN needs AVX-512) and runs many "
            "times slower than fp32; pass --mixed_precision no")


def warn_slow_bf16(accelerator: Any) -> None:
    """Print :func:`slow_bf16_warning` for an ``accelerate.Accelerator``, once (main process)."""
    warning = slow_bf16_warning(accelerator.mixed_precision, accelerator.device.type)
    if warning and accelerator.is_main_process:
        print(warning, file=sys.stderr)


def error_line(error: BaseException) -> str:
    """``error: <message>`` on one line (newlines of multi-line messages become spaces)."""
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, KeyError) and message.startswith("'") and message.endswith("'"):
        message = message[1:-1]
    return f"error: {message}"


def out_of_memory_line(error: BaseException) -> str | None:
    """The one line for an allocation failure, or None if ``error`` is not one.

    torch reports a failed CPU allocation as a plain ``RuntimeError`` (``DefaultCPUAllocator:
    can't allocate memory``) and a CUDA one as ``torch.OutOfMemoryError``; both, and Python's
    ``MemoryError``, mean the run asked for more memory than the machine has, which the user fixes
    with smaller batches or images, not by reading a traceback.
    """
    torch = sys.modules.get("torch")
    cuda_oom = torch is not None and isinstance(error, getattr(torch, "OutOfMemoryError", ()))
    match = _CPU_ALLOC.search(str(error)) if isinstance(error, RuntimeError) else None
    if not (cuda_oom or match or isinstance(error, MemoryError)):
        return None
    where = "GPU" if cuda_oom else "CPU"
    asked = f" (an allocation of {int(match.group(1)) / 2**30:.1f} GiB failed)" if match else ""
    return (f"error: out of {where} memory{asked}: lower --batch_size (pretraining keeps its global batch "
            "with --grad_accum_steps) or --image_size")


def one_line(error: BaseException) -> str | None:
    """The ``error: ...`` line for a handled error or an out-of-memory failure; None for a bug
    (and for everything when ``TIMM_GATED_SSL_TRACEBACK=1`` asks for tracebacks)."""
    if os.environ.get("TIMM_GATED_SSL_TRACEBACK", "") not in ("", "0"):
        return None
    if isinstance(error, HANDLED_ERRORS):
        return error_line(error)
    return out_of_memory_line(error)


def exit_status(main: Callable[..., int | None], *args: Any) -> int:
    """Run ``main(*args)`` and return its exit status, printing handled errors as one line.

    What :func:`run_main` does short of exiting; in-process callers (tests, notebooks) get the
    status the script would exit with.
    """
    try:
        return main(*args) or 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (*HANDLED_ERRORS, RuntimeError, MemoryError) as error:
        line = one_line(error)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return EXIT_ERROR


def run_main(main: Callable[[], int | None], *, hard_exit: bool = False) -> NoReturn:
    """Run ``main()`` and exit with its status, printing handled errors as one line.

    Args:
        main: The script's entry point; returns an exit status (None = 0).
        hard_exit: Leave with ``os._exit`` after flushing (for scripts whose process group may
            abort at interpreter exit, as gloo can after distributed work).
    """
    code = exit_status(main)
    sys.stdout.flush()
    sys.stderr.flush()
    if hard_exit:
        os._exit(code)
    sys.exit(code)
