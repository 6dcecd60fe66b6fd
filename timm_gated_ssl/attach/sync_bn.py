"""SyncBatchNorm for gated models (multi-GPU training, as in the paper's 2-GPU runs).

``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` replaces norm modules by new objects, which would
drop the gates' norm-swap hooks registered on the old ones. This wrapper removes the gates' hooks,
converts (the gated copies too), and registers the hooks again on the new modules.
"""

from __future__ import annotations

from torch import nn

from .api import iter_gates


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Convert every BatchNorm of ``model`` (gated or not) to ``SyncBatchNorm`` and return it."""
    gates = list(iter_gates(model))
    for name, gate in gates:
        gate.remove_hooks(model.get_submodule(name))
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, gate in iter_gates(model):
        gate.register_hooks(model.get_submodule(name), gate.mask_points, gate.norm_paths)
    return model
