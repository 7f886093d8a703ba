"""Kubernetes Events (core/v1), recorded without blocking the caller, in the manner of client-go's
tools/record broadcaster + EventCorrelator.

- `event()` only enqueues; a background task writes. A full queue drops the event (a sync must
  never wait on, or fail because of, an Event).
- Repeats of the same event (same object uid, type, reason and message) within the aggregation
  window PATCH the existing Event (count, lastTimestamp) instead of creating new objects.
  Identical events queued together are merged into one write.
- A token bucket per object (burst 25, then one every 5 minutes, as client-go's spam filter) keeps
  a hot loop from flooding the API server; what it drops is logged at debug level.
- Write errors are logged and forgotten.

Not done (client-go's EventAggregator): folding events that differ only by message into one
"(combined from similar events)" Event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client import Counter

from controller.runtime.client import KubeClient, Obj
from controller.runtime.errors import NotFound, is_namespace_terminating
from controller.runtime.logging import get_logger
from controller.runtime.metrics import REGISTRY
from controller.runtime.ratelimit import TokenBucket
from controller.runtime.resources import EVENTS, Resource
from controller.runtime.timestamps import format_time

log = get_logger(__name__)

EVENTS_TOTAL = Counter(
    "stormservice_events_total",
    "Events emitted by the controller (every occurrence, including repeats merged into one Event "
    "and those dropped by the spam filter), by type and reason.",
    ["type", "reason"],
    registry=REGISTRY,
)

EventType = Literal["Normal", "Warning"]
NORMAL: EventType = "Normal"
WARNING: EventType = "Warning"

MAX_MESSAGE_LENGTH = 1024  # the events.k8s.io limit; longer core/v1 messages are truncated too
SPAM_BURST = 25
SPAM_REFILL_SECONDS = 300.0

_CorrelationKey = tuple[str, str, str, str, str, str]


@dataclass(slots=True)
class _Occurrence:
    key: _CorrelationKey
    namespace: str
    involved: dict[str, Any]
    type_: str
    reason: str
    message: str
    count: int
    first: datetime
    last: datetime


@dataclass(slots=True)
class _Written:
    namespace: str
    name: str
    count: int
    first: datetime
    seen_at: float  # monotonic


class EventRecorder:
    def __init__(
        self,
        client: KubeClient,
        component: str,
        *,
        aggregate_window: float = 600.0,
        host: str | None = None,
        spam_burst: int = SPAM_BURST,
        spam_refill_seconds: float = SPAM_REFILL_SECONDS,
        max_queue: int = 1000,
        cache_size: int = 4096,
        flush_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self.component = component
        self.host = host
        self.aggregate_window = aggregate_window
        self.flush_timeout = flush_timeout
        self._spam_burst = spam_burst
        self._spam_qps = 1.0 / spam_refill_seconds if spam_refill_seconds > 0 else 0.0
        self._clock = clock
        self._wall_clock = wall_clock
        self._queue: asyncio.Queue[_Occurrence] = asyncio.Queue(maxsize=max_queue)
        self._cache: OrderedDict[_CorrelationKey, _Written] = OrderedDict()
        self._cache_size = cache_size
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.dropped = 0

    # --- recording (synchronous, never raises) ---------------------------------------------------

    def event(
        self,
        obj: Mapping[str, Any],
        type_: EventType | str,
        reason: str,
        message: str,
        *,
        resource: Resource | None = None,
    ) -> None:
        """Record an event about `obj`. `resource` supplies kind/apiVersion for objects that lack
        them (items of a list response do)."""
        try:
            self._record(obj, type_, reason, message, resource)
        except Exception:
            log.exception("could not record an event", reason=reason)

    def _record(
        self, obj: Mapping[str, Any], type_: str, reason: str, message: str, resource: Resource | None
    ) -> None:
        EVENTS_TOTAL.labels(type=type_, reason=reason).inc()
        if self._stopped:
            self.dropped += 1
            return
        meta = obj.get("metadata") or {}
        involved: dict[str, Any] = {
            "apiVersion": obj.get("apiVersion") or (resource.api_version if resource else None),
            "kind": obj.get("kind") or (resource.kind if resource else None),
            "namespace": meta.get("namespace"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        involved = {k: v for k, v in involved.items() if v}
        object_id = str(
            meta.get("uid") or f"{involved.get('kind')}/{meta.get('namespace')}/{meta.get('name')}"
        )
        if not self._spam_allows(object_id):
            self.dropped += 1
            log.debug("event dropped by the spam filter", reason=reason, object=involved.get("name"))
            return
        if len(message) > MAX_MESSAGE_LENGTH:
            message = message[: MAX_MESSAGE_LENGTH - 3] + "..."
        now = self._wall_clock()
        key: _CorrelationKey = (
            self.component,
            object_id,
            str(involved.get("kind", "")),
            type_,
            reason,
            message,
        )
        occurrence = _Occurrence(
            key=key,
            namespace=str(meta.get("namespace") or "default"),
            involved=involved,
            type_=type_,
            reason=reason,
            message=message,
            count=1,
            first=now,
            last=now,
        )
        try:
            self._queue.put_nowait(occurrence)
        except asyncio.QueueFull:
            self.dropped += 1
            log.debug("event queue full, event dropped", reason=reason)

    def _spam_allows(self, object_id: str) -> bool:
        bucket = self._buckets.get(object_id)
        if bucket is None:
            bucket = TokenBucket(self._spam_qps, self._spam_burst, clock=self._clock)
            self._buckets[object_id] = bucket
            if len(self._buckets) > self._cache_size:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(object_id)
        return bucket.try_accept()

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._stopped = False
            self._task = asyncio.create_task(self._run(), name=f"events {self.component}")

    async def flush(self) -> None:
        """Wait until everything queued so far is written (or failed)."""
        if self._task is not None:
            await self._queue.join()

    async def stop(self) -> None:
        """Stop accepting events and write what is queued (for at most `flush_timeout` seconds)."""
        self._stopped = True
        if self._task is None:
            return
        try:
            async with asyncio.timeout(self.flush_timeout):
                await self._queue.join()
        except TimeoutError:
            log.warning("events not flushed in time", pending=self._queue.qsize())
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    # --- writing -------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            merged: dict[_CorrelationKey, _Occurrence] = {}
            for occ in batch:
                seen = merged.get(occ.key)
                if seen is None:
                    merged[occ.key] = occ
                else:
                    seen.count += occ.count
                    seen.last = occ.last
            try:
                for occ in merged.values():
                    try:
                        await self._write(occ)
                    except asyncio.CancelledError:
                        raise
                    except Exception as err:
                        if is_namespace_terminating(err):
                            log.debug("event not written: its namespace is being deleted", reason=occ.reason)
                            continue
                        log.warning(
                            "could not write an event",
                            reason=occ.reason,
                            object=occ.involved.get("name"),
                            error=str(err),
                        )
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, occ: _Occurrence) -> None:
        now = self._clock()
        written = self._cache.get(occ.key)
        if written is not None and now - written.seen_at <= self.aggregate_window:
            count = written.count + occ.count
            patch = {"count": count, "lastTimestamp": format_time(occ.last), "message": occ.message}
            try:
                await self._client.patch(EVENTS, written.namespace, written.name, patch, patch_type="merge")
            except NotFound:
                pass  # the Event expired on the server (its TTL is an hour): create a new one
            else:
                written.count = count
                written.seen_at = now
                self._cache.move_to_end(occ.key)
                return
        name = f"{occ.involved.get('name', 'unknown')}.{time.time_ns():x}"
        body: Obj = {
            "apiVersion": EVENTS.api_version,
            "kind": EVENTS.kind,
            "metadata": {"name": name, "namespace": occ.namespace},
            "involvedObject": occ.involved,
            "type": occ.type_,
            "reason": occ.reason,
            "message": occ.message,
            "source": {"component": self.component, **({"host": self.host} if self.host else {})},
            "reportingComponent": self.component,
            "count": occ.count,
            "firstTimestamp": format_time(occ.first),
            "lastTimestamp": format_time(occ.last),
        }
        if self.host:
            body["reportingInstance"] = self.host
        created = await self._client.create(EVENTS, occ.namespace, body)
        self._cache[occ.key] = _Written(
            namespace=occ.namespace,
            name=str(created.get("metadata", {}).get("name", name)),
            count=occ.count,
            first=occ.first,
            seen_at=now,
        )
        self._cache.move_to_end(occ.key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
