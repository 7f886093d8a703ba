from __future__ import annotations

import copy
from typing import Any, cast

import pytest

from controller.runtime.client import KubeClient, Obj
from controller.runtime.controllerref import controller_ref
from controller.runtime.errors import AlreadyExists, Conflict, NotFound
from controller.runtime.resources import CONTROLLER_REVISIONS, Resource
from controller.runtime.revision import (
    HASH_LABEL,
    FakeRevisionHistory,
    KubeRevisionHistory,
    RevisionCollisionError,
    canonical_json,
    create_revision,
    equal_revision,
    find_equal_revisions,
    hash_revision_data,
    new_revision,
    next_revision_number,
    safe_encode,
    sort_revisions,
    update_revision_number,
)


def kube(client: object) -> KubeClient:
    """The stub clients here implement only what the code under test calls."""
    return cast(KubeClient, client)


OWNER: Obj = {"metadata": {"name": "ss", "namespace": "ns", "uid": "uid-ss"}}
OTHER_OWNER: Obj = {"metadata": {"name": "ss", "namespace": "ns", "uid": "uid-other"}}
API = "orchestration.aibrix.ai/v1alpha1"
TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"app": "x"}},
    "spec": {"roles": [{"name": "prefill", "replicas": 1}]},
}
DATA: dict[str, Any] = {"spec": {"template": TEMPLATE, "$patch": "replace"}}


# --- the hash: a compatibility promise ---------------------------------------------------------
# These values must never change: a changed hash renames every revision and rolls every instance
# on upgrade. If this test fails, the change is breaking, not the test.
GOLDEN = [
    ({}, None, "5859f96865"),
    ({}, 0, "848989cbcf"),
    ({}, 1, "846dbd44b4"),
    (DATA, None, "7bbbdbb5cb"),
    (DATA, 0, "54d7b88d5b"),
    (DATA, 7, "56454dd58f"),
    ({"b": 1, "a": [1.5, True, None, "ü"]}, None, "7574cbb59f"),
]


@pytest.mark.parametrize(("data", "collision_count", "expected"), GOLDEN)
def test_hash_is_pinned(data: dict[str, Any], collision_count: int | None, expected: str) -> None:
    assert hash_revision_data(data, collision_count) == expected


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": {"d": [], "c": "ü"}}) == '{"a":{"c":"ü","d":[]},"b":1}'.encode()
    assert canonical_json(DATA) == (
        b'{"spec":{"$patch":"replace","template":{"metadata":{"labels":{"app":"x"}},'
        b'"spec":{"roles":[{"name":"prefill","replicas":1}]}}}}'
    )


def test_hash_ignores_key_order_and_sees_values() -> None:
    reordered = {
        "spec": {
            "$patch": "replace",
            "template": {"spec": TEMPLATE["spec"], "metadata": TEMPLATE["metadata"]},
        }
    }
    assert hash_revision_data(reordered, 0) == hash_revision_data(DATA, 0)
    changed = copy.deepcopy(DATA)
    changed["spec"]["template"]["spec"]["roles"][0]["replicas"] = 2
    assert hash_revision_data(changed, 0) != hash_revision_data(DATA, 0)
    assert hash_revision_data({"x": 1}, None) != hash_revision_data({"x": 1.0}, None)


def test_safe_encode_matches_apimachinery() -> None:
    # rand.SafeEncodeString maps each byte through "bcdfghjklmnpqrstvwxz2456789".
    assert safe_encode("0123456789") == "456789bcdf"


# --- building, comparing, ordering ------------------------------------------------------------


