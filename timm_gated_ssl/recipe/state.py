"""Progress counters saved with Accelerate's training state, so a resumed run continues exactly."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import GatingError


@dataclass
class TrainState:
    """Where training stands: optimizer steps done, epoch, batches consumed in that epoch, and the
    images and seconds of training summed over every segment of the run (resumes included), so
    the images/s of ``metrics.json`` describe the whole run, not the last segment."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    images_seen: int = 0
    train_seconds: float = 0.0

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        types = {f.name: f.type for f in dataclasses.fields(self)}
        for key, value in state.items():
            if key in types:  # states saved before a counter existed keep its default
                setattr(self, key, float(value) if types[key] in (float, "float") else int(value))


class NonFiniteLossError(GatingError, FloatingPointError):
    """The loss became NaN or Inf; training stopped (the message says which state is kept)."""
