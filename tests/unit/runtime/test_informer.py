from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from controller.runtime import metrics
from controller.runtime.client import Obj
from controller.runtime.errors import ApiError, Forbidden, Gone, ServerError
from controller.runtime.fake import FakeClient
from controller.runtime.informer import DeletedFinalStateUnknown, FuncHandler, Informer, InformerFactory
from controller.runtime.resources import PODS, Resource
from controller.runtime.store import INDEX_CONTROLLER_UID

# --- a client that plays a script ------------------------------------------------------------------


def pod(name: str, rv: int, owner: str | None = None, **extra: Any) -> Obj:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "resourceVersion": str(rv), **extra}
    if owner:
        meta["ownerReferences"] = [{"uid": owner, "controller": True, "kind": "RoleSet", "name": "o"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta}


def page(rv: int, *items: Obj, cont: str | None = None) -> Obj:
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    if cont:
        meta["continue"] = cont
    return {"metadata": meta, "items": list(items)}


def ev(kind: str, obj: Obj) -> Obj:
    return {"type": kind, "object": obj}


def bookmark(rv: int) -> Obj:
    return ev("BOOKMARK", {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": str(rv)}})


Script = list[Obj | BaseException]


class ScriptedClient:
    """list() answers from `lists` in order; each watch() plays the next script in `watches`
    (events, or an exception to raise) and then ends normally; with no script left it blocks."""

    def __init__(self, lists: list[Obj | BaseException], watches: list[Script]) -> None:
        self.lists = lists
        self.watches = watches
        self.list_calls: list[dict[str, Any]] = []
        self.watch_calls: list[dict[str, Any]] = []
        self.idle = asyncio.Event()  # set when the informer is blocked on an empty script

    async def list(self, resource: Resource, namespace: str | None = None, **kwargs: Any) -> Obj:
        self.list_calls.append(kwargs)
        answer = self.lists.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def watch(self, resource: Resource, namespace: str | None = None, **kwargs: Any) -> AsyncIterator[Obj]:
        self.watch_calls.append(kwargs)
        return self._play(self.watches.pop(0) if self.watches else None)

    async def _play(self, script: Script | None) -> AsyncIterator[Obj]:
        if script is None:
            self.idle.set()
            await asyncio.Event().wait()
            return
        for step in script:
            await asyncio.sleep(0)
            if isinstance(step, BaseException):
                raise step
            yield step

    async def get(self, *args: Any, **kwargs: Any) -> Obj:
        raise NotImplementedError

    async def create(self, *args: Any, **kwargs: Any) -> Obj:
        raise NotImplementedError

    async def replace(self, *args: Any, **kwargs: Any) -> Obj:
        raise NotImplementedError

    async def patch(self, *args: Any, **kwargs: Any) -> Obj:
        raise NotImplementedError

    async def delete(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class Recorder:
    """A handler recording (event, name) in order; tombstones as ("delete", "tombstone:key")."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.objects: list[tuple[str, Any]] = []

    def on_add(self, obj: Obj) -> None:
        self.events.append(("add", obj["metadata"]["name"]))
        self.objects.append(("add", obj))

    def on_update(self, old: Obj, new: Obj) -> None:
        self.events.append(("update", new["metadata"]["name"]))
        self.objects.append(("update", (old, new)))

    def on_delete(self, obj: Obj | DeletedFinalStateUnknown) -> None:
        if isinstance(obj, DeletedFinalStateUnknown):
            self.events.append(("delete", f"tombstone:{obj.key}"))
        else:
            self.events.append(("delete", obj["metadata"]["name"]))
        self.objects.append(("delete", obj))


async def run_until_idle(
    client: ScriptedClient, informer: Informer, within: float = 2.0
) -> asyncio.Task[None]:
    task = asyncio.create_task(informer.run())
    await asyncio.wait_for(client.idle.wait(), within)
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def new_informer(client: Any, **kwargs: Any) -> Informer:
    return Informer(client, PODS, backoff_base=0.001, backoff_cap=0.01, **kwargs)


# --- the reflector ---------------------------------------------------------------------------------


async def test_list_watch_bookmark_and_rewatch_from_last_rv() -> None:
    client = ScriptedClient(
        lists=[page(10, pod("a", 5), pod("b", 6), cont="more"), page(10, pod("z", 7))],
        watches=[
            [ev("ADDED", pod("c", 11)), bookmark(15)],
            [ev("MODIFIED", pod("a", 16, managedFields=[{"manager": "x"}])), ev("DELETED", pod("b", 17))],
        ],
    )
    informer = new_informer(client, page_size=2)
    recorder = Recorder()
    informer.add_event_handler(recorder)
    task = await run_until_idle(client, informer)
    assert informer.has_synced()

    assert [c.get("continue_token") for c in client.list_calls] == [None, "more"]
    assert all(c["limit"] == 2 for c in client.list_calls)
    assert [c["resource_version"] for c in client.watch_calls] == ["10", "15", "17"]
    assert all(c["allow_bookmarks"] for c in client.watch_calls)
    # Short (jittered 40 s +- 10%), so that the bookmark before the timeout keeps it talking.
    assert all(36 <= c["timeout_seconds"] <= 44 for c in client.watch_calls)
    assert recorder.events == [
        ("add", "a"),
        ("add", "b"),
        ("add", "z"),
        ("add", "c"),
        ("update", "a"),
        ("delete", "b"),
    ]
    assert sorted(informer.store.keys()) == ["ns/a", "ns/c", "ns/z"]
    assert "managedFields" not in informer.store.get("ns/a")["metadata"]  # type: ignore[index]
    assert informer.last_sync_resource_version == "17"
    assert informer.lists == 1
    await stop(task)


async def test_a_running_informer_reports_its_cached_objects() -> None:
    def cached() -> float:
        return metrics.sample_value("stormservice_informer_cached_objects", {"resource": str(PODS)}) or 0

    before = cached()
    client = ScriptedClient(lists=[page(10, pod("a", 5), pod("b", 6))], watches=[[ev("ADDED", pod("c", 11))]])
    informer = new_informer(client)
    task = await run_until_idle(client, informer)
    assert cached() == before + 3
    await stop(task)
    assert cached() == before


async def test_gone_relists_and_tombstones_missed_deletes() -> None:
    client = ScriptedClient(
        lists=[
            page(10, pod("a", 1), pod("b", 2), pod("c", 3)),
            page(20, pod("a", 18), pod("d", 19)),
        ],
        watches=[[ev("ADDED", pod("e", 11)), Gone(code=410, reason="Expired", message="too old")]],
    )
    informer = new_informer(client)
    recorder = Recorder()
    informer.add_event_handler(recorder)
    task = await run_until_idle(client, informer)

    assert informer.lists == 2
    assert [c["resource_version"] for c in client.watch_calls] == ["10", "20"]
    assert recorder.events == [
        ("add", "a"),
        ("add", "b"),
        ("add", "c"),
        ("add", "e"),
        ("update", "a"),
        ("add", "d"),
        ("delete", "tombstone:ns/b"),
        ("delete", "tombstone:ns/c"),
        ("delete", "tombstone:ns/e"),
    ]
    tombstone = recorder.objects[6][1]
    assert isinstance(tombstone, DeletedFinalStateUnknown)
    assert tombstone.obj["metadata"]["resourceVersion"] == "2"  # the last state the cache had
    old, new = recorder.objects[4][1]
    assert (old["metadata"]["resourceVersion"], new["metadata"]["resourceVersion"]) == ("1", "18")
    assert sorted(informer.store.keys()) == ["ns/a", "ns/d"]
    await stop(task)


class PausingClient(ScriptedClient):
    """A ScriptedClient whose list() yields to the event loop first and records what the store
    held at that moment, as a reader between two awaits of a sync would see it."""

    def __init__(self, informer_box: list[Informer], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.informer_box = informer_box
        self.store_seen: list[list[tuple[str, str]]] = []

    async def list(self, resource: Resource, namespace: str | None = None, **kwargs: Any) -> Obj:
        await asyncio.sleep(0)
        store = self.informer_box[0].store
        self.store_seen.append(sorted((k, o["metadata"]["resourceVersion"]) for k, o in store.items()))
        return await super().list(resource, namespace, **kwargs)


async def test_relist_swaps_the_cache_at_once_and_keeps_unchanged_objects() -> None:
    box: list[Informer] = []
    uid = {"uid": "u-a"}
    client = PausingClient(
        box,
        lists=[
            page(10, pod("a", 1, **uid), pod("b", 2), pod("c", 3)),
            page(20, pod("a", 1, **uid), pod("b", 18), cont="p2"),
            page(20, pod("d", 19)),
        ],
        watches=[[Gone(code=410, reason="Expired", message="too old")]],
    )
    informer = new_informer(client, page_size=2)
    box.append(informer)
    recorder = Recorder()
    informer.add_event_handler(recorder)
    task = asyncio.create_task(informer.run())
    await asyncio.wait_for(informer.wait_for_sync(), 2)
    before = {k: informer.store.get(k) for k in ("ns/a", "ns/b")}
    await asyncio.wait_for(client.idle.wait(), 2)

    # While the relist fetched its pages, readers saw the old cache, whole.
    old = [("ns/a", "1"), ("ns/b", "2"), ("ns/c", "3")]
    assert client.store_seen[1:] == [old, old]
    assert sorted((k, o["metadata"]["resourceVersion"]) for k, o in informer.store.items()) == [
        ("ns/a", "1"),
        ("ns/b", "18"),
        ("ns/d", "19"),
    ]
    # Same uid and resourceVersion: the cached object itself, not a copy.
    assert informer.store.get("ns/a") is before["ns/a"]
    assert informer.store.get("ns/b") is not before["ns/b"]
    assert recorder.events[3:] == [
        ("update", "a"),
        ("update", "b"),
        ("add", "d"),
        ("delete", "tombstone:ns/c"),
    ]
    old_a, new_a = recorder.objects[3][1]
    assert old_a is new_a
    await stop(task)


async def test_relist_starts_over_when_its_continue_token_expires() -> None:
    client = ScriptedClient(
        lists=[
            page(10, pod("a", 1)),
            page(20, pod("b", 2), cont="p2"),
            Gone(code=410, reason="Expired", message="continue token expired"),
            page(21, pod("c", 3), pod("d", 4)),
        ],
        watches=[[Gone(code=410, reason="Expired", message="too old")]],
    )
    informer = new_informer(client, page_size=1)
    recorder = Recorder()
    informer.add_event_handler(recorder)
    task = await run_until_idle(client, informer)
    # b came from the abandoned paginated list: it is not in the cache, and nobody heard of it.
    assert sorted(informer.store.keys()) == ["ns/c", "ns/d"]
    assert recorder.events == [("add", "a"), ("add", "c"), ("add", "d"), ("delete", "tombstone:ns/a")]
    assert informer.last_sync_resource_version == "21"
    await stop(task)


@pytest.mark.writes_cached_objects
async def test_cached_objects_are_read_only() -> None:
    client = ScriptedClient(
        lists=[page(10, pod("a", 1, labels={"x": "1"}))],
        watches=[[ev("MODIFIED", pod("a", 2, labels={"x": "2"}))]],
    )
    informer = new_informer(client)
    task = await run_until_idle(client, informer)
    cached = informer.store.get("ns/a")
    assert cached is not None and cached["metadata"]["labels"] == {"x": "2"}
    with pytest.raises(TypeError, match="read-only"):
        cached["metadata"]["labels"]["x"] = "3"
    with pytest.raises(TypeError, match="read-only"):
        cached["metadata"]["ownerReferences"] = []
    await stop(task)


@pytest.mark.parametrize(
    "error_event",
    [
        ev(
            "ERROR",
            {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"},
        ),
        ev("ERROR", {"kind": "Status", "code": 500, "message": "too old resource version: 5 (9)"}),
    ],
)
async def test_expired_error_events_relist(error_event: Obj) -> None:
    client = ScriptedClient(lists=[page(10), page(30)], watches=[[error_event]])
    informer = new_informer(client)
    task = await run_until_idle(client, informer)
    assert informer.lists == 2
    assert [c["resource_version"] for c in client.watch_calls] == ["10", "30"]
    await stop(task)


async def test_transient_watch_errors_resume_from_last_rv_without_relist() -> None:
    client = ScriptedClient(
        lists=[page(10)],
        watches=[
            [ev("ADDED", pod("a", 12)), ServerError(code=0, reason="TransportError", message="reset")],
            [ServerError(code=503, reason="ServiceUnavailable")],
            [ApiError(code=429, reason="TooManyRequests")],
        ],
    )
    informer = new_informer(client)
    task = await run_until_idle(client, informer)
    assert informer.lists == 1
    assert [c["resource_version"] for c in client.watch_calls] == ["10", "12", "12", "12"]
    await stop(task)


async def test_throttled_watch_and_list_wait_for_retry_after() -> None:
    throttled = ApiError(code=429, reason="TooManyRequests", retry_after_seconds=0.3)
    client = ScriptedClient(lists=[throttled, page(10)], watches=[[throttled]])
    informer = new_informer(client)  # its own backoff is at most 10 ms
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = await run_until_idle(client, informer)
    assert loop.time() - started >= 0.6, "two Retry-After waits of 0.3 s"
    assert len(client.list_calls) == 2
    assert [c["resource_version"] for c in client.watch_calls] == ["10", "10"]
    await stop(task)


async def test_other_watch_errors_relist_after_backoff() -> None:
    client = ScriptedClient(
        lists=[page(10, pod("a", 1)), page(11, pod("a", 1))],
        watches=[[Forbidden(code=403, reason="Forbidden")]],
    )
    informer = new_informer(client)
    task = await run_until_idle(client, informer)
    assert informer.lists == 2
    await stop(task)


async def test_list_failures_are_retried() -> None:
    client = ScriptedClient(
        lists=[ServerError(code=0, reason="Timeout"), ServerError(code=500), page(10, pod("a", 1))],
        watches=[],
    )
    informer = new_informer(client)
    task = await run_until_idle(client, informer)
    assert informer.has_synced()
    assert len(client.list_calls) == 3
    await stop(task)


async def test_wait_for_sync_times_out_while_list_fails() -> None:
    client = ScriptedClient(lists=[ServerError(code=0)] * 1000, watches=[])
    informer = new_informer(client)
    task = asyncio.create_task(informer.run())
    assert not await informer.wait_for_sync(timeout=0.05)
    assert not informer.has_synced()
    await stop(task)


async def test_handler_exceptions_do_not_stop_the_informer() -> None:
    client = ScriptedClient(lists=[page(10, pod("a", 1))], watches=[[ev("ADDED", pod("b", 11))]])
    informer = new_informer(client)

    def explode(obj: Obj) -> None:
        raise RuntimeError("handler bug")

    recorder = Recorder()
    informer.add_event_handler(FuncHandler(on_add=explode))
    informer.add_event_handler(recorder)
    informer.add_event_handler(FuncHandler())  # all callbacks optional
    task = await run_until_idle(client, informer)
    assert recorder.events == [("add", "a"), ("add", "b")]
    assert informer.store.get("ns/b") is not None
    await stop(task)


async def test_indexes_follow_updates_and_deletes() -> None:
    client = ScriptedClient(
        lists=[page(10, pod("a", 1, owner="u1"), pod("b", 2, owner="u1"))],
        watches=[[ev("MODIFIED", pod("a", 11, owner="u2")), ev("DELETED", pod("b", 12, owner="u1"))]],
    )
    informer = new_informer(client)
    task = await run_until_idle(client, informer)
    assert informer.store.by_index(INDEX_CONTROLLER_UID, "u1") == []
    assert [o["metadata"]["name"] for o in informer.store.by_index(INDEX_CONTROLLER_UID, "u2")] == ["a"]
    await stop(task)


async def test_resync_calls_on_update_with_the_same_object() -> None:
    client = ScriptedClient(lists=[page(10, pod("a", 1))], watches=[])
    informer = new_informer(client, resync_period=0.01)
    seen: list[tuple[Obj, Obj]] = []
    informer.add_event_handler(FuncHandler(on_update=lambda old, new: seen.append((old, new))))
    task = await run_until_idle(client, informer)
    for _ in range(200):
        if len(seen) >= 2:
            break
        await asyncio.sleep(0.005)
    assert len(seen) >= 2
    assert all(old is new for old, new in seen)
    await stop(task)


async def test_late_handler_gets_existing_objects() -> None:
    client = ScriptedClient(lists=[page(10, pod("a", 1), pod("b", 2))], watches=[])
    informer = new_informer(client)
    task = await run_until_idle(client, informer)
    recorder = Recorder()
    informer.add_event_handler(recorder)
    assert sorted(recorder.events) == [("add", "a"), ("add", "b")]
    await stop(task)


# --- against the FakeClient ------------------------------------------------------------------------


async def until(condition: Callable[[], bool], within: float = 2.0) -> None:
    for _ in range(int(within / 0.002)):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition not met in time")


async def test_fake_end_to_end_with_missed_deletes() -> None:
    fake = FakeClient()
    for name in ("a", "b", "c"):
        await fake.create(PODS, "ns", {"metadata": {"name": name, "labels": {"app": "x"}}})
    informer = new_informer(fake, label_selector="app=x")
    recorder = Recorder()
    informer.add_event_handler(recorder)
    task = asyncio.create_task(informer.run())
    assert await informer.wait_for_sync(timeout=2)
    await until(lambda: fake.watch_count(PODS) == 1)

    await fake.patch(PODS, "ns", "a", {"metadata": {"labels": {"app": "y"}}})  # leaves the selector
    await until(lambda: informer.store.get("ns/a") is None)
    assert recorder.events[-1] == ("delete", "a")

    # While "disconnected": deletes the watch never delivers, then 410.
    await fake.delete(PODS, "ns", "b")
    await fake.create(PODS, "ns", {"metadata": {"name": "d", "labels": {"app": "x"}}})
    fake.expire_watches(PODS)
    await until(lambda: informer.lists == 2 and fake.watch_count(PODS) == 1)
    assert sorted(informer.store.keys()) == ["ns/c", "ns/d"]
    assert ("delete", "tombstone:ns/b") in recorder.events
    assert ("add", "d") in recorder.events

    fake.bookmark(PODS)
    await until(lambda: informer.last_sync_resource_version == fake.resource_version)
    fake.end_watches(PODS)  # the server's timeout: resume, no relist
    await until(lambda: informer.watches == 3 and fake.watch_count(PODS) == 1)
    await fake.create(PODS, "ns", {"metadata": {"name": "e", "labels": {"app": "x"}}})
    await until(lambda: informer.store.get("ns/e") is not None)
    assert informer.lists == 2
    await stop(task)


async def test_factory_shares_starts_and_stops() -> None:
    fake = FakeClient()
    await fake.create(PODS, "ns", {"metadata": {"name": "a"}})
    await fake.create(PODS, "other", {"metadata": {"name": "b"}})
    factory = InformerFactory(fake, namespace="ns")
    pods = factory.informer(PODS)
    assert factory.informer(PODS) is pods
    labelled = factory.informer(PODS, label_selector="app=x")
    assert labelled is not pods
    factory.start()
    factory.start()  # idempotent
    assert await factory.wait_for_sync(timeout=2)
    assert pods.store.keys() == ["ns/a"]  # namespaced factory
    assert labelled.store.keys() == []
    late = factory.informer(PODS, label_selector="late=1")
    assert await late.wait_for_sync(timeout=2)  # started because the factory runs
    assert await factory.wait_for_sync(timeout=2)
    await until(lambda: fake.watch_count(PODS) == 3)
    factory.remove(late)
    await until(lambda: fake.watch_count(PODS) == 2)  # its watch closed
    assert late not in factory.informers
    assert factory.informer(PODS, label_selector="late=1") is not late  # a fresh one
    await factory.stop()
    assert fake.watch_count(PODS) == 0  # watches closed on cancellation
