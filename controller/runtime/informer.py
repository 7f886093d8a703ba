"""Informers: list, then watch from the list's resourceVersion, into an indexed Store, calling event
handlers (client-go's Reflector + SharedIndexInformer, on asyncio).

- The first list is paginated; its items replace the store, and objects that vanished since the
  previous list reach `on_delete` as a `DeletedFinalStateUnknown` tombstone.
- The watch asks for bookmarks and a jittered server-side timeout; BOOKMARK events only advance
  the resourceVersion; a watch that ends normally is resumed from the last resourceVersion.
- 410 Gone / "too old resource version" → relist. Other failures back off exponentially with
  jitter (0.8 s .. 30 s, reset after a healthy watch); transient ones (transport, 429, 5xx)
  resume the watch, anything else relists.
- Handlers are synchronous, run in the informer's task, and must be quick (map to keys, enqueue).
  A handler that raises is logged and does not stop the informer or the other handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from controller.runtime.client import (
    MAX_RETRY_AFTER_SECONDS,
    KubeClient,
    Obj,
    api_error_from_status,
    is_expired,
    list_pages,
    object_key,
)
from controller.runtime.discovery import DEFAULT_INTERVAL, Discovery
from controller.runtime.errors import ApiError
from controller.runtime.metrics import CACHED_OBJECTS
from controller.runtime.resources import Resource
from controller.runtime.slim import DEFAULT_INTERNER, release_free_memory, slim
from controller.runtime.store import Store

log = structlog.get_logger(__name__)

# Short watches, so that a healthy stream is never silent for long: the API server sends a
# bookmark 2 s before a watch's timeout (and about every minute otherwise), and the informer
# watches again from it, without a relist. With at most 42 s between two messages, the client's
# read timeout (client.watch_idle_timeout: 50 s) tells a dead connection from a quiet one about
# as fast as client-go's HTTP/2 pings do (30 s + 15 s). The price is one watch request per
# informer every ~40 s, which the API server serves from its watch cache.
WATCH_TIMEOUT_SECONDS = 40

# Objects per list page. The items of a page are decoded one at a time (ApiClient.list_lazily),
# so a relist holds one page's body on top of the cache: ~2 MB at 100 realistic pods (19 KB of
# JSON each), ~10 MB at client-go's 500, which would be more than the whole cache of 1,000 pods
# (the relist peak). 10,000 pods take 100 requests.
LIST_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class DeletedFinalStateUnknown:
    """Passed to on_delete for an object whose deletion the informer did not see (it was gone at
    a relist); `obj` is the last state the cache had."""

    key: str
    obj: Obj


class ResourceEventHandler(Protocol):
    def on_add(self, obj: Obj) -> None: ...

    def on_update(self, old: Obj, new: Obj) -> None: ...

    def on_delete(self, obj: Obj | DeletedFinalStateUnknown) -> None: ...


@dataclass
class FuncHandler:
    """A handler from plain functions; any of them may be omitted."""

    on_add: Callable[[Obj], None] | None = None
    on_update: Callable[[Obj, Obj], None] | None = None
    on_delete: Callable[[Obj | DeletedFinalStateUnknown], None] | None = None


Handler = ResourceEventHandler | FuncHandler


def _rv_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _same_version(cached: Obj, obj: Obj) -> bool:
    """The listed object is the cached one: same uid, same (non-empty) resourceVersion."""
    a = cached.get("metadata") or {}
    b = obj.get("metadata") or {}
    rv = a.get("resourceVersion")
    return bool(rv) and rv == b.get("resourceVersion") and a.get("uid") == b.get("uid")


class _Backoff:
    """Exponential backoff with jitter, like client-go's reflector backoff manager."""

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * (2.0 ** min(self.attempt, 30)))
        self.attempt += 1
        return min(self.cap, delay * (1.0 + random.random()))

    def reset(self) -> None:
        self.attempt = 0


