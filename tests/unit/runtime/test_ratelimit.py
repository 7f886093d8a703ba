from __future__ import annotations

import asyncio

import pytest

from controller.runtime.ratelimit import (
    BucketRateLimiter,
    FakeClock,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    TokenBucket,
    default_controller_rate_limiter,
)


@pytest.mark.parametrize(
    ("base", "cap", "expected"),
    [
        (0.005, 1000.0, [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56]),
        (1.0, 5.0, [1.0, 2.0, 4.0, 5.0, 5.0]),
        (0.0, 1.0, [0.0, 0.0, 0.0]),
        (2.0, 1.0, [1.0, 1.0]),  # base above the cap: always the cap
    ],
)
def test_exponential_sequence(base: float, cap: float, expected: list[float]) -> None:
    limiter = ItemExponentialFailureRateLimiter(base, cap)
    got = [limiter.when("a") for _ in expected]
    assert got == pytest.approx(expected)
    assert limiter.num_requeues("a") == len(expected)


def test_exponential_per_item_and_forget() -> None:
    limiter = ItemExponentialFailureRateLimiter(0.005, 1000.0)
    assert [limiter.when("a") for _ in range(3)] == pytest.approx([0.005, 0.01, 0.02])
    assert limiter.when("b") == pytest.approx(0.005)  # other items are independent
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == pytest.approx(0.005)


def test_exponential_reaches_cap_without_overflow() -> None:
    limiter = ItemExponentialFailureRateLimiter(0.005, 1000.0)
    delays = [limiter.when("a") for _ in range(2000)]
    assert delays[17] == pytest.approx(655.36)
    assert delays[18] == 1000.0
    assert delays[-1] == 1000.0


@pytest.mark.parametrize(
    ("qps", "burst", "steps", "expected"),
    [
        # (advance seconds before the call, delay)
        (10.0, 2, [0, 0, 0, 0], [0.0, 0.0, 0.1, 0.2]),
        (10.0, 1, [0, 0.05, 0.05, 1.0], [0.0, 0.05, 0.1, 0.0]),
        (1.0, 3, [0, 0, 0, 0, 10, 0, 0, 0], [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]),
    ],
)
def test_bucket_delays(qps: float, burst: int, steps: list[float], expected: list[float]) -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter(qps, burst, clock=clock)
    got = []
    for advance in steps:
        clock.advance(advance)
        got.append(limiter.when("any"))
    assert got == pytest.approx(expected)
    assert limiter.num_requeues("any") == 0


def test_bucket_reservations_queue_up() -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter(10.0, 1, clock=clock)
    assert limiter.when("x") == 0.0
    # Ten items at once: each reserves the next future token.
    assert [limiter.when(i) for i in range(10)] == pytest.approx([0.1 * n for n in range(1, 11)])
    clock.advance(0.5)
    assert limiter.when("y") == pytest.approx(0.6)  # still behind the queue of reservations


def test_max_of_and_default_controller_limiter() -> None:
    clock = FakeClock()
    limiter = MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(0.005, 1000.0), BucketRateLimiter(10.0, 100, clock)
    )
    # The first 100 failures fit the burst: the per-item backoff decides.
    assert [limiter.when(f"k{i}") for i in range(100)] == pytest.approx([0.005] * 100)
    # The 101st waits for the bucket (0.1 s) even though its own backoff is 5 ms.
    assert limiter.when("k100") == pytest.approx(0.1)
    assert limiter.when("k0") == pytest.approx(0.2)  # bucket 0.2 > per-item 0.01
    assert limiter.num_requeues("k0") == 2
    limiter.forget("k0")
    assert limiter.num_requeues("k0") == 0

    default = default_controller_rate_limiter()
    assert [type(x).__name__ for x in default.limiters] == [
        "ItemExponentialFailureRateLimiter",
        "BucketRateLimiter",
    ]
    assert default.when("a") == pytest.approx(0.005)
    assert default.when("a") == pytest.approx(0.01)


def test_token_bucket_try_accept() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 3, clock=clock)
    assert [bucket.try_accept() for _ in range(4)] == [True, True, True, False]
    clock.advance(0.4)
    assert not bucket.try_accept()
    clock.advance(0.1)
    assert bucket.try_accept()
    clock.advance(100)
    assert bucket.tokens() == pytest.approx(3.0)  # never beyond the burst


def test_token_bucket_unlimited() -> None:
    bucket = TokenBucket(0, 1)
    assert all(bucket.try_accept() for _ in range(1000))
    assert bucket.reserve() == 0.0


async def test_token_bucket_wait_and_cancel_returns_token() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000.0, 1, clock=clock)
    assert await bucket.wait() == 0.0
    assert await bucket.wait() == pytest.approx(0.001)  # really sleeps 1 ms
    slow = TokenBucket(0.5, 1, clock=clock)
    assert slow.try_accept()
    waiter = asyncio.create_task(slow.wait())  # would wait 2 s
    await asyncio.sleep(0)
    assert slow.tokens() == pytest.approx(-1.0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert slow.tokens() == pytest.approx(0.0)  # the cancelled reservation was given back
