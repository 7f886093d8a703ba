"""Giving freed heap back: when the trimmer trims (a pure decision on the allocator's figures),
and that it does lower the RSS of a real glibc process."""

from __future__ import annotations

import asyncio

import pytest

from controller.runtime.fake import FakeClient
from controller.runtime.heap import MIB, HeapTrimmer, HeapUsage, glibc_allocator, should_trim
from controller.runtime.manager import Manager
from controller.runtime.options import Options
from controller.runtime.workqueue import RateLimitingQueue


@pytest.mark.parametrize(
    ("in_use", "free", "trims"),
    [
        (0, 0, False),
        (10 * MIB, 1 * MIB, False),  # below the floor
        (10 * MIB, 4 * MIB, False),  # at the floor: not over it
        (10 * MIB, 4 * MIB + 1, True),
        (100 * MIB, 9 * MIB, False),  # over the floor, under 10 % of the heap in use
        (100 * MIB, 10 * MIB + 1, True),
        (1000 * MIB, 50 * MIB, False),
        (1000 * MIB, 200 * MIB, True),
    ],
)
def test_should_trim(in_use: int, free: int, trims: bool) -> None:
    assert should_trim(HeapUsage(in_use=in_use, free=free), min_free=4 * MIB, free_share=0.10) is trims


class FakeAllocator:
    def __init__(self, *usages: HeapUsage) -> None:
        self.usages = list(usages)
        self.trimmed = 0

    def usage(self) -> HeapUsage:
        return self.usages.pop(0) if len(self.usages) > 1 else self.usages[0]

    def trim(self) -> None:
        self.trimmed += 1


def test_check_trims_only_when_enough_is_free() -> None:
    allocator = FakeAllocator(HeapUsage(in_use=20 * MIB, free=1 * MIB))
    trimmer = HeapTrimmer(allocator)
    assert trimmer.check() is False
    assert allocator.trimmed == 0
    allocator.usages = [HeapUsage(in_use=20 * MIB, free=12 * MIB), HeapUsage(in_use=20 * MIB, free=0)]
    assert trimmer.check() is True
    assert (allocator.trimmed, trimmer.trims) == (1, 1)


async def test_without_glibc_nothing_runs() -> None:
    trimmer = HeapTrimmer(None, interval=0.01)
    assert trimmer.check() is False
    await asyncio.wait_for(trimmer.run(), timeout=5)


async def test_a_failing_allocator_stops_the_trimmer_not_the_process() -> None:
    class Broken(FakeAllocator):
        def usage(self) -> HeapUsage:
            raise OSError("no mallinfo2")

    trimmer = HeapTrimmer(Broken(HeapUsage(0, 0)), interval=0.01)
    await asyncio.wait_for(trimmer.run(), timeout=5)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_trimming_a_fragmented_glibc_heap_lowers_the_rss() -> None:
    allocator = glibc_allocator()
    if allocator is None:
        pytest.skip("not glibc")
    # 64 MiB in 4 KB blocks (above pymalloc's 512 bytes: glibc's malloc serves them), one block
    # in 256 kept alive, so that the freed memory sits between live blocks, as after a burst.
    blocks = [bytes(4000) for _ in range(16 * 1024)]
    kept = blocks[::256]
    del blocks
    usage = allocator.usage()
    assert usage.free > 32 * MIB
    before = _rss()
    trimmer = HeapTrimmer(allocator)
    assert trimmer.check() is True
    assert before - _rss() > 16 * MIB
    assert len(kept) == 64


def test_no_trim_while_the_work_goes_on() -> None:
    allocator = FakeAllocator(HeapUsage(in_use=20 * MIB, free=12 * MIB))
    adds = [0]
    trimmer = HeapTrimmer(allocator, activity=lambda: adds[0])
    assert trimmer.check() is False  # nothing to compare with yet: counted as busy
    for _ in range(3):
        adds[0] += 5
        assert trimmer.check() is False
    assert allocator.trimmed == 0
    assert trimmer.check() is True  # a whole interval without a key added
    assert allocator.trimmed == 1


class QueueOnly:
    name = "heap-test"

    def __init__(self) -> None:
        self.queue = RateLimitingQueue(self.name)

    async def sync(self, key: str) -> float | None:
        return None


def test_the_manager_counts_keys_added_to_its_queues() -> None:
    manager = Manager(FakeClient(), Options())
    reconciler = QueueOnly()
    manager.add(reconciler, 1)
    activity = manager.heap_trimmer.activity
    assert activity is not None
    before = activity()
    reconciler.queue.add("a")
    reconciler.queue.add("a")  # deduplicated by the queue, but work arriving all the same
    assert activity() == before + 2
