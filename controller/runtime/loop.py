"""The generic controller loop: N workers taking keys from a rate-limited queue and syncing them.

The queue guarantees that a key is never handed to two workers at once; the loop's part is to
always call `done(key)`, to back off on errors (`add_rate_limited`) and to reset the backoff on
success (`forget`), like a kube-controller-manager worker's processNextWorkItem.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Protocol

import structlog

from controller.runtime import metrics
from controller.runtime.errors import ApiError, Conflict, ReconcileError
from controller.runtime.logging import get_logger
from controller.runtime.workqueue import RateLimitingQueue

log = get_logger(__name__)


class Reconciler(Protocol):
    @property
    def name(self) -> str:
        """The controller's name: the `controller` label of metrics and logs."""
        ...

    @property
    def queue(self) -> RateLimitingQueue: ...

    async def sync(self, key: str) -> float | None:
        """Reconcile one object. Returns seconds after which to sync the key again (None: only
        when an event asks for it); raising means failure and a retry with backoff."""
        ...


def new_reconcile_id() -> str:
    return uuid.uuid4().hex[:12]


async def process_one(reconciler: Reconciler, key: str) -> None:
    """Sync one key taken from the queue and settle it with the queue."""
    queue = reconciler.queue
    name = reconciler.name
    active = metrics.ACTIVE_WORKERS.labels(controller=name)
    with structlog.contextvars.bound_contextvars(controller=name, key=key, reconcile_id=new_reconcile_id()):
        active.inc()
        start = time.perf_counter()
        try:
            requeue_after = await reconciler.sync(key)
        except Exception as err:
            elapsed = time.perf_counter() - start
            metrics.RECONCILE_ERRORS.labels(controller=name).inc()
            metrics.RECONCILE_TOTAL.labels(controller=name, result="error").inc()
            _log_failure(err, requeues=queue.num_requeues(key), duration=round(elapsed, 6))
            queue.add_rate_limited(key)
        else:
            elapsed = time.perf_counter() - start
            queue.forget(key)
            if requeue_after is not None:
                metrics.RECONCILE_TOTAL.labels(controller=name, result="requeue_after").inc()
                queue.add_after(key, requeue_after)
            else:
                metrics.RECONCILE_TOTAL.labels(controller=name, result="success").inc()
            log.debug("reconciled", duration=round(elapsed, 6), requeue_after=requeue_after)
        finally:
            # Also on cancellation: a key left "processing" would never be handed out again.
            metrics.RECONCILE_TIME.labels(controller=name).observe(time.perf_counter() - start)
            active.dec()
            queue.done(key)


def _log_failure(err: Exception, **fields: object) -> None:
    """What the API server answered is not a bug: one line, no stack trace. A conflict (our
    cache was behind) is routine: retried with one debug line."""
    if isinstance(err, Conflict):
        log.debug("requeued after a conflict", error=str(err), **fields)
    elif isinstance(err, ApiError | ReconcileError):
        log.warning("reconcile failed", error=str(err), error_type=type(err).__name__, **fields)
    else:
        log.exception("reconcile failed", **fields)


async def _worker(reconciler: Reconciler) -> None:
    while True:
        key = await reconciler.queue.get()
        if key is None:
            return
        await process_one(reconciler, key)


async def run_workers(reconciler: Reconciler, workers: int) -> None:
    """Run `workers` workers until the queue is shut down and drained (each exits when `get()`
    returns None). For a graceful stop, call `queue.shut_down_with_drain()` and then await this;
    cancelling it instead cancels the syncs in flight."""
    if workers < 1:
        raise ValueError(f"{reconciler.name}: workers must be at least 1, not {workers}")
    name = reconciler.name
    metrics.MAX_CONCURRENT_RECONCILES.labels(controller=name).set(workers)
    metrics.ACTIVE_WORKERS.labels(controller=name).set(0)
    # At 0 from the start, as controller-runtime does: an error rate is then 0, not "no data".
    metrics.RECONCILE_ERRORS.labels(controller=name)
    for result in metrics.RECONCILE_RESULTS:
        metrics.RECONCILE_TOTAL.labels(controller=name, result=result)
    log.info("starting workers", controller=name, workers=workers)
    async with asyncio.TaskGroup() as group:
        for i in range(workers):
            group.create_task(_worker(reconciler), name=f"{name}-worker-{i}")
    log.info("workers stopped", controller=name)
