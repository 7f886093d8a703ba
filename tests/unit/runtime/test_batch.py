from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

import pytest

from controller.runtime.batch import DEFAULT_BATCH_CAP, slow_start_batch


class Boom(Exception):
    pass


@dataclass
class Recorder:
    """A `call` that records which batch each index ran in and fails for the indexes in `fail`.

    Every call yields to the loop before it finishes, so all calls of one batch have started
    before any of them completes: the number of completed calls seen at start identifies the
    batch, and a batch's size is how many calls were in flight together."""

    fail: frozenset[int] = frozenset()
    calls: list[int] = field(default_factory=list)
    completed: int = 0
    in_flight: int = 0
    peak: int = 0
    by_batch: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    raised: dict[int, Boom] = field(default_factory=dict)

    async def __call__(self, i: int) -> None:
        self.calls.append(i)
        self.by_batch[self.completed].append(i)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0)
            if i in self.fail:
                self.raised[i] = Boom(f"call {i}")
                raise self.raised[i]
        finally:
            self.in_flight -= 1
            self.completed += 1

    def batches(self) -> list[list[int]]:
        return [self.by_batch[k] for k in sorted(self.by_batch)]

    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches()]


@pytest.mark.parametrize(
    ("count", "initial", "cap", "sizes"),
    [
        (0, 1, DEFAULT_BATCH_CAP, []),
        (1, 1, DEFAULT_BATCH_CAP, [1]),
        (7, 1, DEFAULT_BATCH_CAP, [1, 2, 4]),
        (10, 1, DEFAULT_BATCH_CAP, [1, 2, 4, 3]),
        (1200, 1, 500, [1, 2, 4, 8, 16, 32, 64, 128, 256, 500, 189]),
        (2000, 1, 500, [1, 2, 4, 8, 16, 32, 64, 128, 256, 500, 500, 489]),
        (10, 1, 3, [1, 2, 3, 3, 1]),
        (20, 4, DEFAULT_BATCH_CAP, [4, 8, 8]),
        (5, 0, DEFAULT_BATCH_CAP, [1, 2, 2]),  # a non-positive initial batch still makes progress
        (9, 16, 4, [4, 4, 1]),  # the cap also bounds the first batch
    ],
)
async def test_batch_sizes(count: int, initial: int, cap: int, sizes: list[int]) -> None:
    rec = Recorder()
    successes, errors = await slow_start_batch(count, rec, initial=initial, cap=cap)
    assert (successes, errors) == (count, [])
    assert rec.sizes() == sizes
    assert rec.peak == max(sizes, default=0)
    assert rec.calls == list(range(count)), "every index exactly once, in order"


def test_default_cap_is_kube_controller_managers_burst() -> None:
    assert DEFAULT_BATCH_CAP == 500


@pytest.mark.parametrize(
    ("count", "fail", "sizes", "successes"),
    [
        # failure in the first batch: one request, nothing else started
        (7, {0}, [1], 0),
        # failure in batch 3 (indexes 3..6): batches after it never start
        (15, {4}, [1, 2, 4], 6),
        # two failures in the same batch: both reported, the rest of the batch still counted
        (15, {3, 5}, [1, 2, 4], 5),
        # a whole batch failing
        (15, {1, 2}, [1, 2], 1),
        # failure in the last batch: every call ran
        (7, {6}, [1, 2, 4], 6),
        # failures in the capped batch (indexes 511..1010) of a large run
        (1200, {600, 1010}, [1, 2, 4, 8, 16, 32, 64, 128, 256, 500], 1009),
    ],
)
async def test_failure_stops_later_batches(
    count: int, fail: set[int], sizes: list[int], successes: int
) -> None:
    rec = Recorder(fail=frozenset(fail))
    done, errors = await slow_start_batch(count, rec, cap=500)
    assert rec.sizes() == sizes
    assert done == successes
    assert done == len(rec.calls) - len(fail), "successes are the calls that did not raise"
    assert errors == [rec.raised[i] for i in sorted(fail)], "the failing batch's errors, in index order"
    assert max(rec.calls) < count


async def test_errors_are_only_those_of_the_failing_batch() -> None:
    # Failures in later batches are never reached, so never reported.
    rec = Recorder(fail=frozenset({2, 5, 9}))
    done, errors = await slow_start_batch(12, rec)
    assert rec.batches() == [[0], [1, 2]]
    assert done == 2
    assert errors == [rec.raised[2]]


@pytest.mark.parametrize(("count", "cap"), [(-1, 500), (3, 0)])
async def test_rejects_bad_arguments(count: int, cap: int) -> None:
    rec = Recorder()
    with pytest.raises(ValueError):
        await slow_start_batch(count, rec, cap=cap)
    assert rec.calls == []