def test_new_revision() -> None:
    rev = new_revision(OWNER, API, "StormService", "ss", DATA, 3, 0, {"name": "ss"})
    assert rev == {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": "ss-54d7b88d5b",
            "namespace": "ns",
            "labels": {"name": "ss", HASH_LABEL: "54d7b88d5b"},
            "ownerReferences": [
                {
                    "apiVersion": API,
                    "kind": "StormService",
                    "name": "ss",
                    "uid": "uid-ss",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": DATA,
        "revision": 3,
    }
    assert rev["data"] is not DATA
    long = new_revision(OWNER, API, "StormService", "x" * 300, DATA, 1, None)
    assert len(long["metadata"]["name"]) <= 253


def rev(name: str, number: int, data: Any = None, created: str = "2026-01-01T00:00:00Z") -> Obj:
    return {"metadata": {"name": name, "creationTimestamp": created}, "revision": number, "data": data}


def test_equal_and_find_equal_revisions() -> None:
    a = rev("a", 1, {"x": 1})
    assert equal_revision(a, rev("b", 9, {"x": 1}))
    assert not equal_revision(a, rev("c", 1, {"x": 2}))
    assert not equal_revision(a, rev("d", 1, {"x": True}))
    assert equal_revision(None, None)
    assert not equal_revision(a, None)
    revs = [a, rev("b", 2, {"x": 2}), rev("c", 3, {"x": 1})]
    assert [r["metadata"]["name"] for r in find_equal_revisions(revs, rev("n", 0, {"x": 1}))] == ["a", "c"]


def test_sort_and_next_number() -> None:
    revs = [
        rev("b", 2, created="2026-01-01T00:00:05Z"),
        rev("z", 1, created="2026-01-01T00:00:09Z"),
        rev("c", 2, created="2026-01-01T00:00:01Z"),
        rev("a", 2, created="2026-01-01T00:00:05Z"),
    ]
    assert [r["metadata"]["name"] for r in sort_revisions(revs)] == ["z", "c", "a", "b"]
    assert next_revision_number(revs) == 3
    assert next_revision_number([]) == 1


# --- create with collisions -------------------------------------------------------------------


class RevisionClient:
    """Just create/get/patch/delete of ControllerRevisions in memory."""

    def __init__(self) -> None:
        self.objects: dict[str, Obj] = {}
        self.calls: list[tuple[str, str]] = []
        self.vanish_on_get: set[str] = set()
        self.n = 0

    async def create(self, resource: Resource, namespace: str | None, body: Obj) -> Obj:
        assert resource == CONTROLLER_REVISIONS
        name = body["metadata"]["name"]
        self.calls.append(("create", name))
        if name in self.objects:
            raise AlreadyExists(409, "AlreadyExists")
        self.n += 1
        stored = copy.deepcopy(body)
        stored["metadata"].update(namespace=namespace, uid=f"uid-{self.n}")
        self.objects[name] = stored
        return copy.deepcopy(stored)

    async def get(self, resource: Resource, namespace: str | None, name: str) -> Obj:
        self.calls.append(("get", name))
        if name in self.vanish_on_get:
            self.vanish_on_get.discard(name)
            del self.objects[name]
        if name not in self.objects:
            raise NotFound(404, "NotFound")
        return copy.deepcopy(self.objects[name])

    async def patch(self, resource: Resource, namespace: str | None, name: str, patch: Any, **kw: Any) -> Obj:
        self.calls.append(("patch", name))
        stored = self.objects[name]
        if patch["metadata"]["uid"] != stored["metadata"]["uid"]:
            raise Conflict(409)
        stored["revision"] = patch["revision"]
        return copy.deepcopy(stored)

    async def delete(self, resource: Resource, namespace: str | None, name: str, **kw: Any) -> None:
        self.calls.append(("delete", name))
        stored = self.objects.get(name)
        if stored is None:
            raise NotFound(404)
        assert kw["uid_precondition"] == stored["metadata"]["uid"]
        del self.objects[name]


async def test_create_revision_plain() -> None:
    client = RevisionClient()
    want = new_revision(OWNER, API, "StormService", "ss", DATA, 1, 0)
    created, cc = await create_revision(kube(client), "ns", want, 0)
    assert cc == 0
    assert created["metadata"]["name"] == "ss-54d7b88d5b"
    assert client.calls == [("create", "ss-54d7b88d5b")]


async def test_create_revision_returns_our_equal_existing_revision() -> None:
    client = RevisionClient()
    want = new_revision(OWNER, API, "StormService", "ss", DATA, 1, 0)
    first, _ = await create_revision(kube(client), "ns", want, 0)
    again, cc = await create_revision(kube(client), "ns", want, 0)
    assert cc == 0
    assert again["metadata"]["uid"] == first["metadata"]["uid"]


@pytest.mark.parametrize("squatter", ["different data", "same data, other owner"])
async def test_create_revision_counts_collisions(squatter: str) -> None:
    client = RevisionClient()
    want = new_revision(OWNER, API, "StormService", "ss", DATA, 1, 0)
    other = copy.deepcopy(want)
    if squatter == "different data":
        other["data"] = {"spec": {"other": True}}
    else:
        other["metadata"]["ownerReferences"] = [{**controller_ref(want), "uid": "uid-other"}]  # type: ignore[dict-item]
    client.objects[want["metadata"]["name"]] = {
        **other,
        "metadata": {**other["metadata"], "uid": "uid-squat"},
    }

    created, cc = await create_revision(kube(client), "ns", want, 0)
    assert cc == 1
    assert created["metadata"]["name"] == "ss-" + hash_revision_data(DATA, 1)
    assert created["metadata"]["labels"][HASH_LABEL] == hash_revision_data(DATA, 1)
    assert created["data"] == DATA


async def test_create_revision_retries_the_same_name_when_the_clash_vanishes() -> None:
    client = RevisionClient()
    want = new_revision(OWNER, API, "StormService", "ss", DATA, 1, 0)
    name = want["metadata"]["name"]
    client.objects[name] = {"metadata": {"name": name, "uid": "gone"}, "data": {}}
    client.vanish_on_get.add(name)
    created, cc = await create_revision(kube(client), "ns", want, 0)
    assert (created["metadata"]["name"], cc) == (name, 0)


async def test_create_revision_gives_up_eventually() -> None:
    class AlwaysTaken(RevisionClient):
        async def create(self, resource: Resource, namespace: str | None, body: Obj) -> Obj:
            self.objects[body["metadata"]["name"]] = {"metadata": {"uid": "x"}, "data": {"other": 1}}
            return await super().create(resource, namespace, body)

    with pytest.raises(RevisionCollisionError):
        await create_revision(
            kube(AlwaysTaken()), "ns", new_revision(OWNER, API, "StormService", "ss", DATA, 1, 0), 0
        )


async def test_create_revision_rejects_hand_made_names() -> None:
    want = new_revision(OWNER, API, "StormService", "ss", DATA, 1, 0)
    want["metadata"]["name"] = "handmade"
    with pytest.raises(ValueError):
        await create_revision(kube(RevisionClient()), "ns", want, 0)


async def test_update_revision_number() -> None:
    client = RevisionClient()
    created, _ = await create_revision(
        kube(client), "ns", new_revision(OWNER, API, "StormService", "ss", DATA, 1, 0), 0
    )
    client.calls.clear()
    same = await update_revision_number(kube(client), created, 1)
    assert same == created and client.calls == []
    updated = await update_revision_number(kube(client), created, 5)
    assert updated["revision"] == 5
    assert client.calls == [("patch", created["metadata"]["name"])]


# --- RevisionHistory implementations ------------------------------------------------------------


async def test_kube_revision_history() -> None:
    client = RevisionClient()
    cache: list[Obj] = []
    history = KubeRevisionHistory(
        kube(client), lambda ns: [r for r in cache if r["metadata"]["namespace"] == ns]
    )
    created, _ = await history.create_revision(new_revision(OWNER, API, "StormService", "ss", DATA, 1, 0), 0)
    orphan = {"metadata": {"name": "orphan", "namespace": "ns", "labels": {"name": "ss"}}, "data": {}}
    theirs = new_revision(OTHER_OWNER, API, "StormService", "ss", {"x": 1}, 1, 0)
    elsewhere = {"metadata": {"name": "else", "namespace": "other"}, "data": {}}
    cache.extend([created, orphan, theirs, elsewhere])
    assert [r["metadata"]["name"] for r in history.list_revisions(OWNER)] == [
        created["metadata"]["name"],
        "orphan",
    ]
    only_labelled = history.list_revisions(
        OWNER, lambda r: r["metadata"].get("labels", {}).get("name") == "ss"
    )
    assert [r["metadata"]["name"] for r in only_labelled] == ["orphan"]
    assert (await history.update_revision(created, 2))["revision"] == 2
    await history.delete_revision(created)
    await history.delete_revision(created)  # already gone: fine
    assert client.objects == {}


async def test_fake_revision_history() -> None:
    history = FakeRevisionHistory()
    want = new_revision(OWNER, API, "StormService", "ss", DATA, 1, 0)
    created, cc = await history.create_revision(want, 0)
    assert cc == 0 and created["metadata"]["uid"]
    again, cc = await history.create_revision(want, 0)
    assert cc == 0 and again["metadata"]["uid"] == created["metadata"]["uid"]
    squatted = new_revision(OTHER_OWNER, API, "StormService", "ss", DATA, 1, 0)
    _, cc = await history.create_revision(squatted, 0)
    assert cc == 1
    assert [r["metadata"]["name"] for r in history.list_revisions(OWNER)] == [created["metadata"]["name"]]

    history.inject_error("update", Conflict(409))
    with pytest.raises(Conflict):
        await history.update_revision(created, 4)
    assert (await history.update_revision(created, 4))["revision"] == 4
    await history.delete_revision(created)
    assert history.list_revisions(OWNER) == []
    assert [a[0] for a in history.actions] == [
        "create",
        "create",
        "create",
        "create",
        "update",
        "update",
        "delete",
    ]
