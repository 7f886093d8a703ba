"""The invariant monitor: its own watches on a namespace's StormServices, RoleSets and pods (straight
to the API server, never through a fault proxy), started before the workload, feeding every event
to `InvariantChecker` in resourceVersion order.

Three watches deliver their events independently, so the controller's reaction to a spec change
(a RoleSet event) can arrive before the spec change itself (a StormService event). Events are held
for `hold` seconds in a buffer sorted by resourceVersion (etcd's revision, one counter for all
kinds) and checked in that order, which is the order the API server wrote them.

A watch that ends with 410 Gone, or cannot reconnect (API server restarted), relists: objects
changed meanwhile are fed as one event at their current version, vanished ones as DELETED at the
list's version. What happened in between is not seen; the chaos report says when that occurred.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from dataclasses import dataclass, field

from controller.runtime.client import KubeClient, list_all
from controller.runtime.errors import ApiError, Gone
from controller.runtime.resources import PODS, ROLESETS, STORMSERVICES, Resource
from tests.chaos.invariants import InvariantChecker, Obj, Violation, pod_live, uid

KINDS: tuple[tuple[str, Resource], ...] = (
    ("StormService", STORMSERVICES),
    ("RoleSet", ROLESETS),
    ("Pod", PODS),
)


def _rv(obj: Obj) -> int:
    return int((obj.get("metadata") or {}).get("resourceVersion") or 0)


@dataclass
class Monitor:
    client: KubeClient
    namespace: str
    hold: float = 2.0
    checker: InvariantChecker = field(default_factory=InvariantChecker)
    violations: list[Violation] = field(default_factory=list)
    relists: int = 0
    known: dict[str, dict[str, Obj]] = field(default_factory=lambda: {k: {} for k, _ in KINDS})
    _buffer: list[tuple[int, int, float, str, str, Obj]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _synced: dict[str, asyncio.Event] = field(default_factory=dict)

    async def start(self) -> None:
        for kind, resource in KINDS:
            self._synced[kind] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._watch(kind, resource)))
        self._tasks.append(asyncio.create_task(self._process()))
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self._synced.values())), 60)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._flush(force=True)

    async def drain(self) -> None:
        """Checks everything delivered so far (after waiting out the hold, so the other watches
        catch up)."""
        await asyncio.sleep(self.hold + 0.5)
        self._flush(force=False)

    def excuse(self, pod: Obj) -> None:
        self.checker.excuse(pod, time.monotonic())

    def live_pods(self) -> list[Obj]:
        return [p for p in self.known["Pod"].values() if pod_live(p)]

    # --- internals ------------------------------------------------------------------------

    def _push(self, kind: str, event_type: str, obj: Obj, rv: int | None = None) -> None:
        key = uid(obj)
        if event_type == "DELETED":
            self.known[kind].pop(key, None)
        else:
            self.known[kind][key] = obj
        entry = (rv if rv is not None else _rv(obj), next(self._seq), time.monotonic(), kind, event_type, obj)
        heapq.heappush(self._buffer, entry)

    def _flush(self, *, force: bool) -> None:
        horizon = time.monotonic() - self.hold
        while self._buffer and (force or self._buffer[0][2] <= horizon):
            _, _, arrived, kind, event_type, obj = heapq.heappop(self._buffer)
            self.violations += self.checker.apply(kind, event_type, obj, arrived)

    async def _process(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self._flush(force=False)

    async def _relist(self, kind: str, resource: Resource) -> str:
        while True:
            try:
                items, rv = await list_all(self.client, resource, self.namespace)
                break
            except ApiError:
                await asyncio.sleep(0.5)
        seen = set()
        for obj in sorted(items, key=_rv):
            key = uid(obj)
            seen.add(key)
            old = self.known[kind].get(key)
            if old is None or _rv(old) < _rv(obj):
                self._push(kind, "ADDED" if old is None else "MODIFIED", obj)
        for key in [k for k in self.known[kind] if k not in seen]:
            self._push(kind, "DELETED", self.known[kind][key], rv=int(rv or 0))
        self._synced[kind].set()
        return str(rv)

    async def _watch(self, kind: str, resource: Resource) -> None:
        rv = await self._relist(kind, resource)
        while True:
            try:
                async for event in self.client.watch(
                    resource, self.namespace, resource_version=rv, timeout_seconds=50
                ):
                    obj = event.get("object") or {}
                    new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        self._push(kind, str(event["type"]), obj)
                    rv = str(new_rv or rv)
            except Gone:
                self.relists += 1
                rv = await self._relist(kind, resource)
            except ApiError:
                # Unreachable (an API server restart): resume from where we were; if that is too
                # old by now, the next round gets Gone and relists.
                await asyncio.sleep(0.5)
