"""StatusBatcher: counts-only status writes at most once per period per object; everything else
at once."""

from __future__ import annotations

import pytest

from controller.runtime.statusbatch import StatusBatcher


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# (seconds since the previous write or None for none yet, counts only, expected hold)
CASES = [
    (None, True, None),  # the first write of a key goes at once
    (None, False, None),
    (0.2, False, None),  # a significant change never waits
    (0.2, True, pytest.approx(0.8)),  # counts only, 0.2 s after the last write: 0.8 s to go
    (0.999, True, pytest.approx(0.001)),
    (1.0, True, None),  # a full period has passed
    (5.0, True, None),
]


@pytest.mark.parametrize(("since", "counts_only", "expected"), CASES)
def test_hold(since: float | None, counts_only: bool, expected: object) -> None:
    clock = Clock()
    batcher = StatusBatcher(1.0, clock=clock)
    if since is not None:
        assert batcher.hold("ns/a", counts_only=False) is None
        clock.now += since
    assert batcher.hold("ns/a", counts_only=counts_only) == expected


def test_a_held_change_does_not_count_as_a_write() -> None:
    clock = Clock()
    batcher = StatusBatcher(1.0, clock=clock)
    assert batcher.hold("ns/a", counts_only=True) is None
    clock.now += 0.5
    assert batcher.hold("ns/a", counts_only=True) == pytest.approx(0.5)
    clock.now += 0.5
    assert batcher.hold("ns/a", counts_only=True) is None  # the period is from the last write
    clock.now += 0.1
    assert batcher.hold("ns/a", counts_only=True) == pytest.approx(0.9)


def test_keys_are_independent_and_forgotten() -> None:
    clock = Clock()
    batcher = StatusBatcher(1.0, clock=clock)
    assert batcher.hold("ns/a", counts_only=True) is None
    assert batcher.hold("ns/b", counts_only=True) is None
    assert batcher.hold("ns/a", counts_only=True) is not None
    batcher.forget("ns/a")
    assert batcher.hold("ns/a", counts_only=True) is None


def test_a_zero_period_never_holds() -> None:
    batcher = StatusBatcher(0.0, clock=Clock())
    for _ in range(3):
        assert batcher.hold("ns/a", counts_only=True) is None
