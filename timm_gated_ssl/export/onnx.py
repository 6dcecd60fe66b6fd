"""Export a model to ONNX as it is: a plain timm model, a static export, or a gated model.

``torch.onnx.export(..., dynamo=True)`` traces the model with ``torch.export`` and translates the
graph with onnxscript, so the gates' forward hooks are part of the traced graph:

* a plain timm model or ``export_static(...).model`` (a plain, narrower ResNet) exports to the
  same network, and its outputs in onnxruntime match PyTorch to float rounding;
* a gated model exports in its current mode. In ``"gated"`` mode the data-dependent masks are in
  the graph (gate network, ``a + offset >= 0``, multiply), so onnxruntime reproduces the PyTorch
  gated mode's outputs, and users can check a budget's accuracy on the deployment runtime. ONNX has
  no per-sample channel slicing: the runtime still computes every channel and multiplies the off
  ones by zero, so a gated export is as slow as the dense model (slightly slower, by the gates).
  For real savings export ``export_static(...).model`` (docs/speed.md).

The model is exported in eval mode (deterministic gates, BatchNorm running statistics); its
train/eval flags are restored afterwards. Nothing a user has is replaced: the export is written
into a temporary folder beside ``path`` and moved into place only when complete (a failed or
interrupted export leaves the earlier files as they were and no temporaries), and an existing file
at ``path`` or at its external-data sibling ``path + ".data"`` is replaced only when it is an
earlier export of this library (recorded in the model's ``metadata_props``) and ``overwrite=True``. Needs the optional extra: ``pip install
"timm_gated_ssl[onnx]"`` (onnx, onnxruntime, onnxscript).

Example:
    >>> export_onnx(model, "model.onnx", input_size=(3, 32, 32))  # doctest: +SKIP
    >>> onnx_max_abs_diff(model, "model.onnx", torch.randn(4, 3, 32, 32))  # doctest: +SKIP
    3.1e-07
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["OnnxExport", "export_onnx", "is_our_export", "onnx_max_abs_diff"]

INPUT_NAME = "images"
OUTPUT_NAME = "output"
PRODUCER_KEY = "timm_gated_ssl"
"""``metadata_props`` key of every ONNX file this library writes (value: the library's version)."""
DATA_SUFFIX = ".data"
"""The external-data file of ``model.onnx`` is ``model.onnx.data`` (torch's layout)."""
_EXTRA = 'pip install "timm_gated_ssl[onnx]" (or pip install onnx onnxruntime onnxscript)'


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: The ``.onnx`` file.
        input_size: ``(C, H, W)`` of one image.
        dynamic_batch: Whether the batch dimension is symbolic.
        gate_mode: ``"dense"`` or ``"gated"`` for a gated model, None for a plain one.
    """

    path: Path
    input_size: tuple[int, int, int]
    dynamic_batch: bool
    gate_mode: str | None


def _require(*modules: str) -> None:
    from ..errors import MissingDependencyError

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(f"ONNX export needs {', '.join(missing)}: {_EXTRA}")


def is_our_export(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an ONNX file written by :func:`export_onnx` (its ``metadata_props``
    carry :data:`PRODUCER_KEY`); False for any other file, ONNX or not."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends: not an ONNX file
        return False
    return any(prop.key == PRODUCER_KEY for prop in model.metadata_props)


def check_onnx_output(path: str | os.PathLike[str], *, overwrite: bool, name: str = "path") -> Path:
    """Check, before any work, that ``path`` (and ``path.data``) may be written.

    Raises:
        ConfigError: ``path`` is a folder, or its folder cannot be written.
        OutputExistsError: A file is in the way that is not an earlier export of this library (never
            replaced), or is one and ``overwrite`` is False.
    """
    from ..errors import OutputExistsError
    from ..files import check_output_file

    path = check_output_file(path, name=name)
    data = path.with_name(path.name + DATA_SUFFIX)
    ours = path.is_file() and is_our_export(path)
    for target in (path, data):
        if not (target.exists() or target.is_symlink()):
            continue
        if not ours:
            what = "its external-data file " if target == data else ""
            raise OutputExistsError(
                f"{name} {path}: {what}{target} exists and is not an ONNX export of timm_gated_ssl; "
                "refusing to replace it: choose another output path, or move the file away"
            )
        if not overwrite:
            raise OutputExistsError(f"{name} {path} exists (an earlier export); pass --overwrite "
                                    "(overwrite=True) to replace it")
    return path


def _check_input_size(input_size: object) -> tuple[int, int, int]:
    ok = (
        isinstance(input_size, Sequence) and len(input_size) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in input_size)
    )
    if not ok:
        raise ValueError(f"input_size must be (channels, height, width) of positive ints, got {input_size!r}")
    return tuple(input_size)  # type: ignore[return-value]


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    input_size: Sequence[int],
    dynamic_batch: bool = True,
    opset_version: int | None = None,
    overwrite: bool = False,
) -> OnnxExport:
    """Export ``model`` (in eval mode, in its current gate mode) to an ONNX file.

    Args:
        model: A timm model: plain, ``export_static(...).model``, or gated (``gated_*`` or after
            ``attach_gates``); a gated one is exported in the mode it is in
            (``timm_gated_ssl.gate_mode(model, "gated")`` around the call exports the gated mode).
        path: Output ``.onnx`` file (its folder is created).
        input_size: ``(C, H, W)`` of one image, e.g. ``(3, 224, 224)``.
        dynamic_batch: Make the batch dimension symbolic (any batch size at run time); False fixes
            it to 1.
        opset_version: ONNX opset (None: torch's default).
        overwrite: Replace an earlier export of this library at ``path``; other files are never
            replaced.

    Returns:
        An :class:`OnnxExport`.

    Raises:
        MissingDependencyError: onnx / onnxscript are not installed (an ``ImportError`` whose
            message names the extra).
        ValueError: A malformed ``input_size``.
        ConfigError: ``path`` is a folder or cannot be written.
        OutputExistsError: A file is in the way (see :func:`check_onnx_output`).
    """
    from ..attach import get_gate_mode, has_gates, iter_gates

    _require("onnx", "onnxscript")
    size = _check_input_size(input_size)
    out = check_onnx_output(path, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    # A batch of 2: torch.export specialises a dimension whose example size is 1.
    example = torch.randn(2 if dynamic_batch else 1, *size, device=device)
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    flags = {name: module.training for name, module in model.named_modules()}
    gates = [gate for _, gate in iter_gates(model)] if has_gates(model) else []
    recorded = [(gate.masks, getattr(gate, "_active", None)) for gate in gates]
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The gates record their last masks as plain attributes; tracing warns about that.
            warnings.filterwarnings("ignore", message=".*were assigned during export.*")
            program = torch.onnx.export(
                model, (example,), dynamo=True, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes=dynamic_shapes,
                opset_version=opset_version, verbose=False,
            )
        _save(program, out)
    finally:
        for name, module in model.named_modules():
            module.training = flags.get(name, module.training)
        for gate, (masks, active) in zip(gates, recorded):  # no traced tensors left behind
            gate.masks, gate._active = masks, active
    mode = get_gate_mode(model) if has_gates(model) else None
    return OnnxExport(out, size, dynamic_batch, mode)


def _save(program: Any, out: Path) -> None:
    """Write ``program`` to ``out`` (+ ``out.data``) through a temporary folder beside it."""
    from .. import __version__
    from ..files import honour_umask, staging_dir

    program.model.metadata_props[PRODUCER_KEY] = __version__
    data = out.with_name(out.name + DATA_SUFFIX)
    with staging_dir(out.parent, name="onnx_") as staging:
        program.save(str(staging / out.name), external_data=True)
        honour_umask(staging)
        staged_data = staging / data.name
        if staged_data.exists():  # data first: the graph marks completion
            os.replace(staged_data, data)
        else:
            data.unlink(missing_ok=True)  # an earlier export's data, which the new graph does not use
        os.replace(staging / out.name, out)


def onnx_max_abs_diff(model: nn.Module, path: str | os.PathLike[str], images: torch.Tensor) -> float:
    """Max ``|onnxruntime(images) - model(images)|``, the model in eval mode and its current gate
    mode (CPU execution provider); the check behind ``recipes/export_onnx.py --check``.

    Raises:
        ImportError: onnxruntime is not installed.
    """
    _require("onnxruntime")
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    flags = {name: module.training for name, module in model.named_modules()}
    model.eval()
    try:
        with torch.no_grad():
            parameter = next(model.parameters(), None)
            device = parameter.device if parameter is not None else torch.device("cpu")
            expected = model(images.to(device)).float().cpu()
    finally:
        for name, module in model.named_modules():
            module.training = flags.get(name, module.training)
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.float().cpu().numpy()})
    return float((torch.from_numpy(got) - expected).abs().max())