class Informer:
    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resync_period: float | None = None,
        page_size: int = LIST_PAGE_SIZE,
        watch_timeout_seconds: int = WATCH_TIMEOUT_SECONDS,
        backoff_base: float = 0.8,
        backoff_cap: float = 30.0,
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace if resource.namespaced else None
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.page_size = page_size
        self.watch_timeout_seconds = watch_timeout_seconds
        self.store = Store()
        self._handlers: list[Handler] = []
        self._synced = asyncio.Event()
        self._resource_version = ""
        self._backoff = _Backoff(backoff_base, backoff_cap)
        self._watch_delivered = False
        # Why the last list failed, until one succeeds: what /readyz and the startup log report.
        self.last_list_error: BaseException | None = None
        self._log = log.bind(resource=str(resource), namespace=self.namespace, label_selector=label_selector)
        # Counters for tests and diagnostics.
        self.lists = 0
        self.watches = 0

    # --- public API ----------------------------------------------------------------------------

    def add_event_handler(self, handler: Handler) -> None:
        """Register a handler. Added after the first list, it first gets on_add for every cached
        object (as client-go does), so late registrations miss nothing."""
        self._handlers.append(handler)
        if self.has_synced():
            for obj in self.store.list():
                self._call(handler, "on_add", obj)

    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_for_sync(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 (the agreed interface)
        try:
            async with asyncio.timeout(timeout):
                await self._synced.wait()
        except TimeoutError:
            return False
        return True

    @property
    def last_sync_resource_version(self) -> str:
        return self._resource_version

    async def run(self) -> None:
        """List and watch until cancelled."""
        untrack = CACHED_OBJECTS.track(str(self.resource), self.store)
        resync_task = None
        if self.resync_period:
            resync_task = asyncio.create_task(
                self._resync_loop(self.resync_period), name=f"resync {self.resource}"
            )
        try:
            await self._list_and_watch()
        finally:
            untrack()
            if resync_task is not None:
                resync_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await resync_task

    # --- the reflector loop --------------------------------------------------------------------

    async def _list_and_watch(self) -> None:
        need_list = True
        expired_streak = 0
        while True:
            if need_list:
                try:
                    await self._relist()
                except asyncio.CancelledError:
                    raise
                except Exception as err:
                    self.last_list_error = err
                    await self._sleep_backoff("list failed", err)
                    continue
                self.last_list_error = None
                need_list = False
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                await self._watch()
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                if is_expired(err):
                    need_list = True
                    expired_streak = 0 if self._watch_delivered else expired_streak + 1
                    self._log.info(
                        "watch expired, relisting", resource_version=self._resource_version, error=str(err)
                    )
                    if expired_streak > 1:
                        # Expired again right after a relist: do not hammer the server with lists.
                        await self._sleep_backoff("watch expired again", err)
                elif err.code == 0 or err.code == 429 or err.code >= 500:
                    await self._sleep_backoff("watch failed, resuming", err)
                else:
                    need_list = True
                    await self._sleep_backoff("watch failed, relisting", err)
            except Exception as err:
                need_list = True
                await self._sleep_backoff("watch failed unexpectedly, relisting", err)
            else:
                expired_streak = 0
                if not self._watch_delivered and loop.time() - started < 1.0:
                    # client-go's "very short watch": a server that closes at once must not
                    # turn this loop into a busy loop.
                    await self._sleep_backoff("watch closed at once without events", None)
                else:
                    self._backoff.reset()

    async def _sleep_backoff(self, what: str, err: BaseException | None) -> None:
        delay = self._backoff.next_delay()
        if isinstance(err, ApiError) and err.retry_after_seconds is not None:
            # The server said when it can take us again (API Priority and Fairness); coming back
            # sooner only earns another 429.
            delay = max(delay, min(err.retry_after_seconds, MAX_RETRY_AFTER_SECONDS))
        error = None if err is None else str(err)
        error_type = None if err is None else type(err).__name__
        self._log.warning(what, error=error, error_type=error_type, retry_in=round(delay, 3))
        await asyncio.sleep(delay)

    async def _relist(self) -> None:
        """List page by page into a new cache, then swap it in at once: readers (syncs, between
        their awaits) never see a mix of old and new objects, a state that never existed.

        Memory: one page's body and one decoded item at a time (with ApiClient; other clients
        hand over a page of decoded items); each item is slimmed (slim.py) before the next is
        decoded, and an item whose uid and resourceVersion are the cached object's is the cached
        object (same resourceVersion, same content), so a relist over a warm cache allocates
        little beyond one page's body."""
        fresh: dict[str, Obj] = {}
        resource_version = ""
        async for page in list_pages(
            self.client,
            self.resource,
            self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            page_size=self.page_size,
        ):
            if page.restart:
                fresh.clear()
            self._take_page(page.items, fresh)
            resource_version = page.resource_version
            del page
        self.lists += 1
        count = len(fresh)
        self._swap_in(fresh, resource_version)
        del fresh
        DEFAULT_INTERNER.sweep()  # the shared parts only the old objects used
        release_free_memory()
        self._synced.set()
        self._log.debug("listed", items=count, resource_version=resource_version)

    def _take_page(self, items: Iterable[Obj], into: dict[str, Obj]) -> None:
        kind = self.resource.kind
        cached = self.store.get
        # Slimming allocates a burst of containers; the cyclic GC would walk the whole cache
        # again and again meanwhile (as for decode_json). They hold no cycles.
        paused = gc.isenabled()
        gc.disable()
        try:
            for obj in items:
                key = object_key(obj)
                old = cached(key)
                into[key] = old if old is not None and _same_version(old, obj) else slim(obj, kind, old)
        finally:
            if paused:
                gc.enable()

    def _swap_in(self, fresh: dict[str, Obj], resource_version: str) -> None:
        """Replace the store's content by `fresh` and tell the handlers: on_add for new keys,
        on_update(old, new) for the others, a DeletedFinalStateUnknown for vanished ones."""
        old_items = self.store.replace(fresh.values(), resource_version)
        self._resource_version = resource_version
        for key, obj in fresh.items():
            old = old_items.get(key)
            if old is None:
                self._dispatch("on_add", obj)
            else:
                self._dispatch("on_update", old, obj)
        for key, old in old_items.items():
            if key not in fresh:
                self._dispatch("on_delete", DeletedFinalStateUnknown(key, old))

    async def _watch(self) -> None:
        """One watch stream; returns when the server ends it, raises on failure."""
        # Jittered so that the informers of many controllers do not re-watch in lockstep.
        timeout = max(1, int(self.watch_timeout_seconds * (0.9 + random.random() * 0.2)))
        self.watches += 1
        self._watch_delivered = False
        stream = self.client.watch(
            self.resource,
            self.namespace,
            resource_version=self._resource_version or None,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            timeout_seconds=timeout,
            allow_bookmarks=True,
        )
        try:
            async for event in stream:
                if not self._watch_delivered:
                    self._watch_delivered = True
                    self._backoff.reset()  # a healthy watch
                self._handle_event(event)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    def _handle_event(self, event: Obj) -> None:
        kind = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            return
        if kind == "BOOKMARK":
            rv = _rv_of(obj)
            if rv:
                self._resource_version = rv
            return
        if kind == "ERROR":
            raise api_error_from_status(obj)
        obj = slim(obj, self.resource.kind, self.store.get_by_object(obj))
        rv = _rv_of(obj)
        if kind in ("ADDED", "MODIFIED"):
            old = self.store.add(obj)
            if old is None:
                self._dispatch("on_add", obj)
            else:
                self._dispatch("on_update", old, obj)
        elif kind == "DELETED":
            self.store.delete(obj)
            self._dispatch("on_delete", obj)
        else:
            self._log.warning("unknown watch event type", type=kind)
            return
        if rv:
            self._resource_version = rv
            self.store.resource_version = rv

    async def _resync_loop(self, period: float) -> None:
        await self._synced.wait()
        while True:
            await asyncio.sleep(period)
            for obj in self.store.list():
                self._dispatch("on_update", obj, obj)

    # --- handlers ------------------------------------------------------------------------------

    def _dispatch(self, method: str, *args: Any) -> None:
        for handler in list(self._handlers):
            self._call(handler, method, *args)

    def _call(self, handler: Handler, method: str, *args: Any) -> None:
        fn = getattr(handler, method, None)
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:
            self._log.exception("event handler failed", handler=method)


class InformerFactory:
    """Shared informers: one per resource + label selector, started together; and the API
    discovery of optional kinds, polled alongside them."""

    def __init__(
        self,
        client: KubeClient,
        *,
        namespace: str | None = None,
        resync_period: float | None = None,
        watch_timeout_seconds: int = WATCH_TIMEOUT_SECONDS,
        discovery_interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.resync_period = resync_period
        self.watch_timeout_seconds = watch_timeout_seconds
        self.discovery = Discovery(client, interval=discovery_interval)
        self._discovery_task: asyncio.Task[None] | None = None
        self._informers: dict[tuple[Resource, str | None], Informer] = {}
        self._tasks: dict[tuple[Resource, str | None], asyncio.Task[None]] = {}
        self._started = False

    def informer(self, resource: Resource, *, label_selector: str | None = None) -> Informer:
        key = (resource, label_selector or None)
        informer = self._informers.get(key)
        if informer is None:
            informer = Informer(
                self.client,
                resource,
                namespace=self.namespace,
                label_selector=label_selector,
                resync_period=self.resync_period,
                watch_timeout_seconds=self.watch_timeout_seconds,
            )
            self._informers[key] = informer
            if self._started:
                self._start_one(key, informer)
        return informer

    def remove(self, informer: Informer) -> None:
        """Stop `informer` and forget it, for a resource the API server stopped serving (its CRD
        was deleted); a later `informer()` call for it starts afresh. Every holder of the
        informer must drop it too."""
        key = next((k for k, i in self._informers.items() if i is informer), None)
        if key is None:
            return
        del self._informers[key]
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()

    @property
    def informers(self) -> list[Informer]:
        return list(self._informers.values())

    def start(self) -> None:
        """Start every informer not yet running (idempotent); later ones start on creation."""
        self._started = True
        if self._discovery_task is None:
            self._discovery_task = asyncio.create_task(self.discovery.run(), name="api-discovery")
            self._discovery_task.add_done_callback(self._on_task_done)
        for key, informer in self._informers.items():
            if key not in self._tasks:
                self._start_one(key, informer)

    def _start_one(self, key: tuple[Resource, str | None], informer: Informer) -> None:
        task = asyncio.create_task(informer.run(), name=f"informer {key[0]} {key[1] or ''}".strip())
        task.add_done_callback(self._on_task_done)
        self._tasks[key] = task

    @staticmethod
    def _on_task_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("informer stopped", task=task.get_name(), exc_info=task.exception())

    async def wait_for_sync(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 (the agreed interface)
        """Whether every informer synced (and discovery answered) within the timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self.discovery.wait_for_sync()
                for informer in list(self._informers.values()):
                    await informer.wait_for_sync()
        except TimeoutError:
            return False
        return self.discovery.has_synced() and all(i.has_synced() for i in self._informers.values())

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        if self._discovery_task is not None:
            tasks.append(self._discovery_task)
            self._discovery_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._started = False
