from __future__ import annotations

import asyncio
from typing import Any

import pytest

from controller.runtime.client import KubeClient, Obj
from controller.runtime.errors import (
    AlreadyExists,
    ApiError,
    BadRequest,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    ServerError,
)
from controller.runtime.fake import FakeClient, json_patch, merge_patch, parse_label_selector
from controller.runtime.resources import CONTROLLER_REVISIONS, NODES, PODS, SERVICES, STORMSERVICES


def ss(name: str = "s", **spec: Any) -> Obj:
    return {
        "apiVersion": "orchestration.aibrix.ai/v1alpha1",
        "kind": "StormService",
        "metadata": {"name": name},
        "spec": spec,
    }


async def until(condition: Any, within: float = 1.0) -> None:
    for _ in range(int(within / 0.001)):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not met in time")


async def next_event(stream: Any, within: float = 1.0) -> Obj:
    event: Obj = await asyncio.wait_for(anext(stream), within)
    return event


def test_implements_protocol() -> None:
    client: KubeClient = FakeClient()
    assert client is not None


async def test_create_assigns_metadata() -> None:
    fake = FakeClient()
    obj = await fake.create(STORMSERVICES, "ns", ss(replicas=1, x="y") | {"status": {"ready": 3}})
    meta = obj["metadata"]
    assert meta["namespace"] == "ns"
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1
    assert meta["resourceVersion"] == "1"
    assert "status" not in obj  # status subresource: ignored on create
    assert fake.actions == [("create", "stormservices", "ns", "s")]
    with pytest.raises(AlreadyExists) as err:
        await fake.create(STORMSERVICES, "ns", ss())
    assert err.value.code == 409


async def test_generate_name_and_validation() -> None:
    fake = FakeClient()
    obj = await fake.create(PODS, "ns", {"metadata": {"generateName": "web-"}})
    assert obj["metadata"]["name"].startswith("web-") and len(obj["metadata"]["name"]) == 9
    assert obj["status"] == {"phase": "Pending"}
    with pytest.raises(Invalid) as err:
        await fake.create(PODS, "ns", {"metadata": {}})
    assert err.value.causes[0].field == "metadata.name"
    with pytest.raises(BadRequest):
        await fake.create(PODS, "ns", {"metadata": {"name": "x", "namespace": "other"}})


async def test_generation_and_status_subresource() -> None:
    fake = FakeClient()
    obj = await fake.create(STORMSERVICES, "ns", ss(replicas=1))
    obj["metadata"]["labels"] = {"a": "b"}
    obj = await fake.replace(STORMSERVICES, "ns", "s", obj)
    assert obj["metadata"]["generation"] == 1  # metadata only
    obj["spec"]["replicas"] = 2
    obj["status"] = {"ignored": True}
    obj = await fake.replace(STORMSERVICES, "ns", "s", obj)
    assert obj["metadata"]["generation"] == 2
    assert "status" not in obj  # the main resource does not write status
    obj["status"] = {"observedGeneration": 2}
    obj["spec"]["replicas"] = 99  # ignored by a status write
    obj = await fake.replace(STORMSERVICES, "ns", "s", obj, subresource="status")
    assert obj["status"] == {"observedGeneration": 2}
    assert obj["spec"]["replicas"] == 2
    assert obj["metadata"]["generation"] == 2
    assert fake.writes()[-1] == ("update", "stormservices/status", "ns", "s")


async def test_resource_without_status_subresource_keeps_status() -> None:
    fake = FakeClient()
    obj = await fake.create(
        CONTROLLER_REVISIONS, "ns", {"metadata": {"name": "r"}, "data": {}, "revision": 1}
    )
    assert obj["revision"] == 1


