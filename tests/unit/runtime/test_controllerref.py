from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest

from controller.runtime.client import Obj
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
from controller.runtime.errors import Conflict, Invalid, NotFound, ServerError
from controller.runtime.fake import FakeClient, json_patch
from controller.runtime.resources import PODS, ROLESETS, STORMSERVICES, Resource

OWNER_UID = "uid-owner"
API = "orchestration.aibrix.ai/v1alpha1"
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


def test_json_adopt_patch_adds_the_reference_and_tests_uid_and_list() -> None:
    ref = new_controller_ref(OWNER, "v1", "StormService")
    for refs in (None, [NON_CONTROLLER]):
        seen = obj("p", refs=refs)
        ops, kind = adopt_patch(seen, ref, strategic=False)
        assert kind == "json"
        assert ops[0] == {"op": "test", "path": "/metadata/uid", "value": "uid-p"}
        result = json_patch(seen, ops)
        assert result["metadata"]["ownerReferences"] == [*(refs or []), ref]
        recreated = copy.deepcopy(seen)
        recreated["metadata"]["uid"] = "uid-new"
        with pytest.raises(ValueError):
            json_patch(recreated, ops)
    changed = obj("p", refs=[THEIRS])
    ops, _ = adopt_patch(obj("p", refs=[NON_CONTROLLER]), ref, strategic=False)
    with pytest.raises(ValueError):
        json_patch(changed, ops)


def test_json_adopt_of_an_unowned_object_fails_once_someone_else_adopted_it() -> None:
    """Adding the whole list would silently replace another controller's reference."""
    ref = new_controller_ref(OWNER, "v1", "StormService")
    ops, _ = adopt_patch(obj("p"), ref, strategic=False)
    assert {"op": "test", "path": "/metadata/ownerReferences", "value": None} in ops
    with pytest.raises(ValueError):
        json_patch(obj("p", refs=[THEIRS]), ops)
    ops, _ = adopt_patch(obj("p", refs=[]), ref, strategic=False)
    assert json_patch(obj("p", refs=[]), ops)["metadata"]["ownerReferences"] == [ref]
    with pytest.raises(ValueError):
        json_patch(obj("p", refs=[THEIRS]), ops)


async def test_json_adopt_against_the_fake_fails_after_a_concurrent_adoption() -> None:
    client = FakeClient()
    seen = seeded(client, ROLESETS, obj("r"))
    await client.patch(ROLESETS, "ns", "r", {"metadata": {"ownerReferences": [THEIRS]}})
    with pytest.raises(Invalid):
        await adopt_object(client, ROLESETS, seen, new_controller_ref(OWNER, API, "StormService"))
    stored = client.get_object(ROLESETS, "ns", "r")
    assert stored is not None and stored["metadata"]["ownerReferences"] == [THEIRS]


def test_json_release_patch_removes_only_our_reference() -> None:
    seen = obj("p", refs=[NON_CONTROLLER, MINE])
    built = release_patch(seen, OWNER_UID, strategic=False)
    assert built is not None
    ops, kind = built
    assert kind == "json"
    assert json_patch(seen, ops)["metadata"]["ownerReferences"] == [NON_CONTROLLER]
    reordered = obj("p", refs=[MINE, NON_CONTROLLER])
    with pytest.raises(ValueError):
        json_patch(reordered, ops)


def seeded(client: FakeClient, resource: Resource, o: Obj) -> Obj:
    """Store `o` in the fake API server; returns it as stored (with the server's uid)."""
    body = copy.deepcopy(o)
    body["metadata"].pop("uid")
    return client.seed(resource, body)


async def test_adopt_and_release_against_the_fake_api_server() -> None:
    client = FakeClient()
    ref = new_controller_ref(OWNER, API, "StormService")
    orphan = seeded(client, ROLESETS, obj("r", refs=[NON_CONTROLLER]))
    await adopt_object(client, ROLESETS, orphan, ref)
    stored = client.get_object(ROLESETS, "ns", "r")
    assert stored is not None and stored["metadata"]["ownerReferences"] == [NON_CONTROLLER, ref]
    assert client.requests[-1].options["patch_type"] == "json"

    assert await release_object(client, ROLESETS, stored, OWNER_UID) is not None
    released = client.get_object(ROLESETS, "ns", "r")
    assert released is not None and released["metadata"]["ownerReferences"] == [NON_CONTROLLER]

    pod = seeded(client, PODS, obj("p"))
    await adopt_object(client, PODS, pod, ref)
    assert client.requests[-1].options["patch_type"] == "strategic"
    stored_pod = client.get_object(PODS, "ns", "p")
    assert stored_pod is not None and controller_ref(stored_pod) == ref


async def test_adopting_a_recreated_object_fails() -> None:
    client = FakeClient()
    seen = seeded(client, ROLESETS, obj("r"))
    await client.delete(ROLESETS, "ns", "r")
    seeded(client, ROLESETS, obj("r"))
    with pytest.raises(Invalid):
        await adopt_object(client, ROLESETS, seen, new_controller_ref(OWNER, API, "StormService"))


async def test_release_object_tolerates_gone_or_replaced_objects() -> None:
    client = FakeClient()
    assert await release_object(client, ROLESETS, obj("gone", refs=[MINE]), OWNER_UID) is None
    seen = seeded(client, ROLESETS, obj("r", refs=[MINE]))
    await client.delete(ROLESETS, "ns", "r")
    seeded(client, ROLESETS, obj("r", refs=[MINE]))
    assert await release_object(client, ROLESETS, seen, OWNER_UID) is None
    stored = client.get_object(ROLESETS, "ns", "r")
    assert stored is not None and stored["metadata"]["ownerReferences"] == [MINE]


