"""ApiClient and Informer against a real kube-apiserver: the wire behaviour the unit tests fake
(Status errors, patches, server-side apply, status subresource, pagination, watch bookmarks,
server-side watch timeouts, 410 on a too old resourceVersion)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from controller.runtime import metrics
from controller.runtime.client import ApiClient, Obj
from controller.runtime.errors import (
    AlreadyExists,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    is_namespace_terminating,
)
from controller.runtime.informer import DeletedFinalStateUnknown, FuncHandler, Informer
from controller.runtime.resources import ROLESETS, Resource

pytestmark = pytest.mark.integration

CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")


MINE = "stormservice-test=runtime"  # the namespace also holds kube-root-ca.crt


def configmap(name: str, **data: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"stormservice-test": "runtime"}},
        "data": data,
    }


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    for _ in range(int(within / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_crud_and_typed_errors(kube: ApiClient, namespace: str) -> None:
    created = await kube.create(CONFIGMAPS, namespace, configmap("a", k="1"))
    assert created["metadata"]["uid"]
    with pytest.raises(AlreadyExists):
        await kube.create(CONFIGMAPS, namespace, configmap("a"))
    with pytest.raises(NotFound):
        await kube.get(CONFIGMAPS, namespace, "missing")

    stale = dict(created)
    updated = await kube.replace(CONFIGMAPS, namespace, "a", {**created, "data": {"k": "2"}})
    assert updated["data"] == {"k": "2"}
    with pytest.raises(Conflict):
        await kube.replace(CONFIGMAPS, namespace, "a", {**stale, "data": {"k": "3"}})

    merged = await kube.patch(CONFIGMAPS, namespace, "a", {"data": {"m": "x"}})
    assert merged["data"] == {"k": "2", "m": "x"}
    jsoned = await kube.patch(
        CONFIGMAPS, namespace, "a", [{"op": "remove", "path": "/data/m"}], patch_type="json"
    )
    assert jsoned["data"] == {"k": "2"}
    strategic = await kube.patch(
        CONFIGMAPS, namespace, "a", {"metadata": {"labels": {"s": "1"}}}, patch_type="strategic"
    )
    assert strategic["metadata"]["labels"]["s"] == "1"

    with pytest.raises(Invalid) as err:
        await kube.create(CONFIGMAPS, namespace, configmap("Not_A_DNS_Name"))
    assert any(c.field == "metadata.name" for c in err.value.causes)

    with pytest.raises(Conflict):
        await kube.delete(CONFIGMAPS, namespace, "a", uid_precondition="00000000-0000-0000-0000-000000000000")
    await kube.delete(CONFIGMAPS, namespace, "a", uid_precondition=created["metadata"]["uid"])
    with pytest.raises(NotFound):
        await kube.delete(CONFIGMAPS, namespace, "a")


async def test_server_side_apply(kube: ApiClient, namespace: str) -> None:
    applied = await kube.patch(
        CONFIGMAPS,
        namespace,
        "ssa",
        configmap("ssa", owned="mine"),
        patch_type="apply",
        field_manager="first",
    )
    assert applied["data"] == {"owned": "mine"}
    managers = {m["manager"] for m in applied["metadata"].get("managedFields", [])}
    assert "first" in managers
    with pytest.raises(Conflict):
        await kube.patch(
            CONFIGMAPS,
            namespace,
            "ssa",
            configmap("ssa", owned="theirs"),
            patch_type="apply",
            field_manager="second",
        )
    forced = await kube.patch(
        CONFIGMAPS,
        namespace,
        "ssa",
        configmap("ssa", owned="theirs"),
        patch_type="apply",
        field_manager="second",
        force=True,
    )
    assert forced["data"] == {"owned": "theirs"}


async def test_status_subresource_does_not_bump_generation(
    kube: ApiClient, namespace: str, crds: list[str]
) -> None:
    body = {
        "apiVersion": ROLESETS.api_version,
        "kind": ROLESETS.kind,
        "metadata": {"name": "rs"},
        "spec": {"roles": []},
    }
    created = await kube.create(ROLESETS, namespace, body)
    assert created["metadata"]["generation"] == 1
    with_status = await kube.replace(
        ROLESETS, namespace, "rs", {**created, "status": {"observedGeneration": 1}}, subresource="status"
    )
    assert with_status["status"]["observedGeneration"] == 1
    assert with_status["metadata"]["generation"] == 1
    ignored = await kube.replace(
        ROLESETS, namespace, "rs", {**with_status, "status": {"observedGeneration": 99}}
    )
    assert ignored["status"]["observedGeneration"] == 1  # the main resource does not write status


async def test_list_all_paginates(kube: ApiClient, namespace: str) -> None:
    for i in range(5):
        await kube.create(CONFIGMAPS, namespace, configmap(f"p{i}"))
    first = await kube.list(CONFIGMAPS, namespace, limit=2, label_selector=MINE)
    assert len(first["items"]) == 2 and first["metadata"].get("continue")
    assert first["items"][0]["kind"] == "ConfigMap"
    items, rv = await kube.list_all(CONFIGMAPS, namespace, page_size=2, label_selector=MINE)
    assert sorted(i["metadata"]["name"] for i in items) == [f"p{i}" for i in range(5)]
    assert int(rv) > 0


async def test_watch_bookmark_advances_rv_without_events(kube: ApiClient, namespace: str) -> None:
    _, rv = await kube.list_all(CONFIGMAPS, namespace, label_selector=MINE)
    events: list[Obj] = []

    async def write_elsewhere() -> str:
        await asyncio.sleep(0.3)
        other = {"metadata": {"name": "not-mine"}, "data": {}}  # outside the watch's selector
        created = await kube.create(CONFIGMAPS, namespace, other)
        return str(created["metadata"]["resourceVersion"])

    writer = asyncio.create_task(write_elsewhere())
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(30):
        async for event in kube.watch(
            CONFIGMAPS, namespace, resource_version=rv, label_selector=MINE, timeout_seconds=5
        ):
            events.append(event)
    written_rv = await writer
    assert loop.time() - start >= 4  # ended by the server's timeout, normally
    # The watch cache sends a bookmark shortly before the timeout once its RV has moved on.
    assert [e["type"] for e in events] and {e["type"] for e in events} == {"BOOKMARK"}, events
    assert int(events[-1]["object"]["metadata"]["resourceVersion"]) >= int(written_rv)


async def test_watch_from_too_old_resource_version_is_gone(kube: ApiClient, namespace: str) -> None:
    try:
        async with asyncio.timeout(30):
            async for _ in kube.watch(CONFIGMAPS, namespace, resource_version="1", timeout_seconds=2):
                pass
    except Gone as err:
        assert err.code == 410
        assert "too old resource version" in err.message
    else:
        # A cluster young enough that its watch cache still reaches back to resourceVersion 1.
        pytest.skip("the API server can still serve a watch from resourceVersion 1")


async def test_informer_lists_watches_and_rewatches(kube: ApiClient, namespace: str) -> None:
    await kube.create(CONFIGMAPS, namespace, configmap("before", v="1"))
    informer = Informer(kube, CONFIGMAPS, namespace=namespace, label_selector=MINE, watch_timeout_seconds=2)
    events: list[tuple[str, str]] = []

    def name(obj: Obj | DeletedFinalStateUnknown) -> str:
        return obj.key if isinstance(obj, DeletedFinalStateUnknown) else str(obj["metadata"]["name"])

    informer.add_event_handler(
        FuncHandler(
            on_add=lambda o: events.append(("add", name(o))),
            on_update=lambda old, new: events.append(("update", name(new))),
            on_delete=lambda o: events.append(("delete", name(o))),
        )
    )
    writes_before = _writes()
    task = asyncio.create_task(informer.run())
    try:
        assert await informer.wait_for_sync(timeout=30)
        assert informer.store.get(f"{namespace}/before") is not None
        await kube.create(CONFIGMAPS, namespace, configmap("after"))
        await kube.patch(CONFIGMAPS, namespace, "before", {"data": {"v": "2"}})
        await kube.delete(CONFIGMAPS, namespace, "after")
        await until(lambda: ("delete", "after") in events)
        assert events[:4] == [("add", "before"), ("add", "after"), ("update", "before"), ("delete", "after")]
        cached = informer.store.get(f"{namespace}/before")
        assert cached is not None and cached["data"] == {"v": "2"}
        assert "managedFields" not in cached["metadata"]
        # The server ends each watch after ~2 s; the informer resumes without relisting.
        await until(lambda: informer.watches >= 3, within=20)
        assert informer.lists == 1
        await kube.create(CONFIGMAPS, namespace, configmap("late"))
        await until(lambda: informer.store.get(f"{namespace}/late") is not None)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # The informer itself never writes.
    assert _writes() - writes_before == 4.0  # our create, patch, delete, create above


def _writes() -> float:
    total = 0.0
    for family in metrics.REGISTRY.collect():
        if family.name == "stormservice_api_writes":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


async def test_a_create_in_a_namespace_being_deleted_is_recognised(kube: ApiClient, kubectl: Any) -> None:
    """The 403 the API server gives a create in a terminating namespace carries the
    NamespaceTerminating cause; controllers skip it quietly (errors.is_namespace_terminating)."""
    ns = f"t-terminating-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    held = {**configmap("held"), "metadata": {"name": "held", "finalizers": ["stormservice.test/hold"]}}
    await kube.create(CONFIGMAPS, ns, held)
    try:
        kubectl("delete", "namespace", ns, "--wait=false")
        with pytest.raises(Forbidden) as caught:
            for _ in range(300):  # until the namespace shows Terminating to admission
                await kube.create(CONFIGMAPS, ns, configmap(f"late-{uuid.uuid4().hex[:6]}"))
                await asyncio.sleep(0.05)
        assert is_namespace_terminating(caught.value), caught.value
        assert not is_namespace_terminating(Forbidden(403, "Forbidden", "RBAC: access denied"))
    finally:
        await kube.patch(CONFIGMAPS, ns, "held", {"metadata": {"finalizers": None}})
