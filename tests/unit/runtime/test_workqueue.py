from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter

import pytest

from controller.runtime import metrics
from controller.runtime.ratelimit import FakeClock, ItemExponentialFailureRateLimiter
from controller.runtime.workqueue import RateLimitingQueue

_names = itertools.count()


def new_queue(**kwargs: object) -> RateLimitingQueue:
    # A unique name per test keeps the per-name metrics independent.
    return RateLimitingQueue(f"test-{next(_names)}", **kwargs)  # type: ignore[arg-type]


async def test_add_dedups_while_queued() -> None:
    q = new_queue()
    for key in ["a", "b", "a", "a", "c", "b"]:
        q.add(key)
    assert len(q) == 3
    assert [await q.get() for _ in range(3)] == ["a", "b", "c"]  # FIFO by first add
    assert metrics.sample_value("workqueue_adds_total", {"name": q.name}) == 3.0


async def test_adds_while_processing_collapse_to_one_rerun() -> None:
    q = new_queue()
    q.add("k")
    assert await q.get() == "k"
    for _ in range(10):
        q.add("k")
    assert len(q) == 0  # not handed out while processing
    q.done("k")
    assert len(q) == 1
    assert await q.get() == "k"
    q.done("k")
    assert len(q) == 0
    get = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    assert not get.done()  # exactly one re-run
    get.cancel()


async def test_hot_key_never_processed_concurrently() -> None:
    q = new_queue()
    in_flight: Counter[str] = Counter()
    max_in_flight: Counter[str] = Counter()
    processed: Counter[str] = Counter()
    last_add_version: dict[str, int] = {}
    seen_version: dict[str, int] = {}
    version = 0
    keys = ["hot"] * 8 + ["a", "b", "c"]

    async def worker() -> None:
        while (key := await q.get()) is not None:
            in_flight[key] += 1
            max_in_flight[key] = max(max_in_flight[key], in_flight[key])
            seen_version[key] = version  # everything added before now is covered by this run
            await asyncio.sleep(random.random() * 0.002)
            processed[key] += 1
            in_flight[key] -= 1
            q.done(key)

    async def producer() -> None:
        nonlocal version
        for _ in range(400):
            key = random.choice(keys)
            version += 1
            last_add_version[key] = version
            q.add(key)
            if random.random() < 0.3:
                await asyncio.sleep(0)

    workers = [asyncio.create_task(worker()) for _ in range(8)]
    await producer()
    await q.shut_down_with_drain()
    # Workers drain what is still queued, then get None and exit.
    await asyncio.wait_for(asyncio.gather(*workers), 5)
    assert max_in_flight["hot"] == 1
    assert all(v == 1 for v in max_in_flight.values())
    # Every key's last add was followed by a run that started after it.
    for key, added in last_add_version.items():
        assert seen_version[key] >= added
    assert processed["hot"] < sum(1 for _ in range(400))  # dedup did collapse work


async def test_shut_down_with_drain_waits_for_in_flight() -> None:
    q = new_queue()
    q.add("a")
    assert await q.get() == "a"
    drain = asyncio.create_task(q.shut_down_with_drain())
    await asyncio.sleep(0.01)
    assert q.shutting_down
    assert not drain.done()
    q.add("b")  # ignored once shutting down
    assert len(q) == 0
    q.done("a")
    await asyncio.wait_for(drain, 1)
    assert await q.get() is None


async def test_shut_down_wakes_getters_and_drains_queue() -> None:
    q = new_queue()
    getters = [asyncio.create_task(q.get()) for _ in range(3)]
    await asyncio.sleep(0)
    q.shut_down()
    assert await asyncio.gather(*getters) == [None, None, None]

    q2 = new_queue()
    q2.add("x")
    q2.add("y")
    q2.shut_down()
    # Like client-go: what is queued is still handed out, then None.
    assert await q2.get() == "x"
    assert await q2.get() == "y"
    assert await q2.get() is None
    q2.add_after("z", 0.001)
    q2.add_rate_limited("z")
    assert len(q2) == 0


async def test_shut_down_discarding_queued_keys_hands_out_nothing_more() -> None:
    q = new_queue()
    q.add("a")
    assert await q.get() == "a"
    q.add("a")  # dirty while processing
    q.add("b")
    q.add_after("c", 0.001)
    drain = asyncio.create_task(q.shut_down_with_drain(discard_queued=True))
    await asyncio.sleep(0.01)
    assert not drain.done() and len(q) == 0
    q.done("a")
    await asyncio.wait_for(drain, 1)
    assert await q.get() is None


