"""Progress of a fine-tuning run, saved with Accelerate's training state for exact resume."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..recipe.state import TrainState


@dataclass
class FinetuneState(TrainState):
    """:class:`~timm_gated_ssl.recipe.TrainState` plus the seed run in progress and the test
    results of the finished ones (``[[{"name": ..., "top1": ..., ...}, ...], ...]``)."""

    run: int = 0
    finished: list[list[dict[str, Any]]] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "images_seen": self.images_seen, "last_lr": self.last_lr, "run": self.run, "finished": self.finished}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.finished = [list(run) for run in state.pop("finished", [])]
        super().load_state_dict(state)
