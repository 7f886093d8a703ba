from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from controller.runtime import metrics
from controller.runtime.errors import Conflict, NotFound, ReconcileError, ServerError
from controller.runtime.logging import configure_logging
from controller.runtime.loop import Reconciler, process_one, run_workers
from controller.runtime.ratelimit import FakeClock, ItemExponentialFailureRateLimiter
from controller.runtime.workqueue import RateLimitingQueue

# Upper bounds only: a loaded machine (the CI box shares its cores with a Go build) can be slow.
PATIENCE = 30


class Scripted:
    """A reconciler whose sync follows a script per key: each call pops the next outcome
    (an exception to raise, a float to requeue after, or None); then None forever."""

    def __init__(self, script: dict[str, list[BaseException | float | None]] | None = None) -> None:
        self.name = f"test-{uuid.uuid4().hex[:8]}"
        self.queue = RateLimitingQueue(self.name, ItemExponentialFailureRateLimiter(base=0.001, cap=0.004))
        self.script = script or {}
        self.calls: list[str] = []
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.gate: asyncio.Event | None = None
        self.finished: list[str] = []

    async def sync(self, key: str) -> float | None:
        self.calls.append(key)
        self.in_flight[key] += 1
        self.max_in_flight[key] = max(self.max_in_flight[key], self.in_flight[key])
        try:
            await asyncio.sleep(0)
            if self.gate is not None:
                await self.gate.wait()
            steps = self.script.get(key)
            outcome = steps.pop(0) if steps else None
            if isinstance(outcome, BaseException):
                raise outcome
            self.finished.append(key)
            return outcome
        finally:
            self.in_flight[key] -= 1


def sample(name: str, **labels: str) -> float:
    return metrics.sample_value(name, labels) or 0.0


async def wait_until(cond: Callable[[], bool]) -> None:
    async with asyncio.timeout(PATIENCE):
        while True:
            if cond():
                return
            await asyncio.sleep(0.001)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging("debug", "json", stream=out)
    yield out
    configure_logging("info", "json")


def test_scripted_is_a_reconciler() -> None:
    r: Reconciler = Scripted()
    assert r.name.startswith("test-")


async def test_errors_requeue_with_backoff_and_success_forgets(log_stream: io.StringIO) -> None:
    r = Scripted({"ns/a": [RuntimeError("one"), RuntimeError("two"), None]})
    r.queue.add("ns/a")
    workers = asyncio.create_task(run_workers(r, 2))
    await wait_until(lambda: r.finished == ["ns/a"])
    assert r.calls == ["ns/a"] * 3
    assert r.queue.num_requeues("ns/a") == 0  # forgotten after the success
    r.queue.shut_down()
    await asyncio.wait_for(workers, PATIENCE)

    assert sample("controller_runtime_reconcile_errors_total", controller=r.name) == 2
    assert sample("controller_runtime_reconcile_total", controller=r.name, result="error") == 2
    assert sample("controller_runtime_reconcile_total", controller=r.name, result="success") == 1
    assert sample("controller_runtime_reconcile_time_seconds_count", controller=r.name) == 3
    assert sample("controller_runtime_max_concurrent_reconciles", controller=r.name) == 2
    assert sample("controller_runtime_active_workers", controller=r.name) == 0

    logged = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    failures = [e for e in logged if e["event"] == "reconcile failed"]
    assert [f["requeues"] for f in failures] == [0, 1]
    assert all(f["controller"] == r.name and f["key"] == "ns/a" for f in failures)
    assert "RuntimeError: two" in failures[1]["exception"]
    ids = {e["reconcile_id"] for e in logged if e.get("key") == "ns/a"}
    assert len(ids) == 3  # one id per sync


async def test_errors_come_back_after_a_growing_delay() -> None:
    clock = FakeClock()
    r = Scripted({"k": [RuntimeError(), RuntimeError(), RuntimeError()]})
    r.queue = RateLimitingQueue(r.name, ItemExponentialFailureRateLimiter(base=1.0, cap=100.0), clock=clock)
    r.queue.add("k")
    for attempt, delay in enumerate([1.0, 2.0, 4.0], start=1):
        key = await r.queue.get()
        assert key == "k"
        await process_one(r, key)
        assert r.queue.num_requeues("k") == attempt
        assert (r.queue.waiting_count(), len(r.queue)) == (1, 0)  # delayed, not queued
        clock.advance(delay - 0.01)
        assert len(r.queue) == 0
        clock.advance(0.01)
        assert len(r.queue) == 1
    r.queue.shut_down()


