"""timm_gated_ssl.recipe.state: the counters a resume restores, and the loader-wait clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from timm_gated_ssl.recipe import state as state_module
from timm_gated_ssl.recipe.state import TrainState, timed_batches


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_timed_batches_counts_only_the_wait_for_each_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(state_module.time, "perf_counter", clock)

    def slow_loader() -> Iterator[int]:
        for i in range(3):
            clock.now += 2.0  # 2 s to load and augment each batch
            yield i
        clock.now += 0.5  # noticing the end of the epoch: outside the training time, not counted

    state = TrainState(data_seconds=1.0)  # carried over from an earlier segment
    seen = []
    for batch in timed_batches(slow_loader(), state):
        clock.now += 5.0  # the training step: not data time
        seen.append(batch)
    assert seen == [0, 1, 2]
    assert state.data_seconds == pytest.approx(1.0 + 3 * 2.0)


def test_states_saved_before_a_counter_existed_keep_its_default() -> None:
    state = TrainState()
    state.load_state_dict({"step": 7, "epoch": 1, "batch_in_epoch": 2, "images_seen": 900, "train_seconds": 12.5})
    assert (state.step, state.images_seen, state.train_seconds, state.data_seconds) == (7, 900, 12.5, 0.0)
    restored = TrainState()
    restored.load_state_dict(TrainState(step=3, data_seconds=4.25).state_dict())
    assert restored.data_seconds == 4.25 and restored.step == 3