async def test_dirty_key_requeued_on_done_after_shutdown() -> None:
    q = new_queue()
    q.add("a")
    assert await q.get() == "a"
    q.add("a")  # dirty while processing
    q.shut_down()
    q.done("a")
    assert await q.get() == "a"
    q.done("a")
    assert await q.get() is None


async def test_add_after_orders_by_ready_time_with_fake_clock() -> None:
    clock = FakeClock()
    q = new_queue(clock=clock)
    q.add_after("a", 3)
    q.add_after("b", 1)
    q.add_after("c", 2)
    q.add_after("now", 0)
    assert len(q) == 1
    assert await q.get() == "now"
    clock.advance(1.5)
    assert len(q) == 1
    clock.advance(10)
    assert [await q.get() for _ in range(3)] == ["b", "c", "a"]
    assert q.waiting_count() == 0


async def test_add_after_earliest_wins() -> None:
    clock = FakeClock()
    q = new_queue(clock=clock)
    q.add_after("a", 5)
    q.add_after("a", 1)  # earlier: replaces
    q.add_after("a", 10)  # later: ignored
    assert q.waiting_count() == 1
    clock.advance(1)
    assert len(q) == 1
    assert await q.get() == "a"
    q.done("a")
    clock.advance(20)  # the superseded 5 s and 10 s entries do not fire again
    assert len(q) == 0


async def test_next_due_in_is_the_earliest_live_delay() -> None:
    clock = FakeClock()
    q = new_queue(clock=clock)
    assert q.next_due_in() is None
    q.add_after("expiry", 300)
    q.add_after("soon", 10)
    q.add_after("soon", 4)  # earlier: the 10 s entry is superseded, not the next due
    assert q.next_due_in() == 4
    clock.advance(3)
    assert q.next_due_in() == 1
    clock.advance(2)  # due: released into the queue
    assert len(q) == 1
    assert q.next_due_in() == 295
    clock.advance(300)
    assert len(q) == 2
    assert q.next_due_in() is None


async def test_fake_clock_advance_wakes_a_blocked_getter() -> None:
    clock = FakeClock()
    q = new_queue(clock=clock)
    getter = asyncio.create_task(q.get())
    q.add_after("a", 60)
    await asyncio.sleep(0.01)
    assert not getter.done()
    clock.advance(60)
    assert await asyncio.wait_for(getter, 1) == "a"


async def test_add_after_real_clock() -> None:
    q = new_queue()
    q.add_after("late", 0.02)
    q.add_after("early", 0.005)
    assert await asyncio.wait_for(q.get(), 1) == "early"
    assert await asyncio.wait_for(q.get(), 1) == "late"


async def test_add_rate_limited_forget_num_requeues() -> None:
    clock = FakeClock()
    q = new_queue(rate_limiter=ItemExponentialFailureRateLimiter(1.0, 100.0), clock=clock)
    q.add_rate_limited("a")  # 1 s
    q.add_rate_limited("a")  # 2 s, but the 1 s entry is earlier and wins
    assert q.num_requeues("a") == 2
    clock.advance(1)
    assert len(q) == 1
    q.forget("a")
    assert q.num_requeues("a") == 0
    assert metrics.sample_value("workqueue_retries_total", {"name": q.name}) == 2.0


async def test_cancelled_getter_passes_wakeup_on() -> None:
    q = new_queue()
    first = asyncio.create_task(q.get())
    second = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.add("x")  # wakes `first`
    first.cancel()  # ...which is cancelled before it runs
    assert await asyncio.wait_for(second, 1) == "x"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_metrics_depth_latency_and_unfinished_work() -> None:
    clock = FakeClock()
    q = new_queue(clock=clock)
    labels = {"name": q.name}
    q.add("a")
    q.add("b")
    assert metrics.sample_value("workqueue_depth", labels) == 2.0
    clock.advance(2)
    assert await q.get() == "a"
    assert metrics.sample_value("workqueue_depth", labels) == 1.0
    assert metrics.sample_value("workqueue_queue_duration_seconds_sum", labels) == pytest.approx(2.0)
    clock.advance(3)
    assert metrics.sample_value("workqueue_unfinished_work_seconds", labels) == pytest.approx(3.0)
    assert metrics.sample_value("workqueue_longest_running_processor_seconds", labels) == pytest.approx(3.0)
    q.done("a")
    assert metrics.sample_value("workqueue_work_duration_seconds_count", labels) == 1.0
    assert metrics.sample_value("workqueue_work_duration_seconds_sum", labels) == pytest.approx(3.0)
    assert metrics.sample_value("workqueue_unfinished_work_seconds", labels) == 0.0
    assert metrics.sample_value("workqueue_longest_running_processor_seconds", labels) == 0.0


def test_done_of_unknown_key_is_harmless() -> None:
    q = new_queue()
    q.done("never-taken")
    assert len(q) == 0