async def test_stale_resource_version_conflicts_and_noop_does_not_bump() -> None:
    fake = FakeClient()
    first = await fake.create(STORMSERVICES, "ns", ss(replicas=1))
    second = await fake.patch(STORMSERVICES, "ns", "s", {"spec": {"replicas": 2}})
    first["spec"]["replicas"] = 3
    with pytest.raises(Conflict) as err:
        await fake.replace(STORMSERVICES, "ns", "s", first)
    assert "the object has been modified" in err.value.message
    same = await fake.replace(STORMSERVICES, "ns", "s", second)
    assert same["metadata"]["resourceVersion"] == second["metadata"]["resourceVersion"]
    with pytest.raises(Conflict):
        await fake.patch(
            STORMSERVICES, "ns", "s", {"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 5}}
        )
    with pytest.raises(NotFound):
        await fake.replace(STORMSERVICES, "ns", "missing", ss("missing"))


async def test_merge_and_json_patch() -> None:
    fake = FakeClient()
    await fake.create(
        PODS, "ns", {"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}}, "spec": {"c": [1, 2]}}
    )
    obj = await fake.patch(PODS, "ns", "p", {"metadata": {"labels": {"a": None, "z": "9"}}})
    assert obj["metadata"]["labels"] == {"b": "2", "z": "9"}
    obj = await fake.patch(
        PODS,
        "ns",
        "p",
        [
            {"op": "test", "path": "/metadata/labels/b", "value": "2"},
            {"op": "add", "path": "/spec/c/-", "value": 3},
            {"op": "replace", "path": "/spec/c/0", "value": 0},
            {"op": "add", "path": "/metadata/annotations", "value": {"x~y/z": "1"}},
            {"op": "remove", "path": "/metadata/annotations/x~0y~1z"},
        ],
        patch_type="json",
    )
    assert obj["spec"]["c"] == [0, 2, 3]
    assert obj["metadata"]["annotations"] == {}
    with pytest.raises(Invalid):
        await fake.patch(
            PODS, "ns", "p", [{"op": "test", "path": "/spec/c/0", "value": 7}], patch_type="json"
        )
    assert (await fake.get(PODS, "ns", "p"))["spec"]["c"] == [0, 2, 3]  # a failed patch changes nothing


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": 1}, {"a": None}, {}),
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}, {"a": {"c": 2, "d": 3}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": 1}, {"a": {"b": 1}}, {"a": {"b": 1}}),
    ],
)
def test_merge_patch_rfc7386(target: Obj, patch: Obj, expected: Obj) -> None:
    assert merge_patch(target, patch) == expected


def test_json_patch_move_copy() -> None:
    doc = {"a": {"b": 1}, "c": []}
    out = json_patch(
        doc, [{"op": "copy", "from": "/a/b", "path": "/c/0"}, {"op": "move", "from": "/a", "path": "/d"}]
    )
    assert out == {"c": [1], "d": {"b": 1}}
    assert doc == {"a": {"b": 1}, "c": []}


async def test_strategic_patch_merges_named_lists_and_is_refused_for_crds() -> None:
    fake = FakeClient()
    await fake.create(
        PODS,
        "ns",
        {
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]},
        },
    )
    obj = await fake.patch(
        PODS,
        "ns",
        "p",
        {"spec": {"containers": [{"name": "b", "image": "2"}, {"name": "a", "$patch": "delete"}]}},
        patch_type="strategic",
    )
    assert obj["spec"]["containers"] == [{"name": "b", "image": "2"}]
    await fake.create(STORMSERVICES, "ns", ss())
    with pytest.raises(ApiError) as err:
        await fake.patch(STORMSERVICES, "ns", "s", {"spec": {}}, patch_type="strategic")
    assert err.value.code == 415


async def test_apply_creates_then_merges() -> None:
    fake = FakeClient()
    obj = await fake.patch(
        STORMSERVICES, "ns", "s", ss(replicas=1), patch_type="apply", field_manager="me", force=True
    )
    assert obj["metadata"]["generation"] == 1
    obj = await fake.patch(STORMSERVICES, "ns", "s", ss(replicas=2), patch_type="apply", field_manager="me")
    assert obj["spec"]["replicas"] == 2
    assert fake.writes() == [("patch", "stormservices", "ns", "s")] * 2
    assert fake.requests[0].options == {"patch_type": "apply", "field_manager": "me", "force": True}


async def test_status_patch() -> None:
    fake = FakeClient()
    await fake.create(STORMSERVICES, "ns", ss(replicas=1))
    obj = await fake.patch(
        STORMSERVICES, "ns", "s", {"status": {"replicas": 1}, "spec": {"replicas": 7}}, subresource="status"
    )
    assert obj["status"] == {"replicas": 1}
    assert obj["spec"]["replicas"] == 1
    assert obj["metadata"]["generation"] == 1