@pytest.mark.parametrize("error", [NotFound(404), Invalid(422)])
async def test_release_object_ignores_errors_that_mean_nothing_to_release(error: Exception) -> None:
    client = FakeClient()
    seen = seeded(client, PODS, obj("p", refs=[MINE]))
    client.inject_error("patch", PODS, error)
    assert await release_object(client, PODS, seen, OWNER_UID) is None


@pytest.mark.parametrize("error", [ServerError(500), Conflict(409)])
async def test_release_object_raises_other_errors(error: Exception) -> None:
    """A 409 on a patch without resourceVersion is the server giving up on its own write
    conflicts (a stale uid is 422): the release did not happen and must be retried."""
    client = FakeClient()
    seen = seeded(client, PODS, obj("p", refs=[MINE]))
    client.inject_error("patch", PODS, error)
    with pytest.raises(type(error)):
        await release_object(client, PODS, seen, OWNER_UID)


async def test_release_object_skips_objects_we_do_not_reference() -> None:
    client = FakeClient()
    seeded(client, PODS, obj("p", refs=[MINE]))
    client.clear_actions()
    assert await release_object(client, PODS, obj("p", refs=[THEIRS]), OWNER_UID) is None
    assert client.actions == []


async def test_strategic_release_patch_is_sent_for_built_in_kinds() -> None:
    client = FakeClient()
    seen = seeded(client, PODS, obj("p", refs=[NON_CONTROLLER, MINE]))
    released = await release_object(client, PODS, seen, OWNER_UID)
    request = client.requests[-1]
    assert request.options["patch_type"] == "strategic"
    assert request.body == {
        "metadata": {
            "ownerReferences": [{"$patch": "delete", "uid": OWNER_UID}],
            "uid": seen["metadata"]["uid"],
        }
    }
    assert released is not None and released["metadata"]["ownerReferences"] == [NON_CONTROLLER]
    stored = client.get_object(PODS, "ns", "p")
    assert stored is not None and stored["metadata"]["ownerReferences"] == [NON_CONTROLLER]


async def test_strategic_release_of_the_only_reference_leaves_none() -> None:
    client = FakeClient()
    seen = seeded(client, PODS, obj("p", refs=[MINE]))
    released = await release_object(client, PODS, seen, OWNER_UID)
    assert released is not None and controller_ref(released) is None
    stored = client.get_object(PODS, "ns", "p")
    assert stored is not None and "ownerReferences" not in stored["metadata"]


async def test_strategic_adopt_keeps_a_reference_to_another_owner_of_the_same_name() -> None:
    """ownerReferences merge by uid: an owner of the same name (another kind, or a deleted and
    re-created one) is a different reference, not one to overwrite."""
    client = FakeClient()
    namesake = {"apiVersion": "v1", "kind": "ConfigMap", "name": "ss", "uid": "uid-namesake"}
    pod = seeded(client, PODS, obj("p", refs=[namesake]))
    ref = new_controller_ref(OWNER, API, "StormService")
    adopted = await adopt_object(client, PODS, pod, ref)
    # The server puts patch items first when they are new to the list.
    assert adopted["metadata"]["ownerReferences"] == [ref, namesake]
    released = await release_object(client, PODS, adopted, OWNER_UID)
    assert released is not None and released["metadata"]["ownerReferences"] == [namesake]


async def test_strategic_adopt_and_release_of_a_recreated_pod_fail_as_invalid() -> None:
    """The uid in a patch body that no longer matches is a 422 from the API server (metadata.uid
    is immutable), for strategic merge patches as for merge and JSON patches."""
    client = FakeClient()
    seen = seeded(client, PODS, obj("p", refs=[MINE]))
    await client.delete(PODS, "ns", "p")
    seeded(client, PODS, obj("p"))
    with pytest.raises(Invalid) as err:
        await adopt_object(client, PODS, seen, new_controller_ref(OWNER, API, "StormService"))
    assert err.value.code == 422
    assert [c.field for c in err.value.causes] == ["metadata.uid"]
    assert await release_object(client, PODS, seen, OWNER_UID) is None
    stored = client.get_object(PODS, "ns", "p")
    assert stored is not None and "ownerReferences" not in stored["metadata"]


async def test_for_resource_wires_patches() -> None:
    client = FakeClient()
    orphan = seeded(client, ROLESETS, obj("orphan", labels=A))
    stale = seeded(client, ROLESETS, obj("stale", labels=B, refs=[MINE]))
    manager = ControllerRefManager.for_resource(
        client, ROLESETS, OWNER, api_version=API, kind="StormService", match=match
    )
    claimed = await manager.claim([orphan, stale])
    assert [o["metadata"]["name"] for o in claimed] == ["orphan"]
    assert client.writes() == [("patch", "rolesets", "ns", "orphan"), ("patch", "rolesets", "ns", "stale")]
    adopted = client.get_object(ROLESETS, "ns", "orphan")
    released = client.get_object(ROLESETS, "ns", "stale")
    assert adopted is not None and controller_ref(adopted) == new_controller_ref(OWNER, API, "StormService")
    assert released is not None and released["metadata"]["ownerReferences"] == []


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
