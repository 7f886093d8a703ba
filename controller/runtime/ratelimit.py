"""Rate limiters: per-item backoff for the work queue (client-go `util/workqueue` semantics) and the
token bucket that bounds the client's request rate (client-go `util/flowcontrol`).

All the limiters take an injectable clock so their arithmetic can be tested without sleeping.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Hashable
from typing import Protocol

Clock = Callable[[], float]


class RateLimiter(Protocol):
    def when(self, item: Hashable) -> float:
        """How long (seconds) to wait before the item may be processed again; records a failure."""
        ...

    def forget(self, item: Hashable) -> None:
        """Stop tracking the item (it succeeded): its backoff starts over."""
        ...

    def num_requeues(self, item: Hashable) -> int: ...


class ItemExponentialFailureRateLimiter:
    """base * 2**failures, capped: 5 ms, 10 ms, 20 ms, ... 1000 s with the controller defaults."""

    def __init__(self, base: float = 0.005, cap: float = 1000.0) -> None:
        if base < 0 or cap < 0:
            raise ValueError("base and cap must be >= 0")
        self.base = base
        self.cap = cap
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        exp = self._failures.get(item, 0)
        self._failures[item] = exp + 1
        # Beyond 2**1023 a float overflows; anything that large is past the cap anyway.
        if exp >= 1023:
            return self.cap
        backoff = self.base * math.ldexp(1.0, exp)
        return min(backoff, self.cap)

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.get(item, 0)


class _Bucket:
    """The arithmetic of golang.org/x/time/rate: tokens refill at `qps` up to `burst`; a reservation
    takes one token now, possibly driving the count negative, and the caller waits until the
    refill would have covered it. Reservations therefore queue up in order without a lock."""

    def __init__(self, qps: float, burst: int, clock: Clock) -> None:
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    @property
    def unlimited(self) -> bool:
        return self.qps <= 0 or math.isinf(self.qps)

    def _advance(self, now: float) -> float:
        last = min(self._last, now)  # a clock that went backwards refills nothing
        return min(float(self.burst), self._tokens + (now - last) * self.qps)

    def reserve(self) -> float:
        """Take one token; return the delay (seconds) until it is really available."""
        if self.unlimited:
            return 0.0
        now = self._clock()
        tokens = self._advance(now) - 1.0
        self._tokens = tokens
        self._last = now
        return 0.0 if tokens >= 0 else -tokens / self.qps

    def try_take(self) -> bool:
        if self.unlimited:
            return True
        now = self._clock()
        tokens = self._advance(now)
        if tokens < 1.0:
            return False
        self._tokens = tokens - 1.0
        self._last = now
        return True

    def give_back(self) -> None:
        # A cancelled wait returns its token; later reservations were computed against the lower
        # count, so they are at worst a little conservative.
        if not self.unlimited:
            self._tokens = min(float(self.burst), self._tokens + 1.0)

    def tokens(self) -> float:
        return math.inf if self.unlimited else self._advance(self._clock())


class BucketRateLimiter:
    """Overall rate limit of the work queue: the delay a token bucket (qps, burst) imposes on the
    next item. The same for every item; does not track items."""

    def __init__(self, qps: float = 10.0, burst: int = 100, clock: Clock = time.monotonic) -> None:
        self._bucket = _Bucket(qps, burst, clock)

    def when(self, item: Hashable) -> float:
        return self._bucket.reserve()

    def forget(self, item: Hashable) -> None:
        pass

    def num_requeues(self, item: Hashable) -> int:
        return 0


class MaxOfRateLimiter:
    """The longest delay of several limiters; every limiter records every failure."""

    def __init__(self, *limiters: RateLimiter) -> None:
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self.limiters = limiters

    def when(self, item: Hashable) -> float:
        # Every limiter must see the failure (no short-circuit), like client-go.
        return max([limiter.when(item) for limiter in self.limiters])

    def forget(self, item: Hashable) -> None:
        for limiter in self.limiters:
            limiter.forget(item)

    def num_requeues(self, item: Hashable) -> int:
        return max(limiter.num_requeues(item) for limiter in self.limiters)


def default_controller_rate_limiter() -> MaxOfRateLimiter:
    """client-go's DefaultControllerRateLimiter: per-item 5 ms .. 1000 s, overall 10 qps burst 100."""
    return MaxOfRateLimiter(ItemExponentialFailureRateLimiter(0.005, 1000.0), BucketRateLimiter(10.0, 100))


class TokenBucket:
    """Client-side QPS limit for API requests (client-go's tokenBucketRateLimiter).
    qps <= 0 or infinite means no limit."""

    def __init__(self, qps: float, burst: int, *, clock: Clock = time.monotonic) -> None:
        self._bucket = _Bucket(qps, max(1, burst), clock)

    @property
    def qps(self) -> float:
        return self._bucket.qps

    @property
    def burst(self) -> int:
        return self._bucket.burst

    def try_accept(self) -> bool:
        """Take a token if one is available now; never waits."""
        return self._bucket.try_take()

    def reserve(self) -> float:
        """Take a token; return how long the caller must wait before using it."""
        return self._bucket.reserve()

    async def wait(self) -> float:
        """Wait for a token; returns the time waited (seconds)."""
        delay = self._bucket.reserve()
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                self._bucket.give_back()
                raise
        return delay

    def tokens(self) -> float:
        return self._bucket.tokens()


class FakeClock:
    """A manual clock for tests: pass it as `clock=`; `advance()` moves time and tells listeners
    (the work queue uses this to release delayed items without real sleeps)."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._listeners: list[Callable[[], None]] = []

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._now += seconds
        for listener in list(self._listeners):
            listener()

    def add_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)