async def test_delete_preconditions_and_finalizers() -> None:
    fake = FakeClient()
    obj = await fake.create(PODS, "ns", {"metadata": {"name": "p", "finalizers": ["x/y"]}})
    with pytest.raises(Conflict) as err:
        await fake.delete(PODS, "ns", "p", uid_precondition="wrong-uid")
    assert "Precondition failed" in err.value.message
    with pytest.raises(Conflict):
        await fake.delete(PODS, "ns", "p", resource_version_precondition="999")
    await fake.delete(PODS, "ns", "p", uid_precondition=obj["metadata"]["uid"])
    terminating = await fake.get(PODS, "ns", "p")
    assert terminating["metadata"]["deletionTimestamp"]
    await fake.delete(PODS, "ns", "p")  # already terminating: no-op
    await fake.patch(PODS, "ns", "p", {"metadata": {"finalizers": None}})
    with pytest.raises(NotFound):
        await fake.get(PODS, "ns", "p")
    with pytest.raises(NotFound):
        await fake.delete(PODS, "ns", "p")


async def test_a_deleted_pod_is_reported_with_a_deletion_timestamp() -> None:
    """Pods delete gracefully: the API server stamps deletionTimestamp even on an immediate
    (grace period 0) deletion, so the DELETED event carries it."""
    fake = FakeClient()
    await fake.create(PODS, "ns", {"metadata": {"name": "p"}})
    await fake.create(SERVICES, "ns", {"metadata": {"name": "c"}})
    pods = fake.watch(PODS, "ns", resource_version=fake.resource_version)
    services = fake.watch(SERVICES, "ns", resource_version=fake.resource_version)
    await fake.delete(PODS, "ns", "p", grace_period_seconds=0)
    await fake.delete(SERVICES, "ns", "c")
    pod_event, cm_event = await next_event(pods), await next_event(services)
    assert pod_event["type"] == cm_event["type"] == "DELETED"
    assert pod_event["object"]["metadata"]["deletionTimestamp"]
    assert "deletionTimestamp" not in cm_event["object"]["metadata"]


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("", {}, True),
        ("a=1", {"a": "1"}, True),
        ("a==1", {"a": "2"}, False),
        ("a!=1", {}, True),
        ("a!=1", {"a": "1"}, False),
        ("a in (1, 2)", {"a": "2"}, True),
        ("a in (1,2)", {}, False),
        ("a notin (1,2)", {}, True),
        ("a notin (1,2)", {"a": "1"}, False),
        ("a", {"a": ""}, True),
        ("!a", {"a": "x"}, False),
        ("!a", {"b": "x"}, True),
        ("a=1,b in (x,y),!c", {"a": "1", "b": "y"}, True),
        ("a=1,b in (x,y),!c", {"a": "1", "b": "y", "c": "1"}, False),
        ("app.kubernetes.io/name=web", {"app.kubernetes.io/name": "web"}, True),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(selector)(labels) is expected


async def test_list_filters_and_paginates() -> None:
    fake = FakeClient()
    for i in range(5):
        await fake.create(PODS, "ns", {"metadata": {"name": f"p{i}", "labels": {"i": str(i % 2)}}})
    await fake.create(PODS, "other", {"metadata": {"name": "q", "labels": {"i": "0"}}})
    page = await fake.list(PODS, "ns", label_selector="i=0")
    assert [o["metadata"]["name"] for o in page["items"]] == ["p0", "p2", "p4"]
    assert len((await fake.list(PODS, label_selector="i=0"))["items"]) == 4
    assert [
        o["metadata"]["name"] for o in (await fake.list(PODS, field_selector="metadata.name=q"))["items"]
    ] == ["q"]
    first = await fake.list(PODS, "ns", limit=2)
    assert len(first["items"]) == 2 and first["metadata"]["continue"]
    items, rv = await fake.list_all(PODS, "ns", page_size=2)
    assert [o["metadata"]["name"] for o in items] == [f"p{i}" for i in range(5)]
    assert rv == fake.resource_version
    with pytest.raises(BadRequest):
        await fake.list(PODS, label_selector="a in (")


