"""Small helpers shared by the tests (not fixtures: plain functions)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from types import ModuleType

import torch
from torch import nn


@torch.no_grad()
def randomize_norms(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """Give every norm layer non-trivial affine parameters and running statistics.

    timm zero-initialises the last BN of each residual branch, which would make a gated branch
    contribute nothing and hide every difference between the modes.
    """
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.affine:
            module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
            module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
            if module.running_mean is not None:
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
    return model


def snapshot(*roots: Path) -> dict[str, str]:
    """``{path: md5}`` of every file under ``roots`` (a missing root gives nothing), to assert that a
    refused command left every file the user had exactly as it was."""
    found = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            found[str(path)] = hashlib.md5(path.read_bytes()).hexdigest()
    return found


def one_error_line(code: int, err: str) -> str:
    """Assert a script's user-facing failure: exit status 2 and exactly one ``error:`` line, the last
    one on stderr (a progress bar of ``datasets`` may come above it), and no traceback."""
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert code == 2, (code, err)
    assert len(lines) == 1 and err.strip().endswith(lines[0]) and "Traceback" not in err, err
    return lines[0]


ROOT = Path(__file__).resolve().parents[1]


def load_script(path: str) -> ModuleType:
    """A script of the repository (``recipes/finetune.py``, ``benchmarks/...``) imported as a module,
    so tests run its ``main`` / ``cli`` in-process as a user runs the file."""
    spec = importlib.util.spec_from_file_location(Path(path).stem + "_script", ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
