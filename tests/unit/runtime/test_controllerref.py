from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from controller.runtime.client import KubeClient, Obj
from controller.runtime.controllerref import (
    CannotAdopt,
    ClaimError,
    ControllerRefManager,
    adopt_object,
    adopt_patch,
    controller_ref,
    new_controller_ref,
    recheck_deletion_timestamp,
    release_object,
    release_patch,
    supports_strategic_merge,
)
from controller.runtime.errors import Conflict, Invalid, NotFound
from controller.runtime.resources import PODS, ROLESETS, STORMSERVICES, Resource


def kube(client: object) -> KubeClient:
    """The stub clients here implement only what the code under test calls."""
    return cast(KubeClient, client)


OWNER_UID = "uid-owner"
OWNER: Obj = {"metadata": {"name": "ss", "namespace": "ns", "uid": OWNER_UID}}
DELETING_OWNER: Obj = {"metadata": {**OWNER["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}}
MINE = {"apiVersion": "v1", "kind": "StormService", "name": "ss", "uid": OWNER_UID, "controller": True}
THEIRS = {"apiVersion": "v1", "kind": "StormService", "name": "x", "uid": "uid-other", "controller": True}
NON_CONTROLLER = {"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "uid": "uid-cm"}


def obj(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    refs: list[dict[str, Any]] | None = None,
    deleting: bool = False,
) -> Obj:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "labels": labels or {}}
    if refs is not None:
        meta["ownerReferences"] = refs
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta}


def match(o: Obj) -> bool:
    return bool(o["metadata"].get("labels", {}).get("app") == "a")


A = {"app": "a"}
B = {"app": "b"}


@dataclass
class Recorder:
    adopted: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    can_adopt_calls: int = 0
    adopt_error: Exception | None = None
    release_error: Exception | None = None
    can_adopt_error: Exception | None = None

    async def adopt(self, o: Obj) -> None:
        if self.adopt_error:
            raise self.adopt_error
        self.adopted.append(o["metadata"]["name"])

    async def release(self, o: Obj) -> None:
        if self.release_error:
            raise self.release_error
        self.released.append(o["metadata"]["name"])

    async def can_adopt(self) -> None:
        self.can_adopt_calls += 1
        if self.can_adopt_error:
            raise self.can_adopt_error

    def manager(self, owner: Obj = OWNER) -> ControllerRefManager:
        return ControllerRefManager(
            owner, match=match, adopt=self.adopt, release=self.release, can_adopt=self.can_adopt
        )


@dataclass
class Case:
    name: str
    candidate: Obj
    owner: Obj
    claimed: bool
    adopted: bool = False
    released: bool = False


CASES = [
    Case("owned and matching", obj("p", labels=A, refs=[MINE]), OWNER, claimed=True),
    Case(
        "owned and matching while owner deleting",
        obj("p", labels=A, refs=[MINE]),
        DELETING_OWNER,
        claimed=True,
    ),
    Case(
        "owned, matching, object deleting",
        obj("p", labels=A, refs=[MINE], deleting=True),
        OWNER,
        claimed=True,
    ),
    Case(
        "owned, not matching: release", obj("p", labels=B, refs=[MINE]), OWNER, claimed=False, released=True
    ),
    Case(
        "owned, not matching, owner deleting: keep hands off",
        obj("p", labels=B, refs=[MINE]),
        DELETING_OWNER,
        claimed=False,
    ),
    Case("orphan matching: adopt", obj("p", labels=A), OWNER, claimed=True, adopted=True),
    Case(
        "orphan with a non-controller reference: adopt",
        obj("p", labels=A, refs=[NON_CONTROLLER]),
        OWNER,
        claimed=True,
        adopted=True,
    ),
    Case("orphan matching, owner deleting", obj("p", labels=A), DELETING_OWNER, claimed=False),
    Case("orphan matching, object deleting", obj("p", labels=A, deleting=True), OWNER, claimed=False),
    Case("orphan not matching", obj("p", labels=B), OWNER, claimed=False),
    Case("other controller, matching", obj("p", labels=A, refs=[THEIRS]), OWNER, claimed=False),
    Case("other controller, not matching", obj("p", labels=B, refs=[THEIRS]), OWNER, claimed=False),
    Case(
        "our non-controller reference is not control",
        obj("p", labels=A, refs=[{**MINE, "controller": False}]),
        OWNER,
        claimed=True,
        adopted=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_claim_rules(case: Case) -> None:
    rec = Recorder()
    claimed = await rec.manager(case.owner).claim([case.candidate])
    assert [o["metadata"]["name"] for o in claimed] == (["p"] if case.claimed else [])
    assert rec.adopted == (["p"] if case.adopted else [])
    assert rec.released == (["p"] if case.released else [])
    assert rec.can_adopt_calls == (1 if case.adopted else 0)


async def test_can_adopt_is_checked_once_per_pass_and_its_error_fails_every_adoption() -> None:
    rec = Recorder(can_adopt_error=CannotAdopt("owner being deleted"))
    kept = obj("kept", labels=A, refs=[MINE])
    with pytest.raises(ClaimError) as info:
        await rec.manager().claim([obj("o1", labels=A), kept, obj("o2", labels=A)])
    assert rec.can_adopt_calls == 1
    assert rec.adopted == []
    assert len(info.value.errors) == 2
    assert info.value.claimed == [kept]


async def test_failures_do_not_stop_the_pass() -> None:
    rec = Recorder(release_error=Conflict(409, "Conflict"))
    objs = [obj("rel", labels=B, refs=[MINE]), obj("orphan", labels=A)]
    with pytest.raises(ClaimError) as info:
        await rec.manager().claim(objs)
    assert rec.adopted == ["orphan"]
    assert [o["metadata"]["name"] for o in info.value.claimed] == ["orphan"]
    assert isinstance(info.value.errors[0], Conflict)


async def test_not_found_is_not_an_error() -> None:
    rec = Recorder(adopt_error=NotFound(404), release_error=NotFound(404))
    claimed = await rec.manager().claim([obj("a", labels=A), obj("r", labels=B, refs=[MINE])])
    assert claimed == []


def test_controller_ref_and_new_controller_ref() -> None:
    assert controller_ref(obj("p")) is None
    assert controller_ref(obj("p", refs=[NON_CONTROLLER])) is None
    assert controller_ref(obj("p", refs=[NON_CONTROLLER, THEIRS])) == THEIRS
    ref = new_controller_ref(OWNER, "orchestration.aibrix.ai/v1alpha1", "StormService")
    assert ref == {
        "apiVersion": "orchestration.aibrix.ai/v1alpha1",
        "kind": "StormService",
        "name": "ss",
        "uid": OWNER_UID,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_supports_strategic_merge() -> None:
    assert supports_strategic_merge(PODS)
    assert supports_strategic_merge(Resource("apps", "v1", "controllerrevisions", "ControllerRevision"))
    assert supports_strategic_merge(Resource("coordination.k8s.io", "v1", "leases", "Lease"))
    assert not supports_strategic_merge(ROLESETS)
    assert not supports_strategic_merge(STORMSERVICES)


def test_strategic_patches_carry_the_uid_precondition() -> None:
    ref = new_controller_ref(OWNER, "v1", "StormService")
    patch, kind = adopt_patch(obj("p"), ref, strategic=True)
    assert kind == "strategic"
    assert patch == {"metadata": {"ownerReferences": [ref], "uid": "uid-p"}}
    built = release_patch(obj("p", refs=[NON_CONTROLLER, MINE]), OWNER_UID, strategic=True)
    assert built == (
        {"metadata": {"ownerReferences": [{"$patch": "delete", "uid": OWNER_UID}], "uid": "uid-p"}},
        "strategic",
    )
    assert release_patch(obj("p", refs=[THEIRS]), OWNER_UID, strategic=True) is None


class PatchConflict(Exception):
    pass


def apply_json_patch(doc: Obj, ops: list[dict[str, Any]]) -> Obj:
    """Just enough of RFC 6902 (test, add, remove) to check the patches' meaning."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = op["path"].strip("/").split("/")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if op["op"] == "test":
            value = node[int(last)] if isinstance(node, list) else node.get(last)
            if value != op["value"]:
                raise PatchConflict(op["path"])
        elif op["op"] == "add":
            if isinstance(node, list):
                node.append(op["value"]) if last == "-" else node.insert(int(last), op["value"])
            else:
                node[last] = op["value"]
        elif op["op"] == "remove":
            del node[int(last) if isinstance(node, list) else last]
    return doc


def test_json_adopt_patch_adds_the_reference_and_tests_uid_and_list() -> None:
    ref = new_controller_ref(OWNER, "v1", "StormService")
    for refs in (None, [NON_CONTROLLER]):
        seen = obj("p", refs=refs)
        ops, kind = adopt_patch(seen, ref, strategic=False)
        assert kind == "json"
        assert ops[0] == {"op": "test", "path": "/metadata/uid", "value": "uid-p"}
        result = apply_json_patch(seen, ops)
        assert result["metadata"]["ownerReferences"] == [*(refs or []), ref]
        recreated = copy.deepcopy(seen)
        recreated["metadata"]["uid"] = "uid-new"
        with pytest.raises(PatchConflict):
            apply_json_patch(recreated, ops)
    changed = obj("p", refs=[THEIRS])
    ops, _ = adopt_patch(obj("p", refs=[NON_CONTROLLER]), ref, strategic=False)
    with pytest.raises(PatchConflict):
        apply_json_patch(changed, ops)


def test_json_release_patch_removes_only_our_reference() -> None:
    seen = obj("p", refs=[NON_CONTROLLER, MINE])
    built = release_patch(seen, OWNER_UID, strategic=False)
    assert built is not None
    ops, kind = built
    assert kind == "json"
    assert apply_json_patch(seen, ops)["metadata"]["ownerReferences"] == [NON_CONTROLLER]
    reordered = obj("p", refs=[MINE, NON_CONTROLLER])
    with pytest.raises(PatchConflict):
        apply_json_patch(reordered, ops)


class PatchingClient:
    """Records patches; answers with `error` when set."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[Resource, str | None, str, Any, str]] = []
        self.error = error

    async def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: str = "merge",
        **_: Any,
    ) -> Obj:
        self.calls.append((resource, namespace, name, patch, patch_type))
        if self.error:
            raise self.error
        return {"metadata": {"name": name, "namespace": namespace}}


async def test_adopt_and_release_objects_pick_the_patch_type_by_resource() -> None:
    client = PatchingClient()
    ref = new_controller_ref(OWNER, "v1", "StormService")
    await adopt_object(kube(client), PODS, obj("p"), ref)
    await adopt_object(kube(client), ROLESETS, obj("r"), ref)
    await release_object(kube(client), PODS, obj("p", refs=[MINE]), OWNER_UID)
    assert [(c[0], c[1], c[2], c[4]) for c in client.calls] == [
        (PODS, "ns", "p", "strategic"),
        (ROLESETS, "ns", "r", "json"),
        (PODS, "ns", "p", "strategic"),
    ]


@pytest.mark.parametrize("error", [NotFound(404), Invalid(422)])
async def test_release_object_tolerates_gone_or_replaced_objects(error: Exception) -> None:
    client = PatchingClient(error)
    assert await release_object(kube(client), PODS, obj("p", refs=[MINE]), OWNER_UID) is None


async def test_release_object_raises_other_errors_and_skips_objects_we_do_not_reference() -> None:
    client = PatchingClient(Conflict(409))
    with pytest.raises(Conflict):
        await release_object(kube(client), PODS, obj("p", refs=[MINE]), OWNER_UID)
    client.calls.clear()
    assert await release_object(kube(client), PODS, obj("p", refs=[THEIRS]), OWNER_UID) is None
    assert client.calls == []


async def test_for_resource_wires_patches() -> None:
    client = PatchingClient()
    manager = ControllerRefManager.for_resource(
        kube(client),
        ROLESETS,
        OWNER,
        api_version="orchestration.aibrix.ai/v1alpha1",
        kind="StormService",
        match=match,
    )
    claimed = await manager.claim([obj("orphan", labels=A), obj("stale", labels=B, refs=[MINE])])
    assert [o["metadata"]["name"] for o in claimed] == ["orphan"]
    assert [(c[2], c[4]) for c in client.calls] == [("orphan", "json"), ("stale", "json")]
    added = client.calls[0][3][-1]["value"]
    assert added == [new_controller_ref(OWNER, "orchestration.aibrix.ai/v1alpha1", "StormService")]


@pytest.mark.parametrize(
    ("fresh", "ok"),
    [
        (OWNER, True),
        (DELETING_OWNER, False),
        ({"metadata": {**OWNER["metadata"], "uid": "uid-recreated"}}, False),
        (NotFound(404), False),
    ],
    ids=["live", "deleting", "recreated", "gone"],
)
async def test_recheck_deletion_timestamp(fresh: Obj | Exception, ok: bool) -> None:
    async def get() -> Obj:
        if isinstance(fresh, Exception):
            raise fresh
        return fresh

    check = recheck_deletion_timestamp(get, OWNER_UID)
    if ok:
        await check()
    else:
        with pytest.raises(CannotAdopt):
            await check()