async def test_list_all_falls_back_when_continue_expires() -> None:
    fake = FakeClient()
    for i in range(3):
        await fake.create(PODS, "ns", {"metadata": {"name": f"p{i}"}})
    page = await fake.list(PODS, "ns", limit=1)
    fake.expire_watches(PODS)
    # Compaction up to the token's own resourceVersion leaves it valid...
    assert (await fake.list(PODS, "ns", limit=1, continue_token=page["metadata"]["continue"]))["items"]
    # ...a write and a compaction past it expire it.
    await fake.create(PODS, "ns", {"metadata": {"name": "p3"}})
    fake.expire_watches(PODS)
    with pytest.raises(Gone):
        await fake.list(PODS, "ns", limit=1, continue_token=page["metadata"]["continue"])
    # list_all handles it (a full list instead), like client-go's pager.
    real_list = fake.list
    calls = 0

    async def expiring_list(*args: Any, **kwargs: Any) -> Obj:
        nonlocal calls
        calls += 1
        if calls == 2:
            await fake.create(PODS, "ns", {"metadata": {"name": "p4"}})
            fake.expire_watches(PODS)
        return await real_list(*args, **kwargs)

    fake.list = expiring_list  # type: ignore[method-assign]
    items, _ = await fake.list_all(PODS, "ns", page_size=1)
    assert [o["metadata"]["name"] for o in items] == ["p0", "p1", "p2", "p3", "p4"]
    assert calls == 3  # first page, expired second page, one full list


async def test_watch_replays_from_resource_version_and_streams() -> None:
    fake = FakeClient()
    await fake.create(PODS, "ns", {"metadata": {"name": "a"}})
    rv = fake.resource_version
    await fake.create(PODS, "ns", {"metadata": {"name": "b"}})
    stream = fake.watch(PODS, "ns", resource_version=rv)
    event = await next_event(stream)
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "b")
    await fake.patch(PODS, "ns", "a", {"metadata": {"labels": {"x": "1"}}})
    event = await next_event(stream)
    assert (event["type"], event["object"]["metadata"]["labels"]) == ("MODIFIED", {"x": "1"})
    await fake.delete(PODS, "ns", "b")
    event = await next_event(stream)
    assert event["type"] == "DELETED"
    assert int(event["object"]["metadata"]["resourceVersion"]) == int(fake.resource_version)
    fake.bookmark(PODS)
    event = await next_event(stream)
    assert (
        event["type"] == "BOOKMARK"
        and event["object"]["metadata"]["resourceVersion"] == fake.resource_version
    )
    fake.end_watches(PODS)
    with pytest.raises(StopAsyncIteration):
        await next_event(stream)
    assert fake.watch_count(PODS) == 0


async def test_watch_without_resource_version_lists_first() -> None:
    fake = FakeClient()
    await fake.create(PODS, "ns", {"metadata": {"name": "a"}})
    stream = fake.watch(PODS, "ns")
    assert (await next_event(stream))["type"] == "ADDED"
    await stream.aclose()  # type: ignore[attr-defined]


async def test_watch_label_selector_enter_and_leave() -> None:
    fake = FakeClient()
    await fake.create(PODS, "ns", {"metadata": {"name": "a"}})
    stream = fake.watch(PODS, "ns", resource_version=fake.resource_version, label_selector="role=x")
    await fake.patch(PODS, "ns", "a", {"metadata": {"labels": {"role": "x"}}})
    assert (await next_event(stream))["type"] == "ADDED"
    relabelled = await fake.patch(PODS, "ns", "a", {"metadata": {"labels": {"role": "y"}}})
    left = await next_event(stream)
    # As the API server's watch cache: the last matching content, at the event's resourceVersion.
    assert left["type"] == "DELETED"
    assert left["object"]["metadata"]["labels"] == {"role": "x"}
    assert left["object"]["metadata"]["resourceVersion"] == relabelled["metadata"]["resourceVersion"]
    assert "deletionTimestamp" not in left["object"]["metadata"]
    await fake.create(PODS, "ns", {"metadata": {"name": "other"}})
    fake.end_watches(PODS)
    with pytest.raises(StopAsyncIteration):
        await next_event(stream)


async def test_watch_without_bookmarks_gets_none() -> None:
    fake = FakeClient()
    stream = fake.watch(PODS, resource_version="0", allow_bookmarks=False)
    task = asyncio.create_task(next_event(stream))
    await until(lambda: fake.watch_count(PODS) == 1)
    fake.bookmark(PODS)
    await fake.create(PODS, "ns", {"metadata": {"name": "a"}})
    assert (await task)["type"] == "ADDED"


