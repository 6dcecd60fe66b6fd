"""Progress counters saved with Accelerate's training state, so a resumed run continues exactly."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class TrainState:
    """Where training stands: optimizer steps done, epoch, batches consumed in that epoch."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    images_seen: int = 0

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, int(value))


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf; the last good training state is kept."""
