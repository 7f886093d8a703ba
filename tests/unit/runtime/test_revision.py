from __future__ import annotations

import copy
from typing import Any

import pytest

from controller.runtime.client import Obj
from controller.runtime.controllerref import controller_ref
from controller.runtime.errors import Conflict, Invalid
from controller.runtime.fake import FakeClient
from controller.runtime.rand import safe_encode
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
    sort_revisions,
    update_revision_number,
)

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


class VanishingClient(FakeClient):
    """The first get of a name finds it deleted (as if deleted right after our create failed)."""

    def __init__(self) -> None:
        super().__init__()
        self.vanish: set[str] = set()

    async def get(self, resource: Resource, namespace: str | None, name: str) -> Obj:
        if name in self.vanish:
            self.vanish.discard(name)
            await self.delete(resource, namespace, name)
        return await super().get(resource, namespace, name)


class AlwaysTaken(FakeClient):
    """Someone else always takes the name a moment before we create it."""

    async def create(
        self, resource: Resource, namespace: str | None, body: Obj, *, dry_run: bool = False
    ) -> Obj:
        meta = body["metadata"]
        self.seed(
            resource, {"metadata": {"name": meta["name"], "namespace": namespace}, "data": {"other": 1}}
        )
        return await super().create(resource, namespace, body, dry_run=dry_run)


def squat(client: FakeClient, rev: Obj, *, data: Any = None, owner_uid: str | None = None) -> None:
    body = copy.deepcopy(rev)
    if data is not None:
        body["data"] = data
    if owner_uid is not None:
        body["metadata"]["ownerReferences"][0]["uid"] = owner_uid
    client.seed(CONTROLLER_REVISIONS, body)


async def test_create_revision_plain() -> None:
    client = FakeClient()
    want = new_revision(OWNER, API, "StormService", "ss", DATA, 1, 0)
    created, cc = await create_revision(client, "ns", want, 0)
    assert cc == 0
    assert created["metadata"]["name"] == "ss-54d7b88d5b"
    assert client.actions == [("create", "controllerrevisions", "ns", "ss-54d7b88d5b")]
    stored = client.get_object(CONTROLLER_REVISIONS, "ns", "ss-54d7b88d5b")
    assert stored is not None and stored["data"] == DATA and stored["revision"] == 1


async def test_create_revision_returns_our_equal_existing_revision() -> None:
    client = FakeClient()
    want = new_revision(OWNER, API, "StormService", "ss", DATA, 1, 0)
    first, _ = await create_revision(client, "ns", want, 0)
    again, cc = await create_revision(client, "ns", want, 0)
    assert cc == 0
    assert again["metadata"]["uid"] == first["metadata"]["uid"]
    assert len(client.objects(CONTROLLER_REVISIONS)) == 1


@pytest.mark.parametrize("squatter", ["different data", "same data, other owner"])
async def test_create_revision_counts_collisions(squatter: str) -> None:
    client = FakeClient()
    want = new_revision(OWNER, API, "StormService", "ss", DATA, 1, 0)
    if squatter == "different data":
        squat(client, want, data={"spec": {"other": True}})
    else:
        squat(client, want, owner_uid="uid-other")

    created, cc = await create_revision(client, "ns", want, 0)
    assert cc == 1
    assert created["metadata"]["name"] == "ss-" + hash_revision_data(DATA, 1)
    assert created["metadata"]["labels"][HASH_LABEL] == hash_revision_data(DATA, 1)
    assert created["data"] == DATA
    assert controller_ref(created) == controller_ref(want)


async def test_create_revision_retries_the_same_name_when_the_clash_vanishes() -> None:
    client = VanishingClient()
    want = new_revision(OWNER, API, "StormService", "ss", DATA, 1, 0)
    name = want["metadata"]["name"]
    squat(client, want, data={"old": True})
    client.vanish.add(name)
    created, cc = await create_revision(client, "ns", want, 0)
    assert (created["metadata"]["name"], cc) == (name, 0)
    assert created["data"] == DATA


async def test_create_revision_gives_up_eventually() -> None:
    with pytest.raises(RevisionCollisionError):
        await create_revision(
            AlwaysTaken(), "ns", new_revision(OWNER, API, "StormService", "ss", DATA, 1, 0), 0
        )


async def test_create_revision_rejects_hand_made_names() -> None:
    want = new_revision(OWNER, API, "StormService", "ss", DATA, 1, 0)
    want["metadata"]["name"] = "handmade"
    with pytest.raises(ValueError):
        await create_revision(FakeClient(), "ns", want, 0)


async def test_update_revision_number() -> None:
    client = FakeClient()
    created, _ = await create_revision(
        client, "ns", new_revision(OWNER, API, "StormService", "ss", DATA, 1, 0), 0
    )
    client.clear_actions()
    same = await update_revision_number(client, created, 1)
    assert same == created and client.actions == []
    updated = await update_revision_number(client, created, 5)
    assert updated["revision"] == 5
    assert client.writes() == [("patch", "controllerrevisions", "ns", created["metadata"]["name"])]


async def test_update_revision_number_refuses_a_recreated_revision() -> None:
    client = FakeClient()
    want = new_revision(OWNER, API, "StormService", "ss", DATA, 1, 0)
    created, _ = await create_revision(client, "ns", want, 0)
    await client.delete(CONTROLLER_REVISIONS, "ns", created["metadata"]["name"])
    await create_revision(client, "ns", want, 0)
    with pytest.raises((Conflict, Invalid)):
        await update_revision_number(client, created, 7)


# --- RevisionHistory implementations ------------------------------------------------------------


async def test_kube_revision_history() -> None:
    client = FakeClient()
    history = KubeRevisionHistory(client, lambda ns: client.objects(CONTROLLER_REVISIONS, ns))
    created, _ = await history.create_revision(new_revision(OWNER, API, "StormService", "ss", DATA, 1, 0), 0)
    client.seed(
        CONTROLLER_REVISIONS,
        {"metadata": {"name": "orphan", "namespace": "ns", "labels": {"name": "ss"}}, "data": {}},
    )
    client.seed(CONTROLLER_REVISIONS, new_revision(OTHER_OWNER, API, "StormService", "ss", {"x": 1}, 1, 0))
    client.seed(CONTROLLER_REVISIONS, {"metadata": {"name": "else", "namespace": "other"}, "data": {}})
    assert sorted(r["metadata"]["name"] for r in history.list_revisions(OWNER)) == [
        "orphan",
        created["metadata"]["name"],
    ]
    only_labelled = history.list_revisions(
        OWNER, lambda r: r["metadata"].get("labels", {}).get("name") == "ss"
    )
    assert [r["metadata"]["name"] for r in only_labelled] == ["orphan"]
    assert (await history.update_revision(created, 2))["revision"] == 2
    client.clear_actions()
    await history.delete_revision(created)
    await history.delete_revision(created)  # already gone: fine
    assert client.writes() == [("delete", "controllerrevisions", "ns", created["metadata"]["name"])] * 2
    assert client.requests[0].options["uid_precondition"] == created["metadata"]["uid"]
    assert client.get_object(CONTROLLER_REVISIONS, "ns", created["metadata"]["name"]) is None


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