async def test_expire_watches() -> None:
    fake = FakeClient()
    await fake.create(PODS, "ns", {"metadata": {"name": "a"}})
    await fake.create(PODS, "ns", {"metadata": {"name": "c"}})
    old_rv = fake.resource_version
    stream = fake.watch(PODS, resource_version=old_rv)
    task = asyncio.create_task(next_event(stream))
    await until(lambda: fake.watch_count(PODS) == 1)
    fake.expire_watches(PODS)
    with pytest.raises(Gone):
        await task
    await fake.create(PODS, "ns", {"metadata": {"name": "b"}})
    with pytest.raises(Gone):
        await next_event(fake.watch(PODS, resource_version="1"))
    # From the current resourceVersion a watch works again.
    fresh = fake.watch(PODS, resource_version=fake.resource_version)
    task = asyncio.create_task(next_event(fresh))
    await until(lambda: fake.watch_count(PODS) == 1)
    await fake.delete(PODS, "ns", "a")
    assert (await task)["type"] == "DELETED"


async def test_watch_timeout_ends_stream() -> None:
    fake = FakeClient()
    stream = fake.watch(PODS, resource_version="0", timeout_seconds=1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(StopAsyncIteration):
        await next_event(stream, within=3)
    assert loop.time() - start >= 0.9


async def test_inject_error_and_actions() -> None:
    fake = FakeClient()
    fake.inject_error("create", PODS, ServerError(code=500, reason="InternalError"), times=2)
    for _ in range(2):
        with pytest.raises(ServerError):
            await fake.create(PODS, "ns", {"metadata": {"name": "a"}})
    await fake.create(PODS, "ns", {"metadata": {"name": "a"}})
    fake.inject_error("*", "pods/status", Conflict(code=409, reason="Conflict"))
    with pytest.raises(Conflict):
        await fake.replace(PODS, "ns", "a", {"metadata": {"name": "a"}, "status": {}}, subresource="status")
    await fake.get(PODS, "ns", "a")
    assert fake.actions == [
        ("create", "pods", "ns", "a"),
        ("create", "pods", "ns", "a"),
        ("create", "pods", "ns", "a"),
        ("update", "pods/status", "ns", "a"),
        ("get", "pods", "ns", "a"),
    ]
    assert len(fake.writes()) == 4
    fake.clear_actions()
    assert fake.actions == []


async def test_seed_and_set_status_record_nothing() -> None:
    fake = FakeClient()
    seeded = fake.seed(PODS, {"metadata": {"name": "p", "namespace": "ns"}, "status": {"phase": "Running"}})
    assert seeded["status"]["phase"] == "Running" and seeded["metadata"]["uid"]
    fake.set_status(PODS, "ns", "p", {"phase": "Succeeded"})
    assert fake.get_object(PODS, "ns", "p")["status"] == {"phase": "Succeeded"}  # type: ignore[index]
    fake.seed(NODES, {"metadata": {"name": "n1"}})
    assert [o["metadata"]["name"] for o in fake.objects(NODES)] == ["n1"]
    assert fake.actions == []


async def test_returned_objects_are_copies() -> None:
    fake = FakeClient()
    obj = await fake.create(PODS, "ns", {"metadata": {"name": "a", "labels": {"x": "1"}}})
    obj["metadata"]["labels"]["x"] = "mutated"
    assert (await fake.get(PODS, "ns", "a"))["metadata"]["labels"] == {"x": "1"}


def owner(name: str, uid: str, controller: bool | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": uid}
    if controller is not None:
        ref["controller"] = controller
    return ref


# Each step's expected list is what kube-apiserver 1.34 answered to the same sequence of
# strategic merge patches of a ConfigMap's ownerReferences (recorded on the local cluster).
OWNER_REFERENCE_STEPS: list[tuple[str, list[Any], list[tuple[str, str, bool | None]]]] = [
    ("delete on an absent list", [{"$patch": "delete", "uid": "b"}], []),
    (
        "delete and add on an absent list",
        [{"$patch": "delete", "uid": "b"}, owner("c", "c")],
        [("c", "c", None)],
    ),
    (
        "new items come first",
        [owner("b", "b"), owner("d", "d")],
        [("b", "b", None), ("d", "d", None), ("c", "c", None)],
    ),
    (
        "an existing item keeps its place among the server's",
        [owner("e", "e"), {"uid": "c", "controller": True}],
        [("e", "e", None), ("b", "b", None), ("d", "d", None), ("c", "c", True)],
    ),
    (
        "patch items keep the patch's order",
        [{"uid": "c", "controller": False}, owner("b", "b")],
        [("e", "e", None), ("d", "d", None), ("c", "c", False), ("b", "b", None)],
    ),
    (
        "same name, other uid: another reference",
        [owner("e", "e2")],
        [("e", "e2", None), ("e", "e", None), ("d", "d", None), ("c", "c", False), ("b", "b", None)],
    ),
    (
        "delete by uid only",
        [{"$patch": "delete", "uid": "e"}, {"$patch": "delete", "uid": "missing"}],
        [("e", "e2", None), ("d", "d", None), ("c", "c", False), ("b", "b", None)],
    ),
    (
        "duplicates in the patch merge",
        [owner("d", "d"), owner("d", "d")],
        [("e", "e2", None), ("d", "d", None), ("c", "c", False), ("b", "b", None)],
    ),
    (
        "an empty list changes nothing",
        [],
        [("e", "e2", None), ("d", "d", None), ("c", "c", False), ("b", "b", None)],
    ),
    ("replace", [{"$patch": "replace"}, owner("b", "b")], [("b", "b", None)]),
    ("replace with nothing", [{"$patch": "replace"}], []),
]


async def test_strategic_patch_merges_owner_references_by_uid_as_the_server_does() -> None:
    fake = FakeClient()
    await fake.create(PODS, "ns", {"metadata": {"name": "p"}})
    for step, refs, want in OWNER_REFERENCE_STEPS:
        got = await fake.patch(
            PODS, "ns", "p", {"metadata": {"ownerReferences": refs}}, patch_type="strategic"
        )
        seen = [
            (r["name"], r["uid"], r.get("controller")) for r in got["metadata"].get("ownerReferences", [])
        ]
        assert seen == want, step
        if not want:
            assert "ownerReferences" not in got["metadata"], step


async def test_strategic_owner_reference_without_uid_is_invalid() -> None:
    fake = FakeClient()
    await fake.create(PODS, "ns", {"metadata": {"name": "p", "ownerReferences": [owner("a", "a")]}})
    for refs in ([{"name": "x"}], [{"$patch": "delete", "name": "a"}]):
        with pytest.raises(Invalid):
            await fake.patch(PODS, "ns", "p", {"metadata": {"ownerReferences": refs}}, patch_type="strategic")


@pytest.mark.parametrize(
    ("patch_type", "patch"),
    [
        ("merge", {"metadata": {"uid": "stale", "labels": {"x": "1"}}}),
        ("strategic", {"metadata": {"uid": "stale", "labels": {"x": "1"}}}),
        ("json", [{"op": "replace", "path": "/metadata/uid", "value": "stale"}]),
        ("json", [{"op": "test", "path": "/metadata/uid", "value": "stale"}]),
    ],
)
async def test_patch_with_another_uid_is_invalid_as_on_the_server(patch_type: str, patch: Any) -> None:
    """kube-apiserver answers 422 Invalid (metadata.uid is immutable; a failed JSON patch test is
    422 too) to a patch; only a PUT or a DELETE with another uid is a 409 precondition failure."""
    fake = FakeClient()
    created = await fake.create(PODS, "ns", {"metadata": {"name": "p"}})
    with pytest.raises(Invalid) as err:
        await fake.patch(PODS, "ns", "p", patch, patch_type=patch_type)  # type: ignore[arg-type]
    assert err.value.code == 422
    if patch_type != "json" or patch[0]["op"] != "test":
        assert [c.field for c in err.value.causes] == ["metadata.uid"]
    stored = fake.get_object(PODS, "ns", "p")
    assert (
        stored is not None and stored["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    )
    with pytest.raises(Conflict):
        await fake.replace(PODS, "ns", "p", {**created, "metadata": {**created["metadata"], "uid": "stale"}})
    same = await fake.patch(
        PODS, "ns", "p", {"metadata": {"uid": created["metadata"]["uid"], "labels": {"y": "1"}}}
    )
    assert same["metadata"]["labels"] == {"y": "1"}


def test_json_patch_test_of_null_matches_an_absent_member_as_on_the_server() -> None:
    doc = {"metadata": {"name": "a"}}
    test_null = [{"op": "test", "path": "/metadata/ownerReferences", "value": None}]
    assert json_patch(doc, test_null) == doc
    for other in (
        {"metadata": {"name": "a", "ownerReferences": []}},
        {"metadata": {"name": "a", "ownerReferences": [{"uid": "u"}]}},
    ):
        with pytest.raises(ValueError):
            json_patch(other, test_null)
    with pytest.raises(ValueError):  # a missing parent is still an error
        json_patch(doc, [{"op": "test", "path": "/metadata/nothere/deeper", "value": None}])
