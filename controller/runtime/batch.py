"""Slow-start batching of API writes, as kube-controller-manager's `slowStartBatch` does it.

A controller that must create (or delete) many objects sends 1, then 2, then 4, ... requests at
a time and stops after the first batch in which one failed. A persistent error (a quota, an
admission webhook refusing the object) then costs a handful of requests instead of `count`, and
the work queue's backoff decides when to try again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

#: kube-controller-manager's `BurstReplicas`: no pass sends more than this many writes at once.
DEFAULT_BATCH_CAP = 500


async def slow_start_batch(
    count: int,
    call: Callable[[int], Awaitable[None]],
    *,
    initial: int = 1,
    cap: int = DEFAULT_BATCH_CAP,
) -> tuple[int, list[BaseException]]:
    """Run `call(0)`, ..., `call(count - 1)` (each index once, in order of batches) in batches of
    `initial`, `2 * initial`, `4 * initial`, ..., no batch larger than `cap`; calls within a batch
    run concurrently. After the first batch with a failure no further call is started.

    Returns (how many calls succeeded, the errors raised in the failing batch — empty when all
    succeeded). Calls never started count neither as successes nor as errors: the caller lowers
    its expectations by `count - successes`.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    successes = 0
    start = 0
    batch = min(max(1, initial), cap)
    while start < count:
        size = min(batch, count - start)
        results = await asyncio.gather(*(call(i) for i in range(start, start + size)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        successes += size - len(errors)
        start += size
        if errors:
            return successes, errors
        batch = min(2 * batch, cap)
    return successes, []
