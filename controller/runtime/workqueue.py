"""Rate-limited work queue with client-go `util/workqueue` semantics, for asyncio.

- A key is queued at most once ("dirty" set): N adds before a worker picks it up are one run.
- A key being processed is never handed to a second worker; adding it meanwhile marks it dirty,
  and `done()` re-queues it once.
- Delayed adds (`add_after`) keep the earliest ready time per key.
- After `shut_down()` adds are ignored, getters still drain what is queued, then get None.

Single event loop only: the methods are not thread-safe (nor need to be under asyncio).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable

from controller.runtime import metrics
from controller.runtime.ratelimit import RateLimiter, default_controller_rate_limiter


class RateLimitingQueue:
    def __init__(
        self,
        name: str,
        rate_limiter: RateLimiter | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.rate_limiter: RateLimiter = (
            rate_limiter if rate_limiter is not None else default_controller_rate_limiter()
        )
        self._clock = clock

        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: dict[str, float] = {}  # key -> when a worker took it
        self._added_at: dict[str, float] = {}  # key -> when it was (first) added, for queue latency

        self._waiting: list[tuple[float, int, str]] = []  # heap of (ready_at, seq, key)
        self._waiting_ready: dict[str, float] = {}  # the live entry per key; heap entries may be stale
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

        self._getters: deque[asyncio.Future[None]] = deque()
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._shutting_down = False
        self.add_calls = 0

        self._m_adds = metrics.WORKQUEUE_ADDS.labels(name=name)
        self._m_queue_latency = metrics.WORKQUEUE_QUEUE_DURATION.labels(name=name)
        self._m_work_duration = metrics.WORKQUEUE_WORK_DURATION.labels(name=name)
        self._m_retries = metrics.WORKQUEUE_RETRIES.labels(name=name)
        # Computed at scrape time (depth too: one less metric update per add/get on the hot path) instead of client-go's 500 ms updater loop; a queue created
        # later under the same name takes the gauges over.
        metrics.WORKQUEUE_DEPTH.labels(name=name).set_function(self._depth)
        metrics.WORKQUEUE_UNFINISHED_WORK.labels(name=name).set_function(self._unfinished_work_seconds)
        metrics.WORKQUEUE_LONGEST_RUNNING.labels(name=name).set_function(self._longest_running_seconds)

        add_listener = getattr(clock, "add_listener", None)
        if callable(add_listener):
            add_listener(self._on_timer)

    # --- adding --------------------------------------------------------------------------------

    def add(self, key: str) -> None:
        # Every call, deduplicated or not: how busy the controller is (see runtime/heap.py).
        self.add_calls += 1
        if self._shutting_down or key in self._dirty:
            return
        self._m_adds.inc()
        self._dirty.add(key)
        self._added_at.setdefault(key, self._clock())
        if key in self._processing:
            return  # re-queued by done()
        self._push(key)

    def add_after(self, key: str, delay_seconds: float) -> None:
        if self._shutting_down:
            return
        self._m_retries.inc()
        if delay_seconds <= 0:
            self.add(key)
            return
        ready_at = self._clock() + delay_seconds
        current = self._waiting_ready.get(key)
        if current is not None and current <= ready_at:
            return
        self._waiting_ready[key] = ready_at
        heapq.heappush(self._waiting, (ready_at, next(self._seq), key))
        self._schedule_timer()

    def add_rate_limited(self, key: str) -> None:
        # when() records the failure even while shutting down, as client-go does.
        self.add_after(key, self.rate_limiter.when(key))

    def forget(self, key: str) -> None:
        self.rate_limiter.forget(key)

    def num_requeues(self, key: str) -> int:
        return self.rate_limiter.num_requeues(key)

    # --- taking --------------------------------------------------------------------------------

    async def get(self) -> str | None:
        """The next key, marked as processing until `done(key)`; None once shut down and empty."""
        while True:
            self._release_ready()
            if self._queue:
                return self._take()
            if self._shutting_down:
                return None
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    # We were woken for an item but will not take it: pass the wake-up on.
                    self._wake_one()
                raise
            finally:
                if not waiter.done():
                    waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._getters.remove(waiter)

    def done(self, key: str) -> None:
        started = self._processing.pop(key, None)
        if started is None:
            return
        self._m_work_duration.observe(max(0.0, self._clock() - started))
        if key in self._dirty:
            self._push(key)
        elif not self._processing:
            for fut in self._drain_waiters:
                if not fut.done():
                    fut.set_result(None)
            self._drain_waiters.clear()

    def __len__(self) -> int:
        self._release_ready()
        return len(self._queue)

    @property
    def processing(self) -> frozenset[str]:
        return frozenset(self._processing)

    def waiting_count(self) -> int:
        """Delayed keys not yet due."""
        return len(self._waiting_ready)

    def next_due_in(self) -> float | None:
        """Seconds until the first delayed key is due (0 when one is overdue); None when none
        waits. Tells a look-again scheduled minutes ahead (an expectation's expiry) from work
        about to happen."""
        ready_at = self._next_ready()
        return None if ready_at is None else max(0.0, ready_at - self._clock())

    # --- shutting down -------------------------------------------------------------------------

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def shut_down(self, *, discard_queued: bool = False) -> None:
        """Stop accepting adds; drop delayed keys; getters drain the queue and then get None.
        With discard_queued, keys not yet handed out are dropped too: getters get None at once
        (a leader stepping down leaves that work to the next leader, who has it queued too)."""
        if discard_queued:
            # Dirty keys are queued or re-added while processing: neither runs again.
            self._queue.clear()
            self._dirty.clear()
            self._added_at.clear()
        if self._shutting_down:
            return
        self._shutting_down = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = None
        self._waiting.clear()
        self._waiting_ready.clear()
        remove_listener = getattr(self._clock, "remove_listener", None)
        if callable(remove_listener):
            remove_listener(self._on_timer)
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)

    async def shut_down_with_drain(self, *, discard_queued: bool = False) -> None:
        """shut_down(), then wait until every key handed to a worker is done."""
        self.shut_down(discard_queued=discard_queued)
        while self._processing:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(fut)
            await fut

    # --- internals -----------------------------------------------------------------------------

    def _push(self, key: str) -> None:
        self._queue.append(key)
        self._wake_one()

    def _take(self) -> str:
        key = self._queue.popleft()
        now = self._clock()
        self._processing[key] = now
        self._dirty.discard(key)
        added = self._added_at.pop(key, None)
        if added is not None:
            self._m_queue_latency.observe(max(0.0, now - added))
        return key

    def _wake_one(self) -> None:
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _release_ready(self) -> None:
        if not self._waiting:
            return
        now = self._clock()
        while self._waiting and self._waiting[0][0] <= now:
            ready_at, _, key = heapq.heappop(self._waiting)
            if self._waiting_ready.get(key) != ready_at:
                continue  # superseded by an earlier add_after
            del self._waiting_ready[key]
            self.add(key)

    def _next_ready(self) -> float | None:
        while self._waiting:
            ready_at, _, key = self._waiting[0]
            if self._waiting_ready.get(key) == ready_at:
                return ready_at
            heapq.heappop(self._waiting)
        return None

    def _schedule_timer(self) -> None:
        next_ready = self._next_ready()
        if next_ready is None:
            return
        if self._timer is not None and self._timer_at is not None and self._timer_at <= next_ready:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (synchronous caller): released lazily by get()/len()
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = next_ready
        self._timer = loop.call_later(max(0.0, next_ready - self._clock()), self._on_timer)

    def _on_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()  # when a fake clock calls us, the real timer is now moot
        self._timer = None
        self._timer_at = None
        if self._shutting_down:
            return
        self._release_ready()
        self._schedule_timer()

    def _depth(self) -> float:
        return float(len(self._queue))

    def _unfinished_work_seconds(self) -> float:
        now = self._clock()
        return sum(now - started for started in list(self._processing.values()))

    def _longest_running_seconds(self) -> float:
        starts = list(self._processing.values())
        return self._clock() - min(starts) if starts else 0.0