async def test_requeue_after() -> None:
    r = Scripted({"k": [0.005, None]})
    r.queue.add("k")
    workers = asyncio.create_task(run_workers(r, 1))
    await wait_until(lambda: r.finished == ["k", "k"])
    r.queue.shut_down()
    await workers
    assert sample("controller_runtime_reconcile_total", controller=r.name, result="requeue_after") == 1


async def test_a_key_never_runs_twice_concurrently() -> None:
    r = Scripted()
    r.gate = asyncio.Event()
    workers = asyncio.create_task(run_workers(r, 4))
    r.queue.add("hot")
    r.queue.add("other")
    await wait_until(lambda: r.in_flight["hot"] == 1 and r.in_flight["other"] == 1)
    for _ in range(10):
        r.queue.add("hot")
        await asyncio.sleep(0)
    assert r.in_flight["hot"] == 1
    r.gate.set()
    await wait_until(lambda: r.finished.count("hot") == 2)  # the adds during the sync: one more run
    r.queue.shut_down()
    await workers
    assert r.max_in_flight["hot"] == 1
    assert r.calls.count("hot") == 2


async def test_shutdown_finishes_in_flight_syncs() -> None:
    r = Scripted()
    r.gate = asyncio.Event()
    workers = asyncio.create_task(run_workers(r, 3))
    for key in ("a", "b"):
        r.queue.add(key)
    await wait_until(lambda: len(r.calls) == 2)
    drain = asyncio.create_task(r.queue.shut_down_with_drain())
    await asyncio.sleep(0.01)
    assert not drain.done()
    r.queue.add("late")  # ignored after shutdown
    r.gate.set()
    await asyncio.wait_for(drain, PATIENCE)
    await asyncio.wait_for(workers, PATIENCE)
    assert sorted(r.finished) == ["a", "b"]


async def test_cancellation_still_marks_the_key_done() -> None:
    r = Scripted()
    r.gate = asyncio.Event()
    workers = asyncio.create_task(run_workers(r, 1))
    r.queue.add("k")
    await wait_until(lambda: r.in_flight["k"] == 1)
    workers.cancel()
    with pytest.raises(asyncio.CancelledError):
        await workers
    assert r.queue.processing == frozenset()
    assert sample("controller_runtime_active_workers", controller=r.name) == 0


async def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError):
        await run_workers(Scripted(), 0)


@pytest.mark.parametrize(
    ("error", "level", "traced"),
    [
        (Conflict(409, "Conflict", "the object has been modified"), "debug", False),
        (NotFound(404, "NotFound", 'pods "x" not found'), "warning", False),
        (ServerError(503, "ServiceUnavailable", "etcd is away"), "warning", False),
        (ReconcileError("FailedCreate: 403 Forbidden: quota exceeded"), "warning", False),
        (KeyError("metadata"), "error", True),  # a bug: the stack trace says where
    ],
)
async def test_api_answers_are_one_line_and_bugs_keep_their_stack_trace(
    log_stream: io.StringIO, error: Exception, level: str, traced: bool
) -> None:
    r = Scripted({"ns/a": [error]})
    r.queue.add("ns/a")
    key = await r.queue.get()
    assert key is not None
    await process_one(r, key)
    assert r.queue.num_requeues("ns/a") == 1  # retried with backoff either way
    logged = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    (entry,) = [e for e in logged if e["event"] in ("reconcile failed", "requeued after a conflict")]
    assert entry["level"] == level
    assert ("exception" in entry) is traced
    assert sample("controller_runtime_reconcile_errors_total", controller=r.name) == 1
    r.queue.shut_down()


async def test_reconcile_counters_start_at_0_for_every_result() -> None:
    r = Scripted()
    workers = asyncio.create_task(run_workers(r, 1))
    await wait_until(lambda: sample("controller_runtime_max_concurrent_reconciles", controller=r.name) == 1)
    assert r.calls == []
    assert metrics.sample_value("controller_runtime_reconcile_errors_total", {"controller": r.name}) == 0
    for result in ("success", "error", "requeue", "requeue_after"):
        labels = {"controller": r.name, "result": result}
        assert metrics.sample_value("controller_runtime_reconcile_total", labels) == 0, result
    await r.queue.shut_down_with_drain()
    await asyncio.wait_for(workers, PATIENCE)
