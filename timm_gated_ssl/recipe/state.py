"""Progress counters saved with Accelerate's training state, so a resumed run continues exactly."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from ..errors import GatingError

T = TypeVar("T")


@dataclass
class TrainState:
    """Where training stands: optimizer steps done, epoch, batches consumed in that epoch, and the
    images and seconds of training summed over every segment of the run (resumes included), so
    the images/s of ``metrics.json`` describe the whole run, not the last segment.
    ``data_seconds`` is the part of ``train_seconds`` spent waiting for the next batch (reading,
    decoding and, with ``num_workers: 0``, augmenting it): ``metrics.json``'s ``data_fraction``.
    ``last_lr`` is the learning rate the latest update ran at (``metrics.json``'s ``final_lr``)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    images_seen: int = 0
    train_seconds: float = 0.0
    data_seconds: float = 0.0
    last_lr: float = 0.0

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        types = {f.name: f.type for f in dataclasses.fields(self)}
        for key, value in state.items():
            if key in types:  # states saved before a counter existed keep its default
                setattr(self, key, float(value) if types[key] in (float, "float") else int(value))


class NonFiniteLossError(GatingError, FloatingPointError):
    """The loss became NaN or Inf; training stopped (the message says which state is kept)."""


def timed_batches(batches: Iterable[T], state: TrainState) -> Iterator[T]:
    """Yield ``batches``, adding the seconds each ``next()`` that returns a batch takes to
    ``state.data_seconds``.

    The time is measured in the same steps as the training time, so the fraction of a run spent
    on data loading and augmentation does not drift with the machine's speed, as a comparison of
    two separate runs would (``benchmarks/train_step.py``). The wait that ends an epoch is not
    counted, as the recipe's ``train_seconds`` does not count it either: data time stays a part of
    training time.
    """
    iterator = iter(batches)
    while True:
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        state.data_seconds += time.perf_counter() - start
        yield batch
