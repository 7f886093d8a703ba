"""Adoption and release of pods (ReplicaSet's claim rules) on a FakeClient with real informers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from controller.roleset import labels as L
from controller.roleset.adoption import (
    candidates,
    matches,
    needs_claim,
    release_departed,
    roleset_label_index,
)
from controller.roleset.sync import SyncError
from controller.runtime.errors import NotFound, ServerError
from controller.runtime.fake import Request
from controller.runtime.resources import PODS, ROLESETS
from controller.runtime.store import Store
from tests.unit.roleset.harness import NS, Harness, role, roleset


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    await harness.start()
    yield harness
    await harness.stop()


def bare_pod(name: str, labels: dict[str, str], *, namespace: str = NS, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels, **meta},
        "spec": {"containers": [{"name": "main", "image": "img:1"}]},
    }


def orphan(name: str = "orphan", rs: str = "rs", **meta: Any) -> dict[str, Any]:
    return bare_pod(name, {L.ROLESET_NAME_LABEL: rs, L.ROLE_NAME_LABEL: "worker"}, **meta)


# A pod controlled by someone else.
FOREIGN_REF = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "uid": "other", "controller": True}


async def remove_roleset_label(h: Harness, name: str) -> None:
    """`kubectl label pod NAME roleset-name-`: the pod leaves the RoleSet's pod cache."""
    remove = [{"op": "remove", "path": f"/metadata/labels/{L.ROLESET_NAME_LABEL}"}]
    await h.client.patch(PODS, NS, name, remove, patch_type="json")


def controller_uid(pod: dict[str, Any]) -> str | None:
    for ref in pod["metadata"].get("ownerReferences") or ():
        if ref.get("controller"):
            return str(ref["uid"])
    return None


def patches_of(h: Harness, name: str) -> list[Request]:
    return [r for r in h.client.requests if r.verb == "patch" and r.resource == PODS and r.name == name]


# --- pure helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        (orphan(), True),
        (orphan(rs="other"), False),
        (orphan(namespace="elsewhere"), False),
        (bare_pod("nolabel", {L.ROLE_NAME_LABEL: "worker"}), False),
    ],
)
def test_matches_by_roleset_name_label_in_namespace(pod: dict[str, Any], expected: bool) -> None:
    assert matches(pod, NS, "rs") is expected


def test_index_and_needs_claim() -> None:
    store = Store({"roleset-label": roleset_label_index})
    ours = {"apiVersion": "v1", "kind": "RoleSet", "name": "rs", "uid": "u1", "controller": True}
    foreign = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "uid": "u2", "controller": True}
    store.add(orphan("owned", ownerReferences=[ours]))
    store.add(orphan("foreign", ownerReferences=[foreign]))
    assert roleset_label_index(orphan()) == [f"{NS}/rs"]
    assert not needs_claim(store, f"{NS}/rs", NS, "rs", "u1"), "owned and foreign pods need no claim"
    store.add(orphan("deleting", deletionTimestamp="2024-01-01T00:00:00Z"))
    assert not needs_claim(store, f"{NS}/rs", NS, "rs", "u1"), "a terminating orphan is not adopted"
    store.add(orphan("new-orphan"))
    assert needs_claim(store, f"{NS}/rs", NS, "rs", "u1")
    store.delete(orphan("new-orphan"))
    store.add(orphan("owned", rs="renamed", ownerReferences=[ours]))
    assert needs_claim(store, f"{NS}/rs", NS, "rs", "u1"), "an owned pod that stopped matching"
    names = [p["metadata"]["name"] for p in candidates(store, f"{NS}/rs", "u1")]
    assert sorted(names) == ["deleting", "foreign", "owned"]


# --- the reconcile --------------------------------------------------------------------------------


async def test_matching_orphan_is_adopted_and_counted(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=2)]))
    await h.converge()
    h.client.seed(PODS, orphan())
    await h.sync()
    rs = h.get()
    pod = h.client.get_object(PODS, NS, "orphan")
    assert pod is not None and controller_uid(pod) == rs["metadata"]["uid"]
    (ref,) = pod["metadata"]["ownerReferences"]
    assert ref == {
        "apiVersion": "orchestration.aibrix.ai/v1alpha1",
        "kind": "RoleSet",
        "name": "rs",
        "uid": rs["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    # The adoption is preconditioned on the uid of the pod we saw.
    (adopt,) = patches_of(h, "orphan")
    # Strategic: ownerReferences merge by uid, so a racing adoption by another controller ends
    # in two controller references, which the API server rejects.
    assert adopt.options["patch_type"] == "strategic"
    assert adopt.body["metadata"]["uid"] == pod["metadata"]["uid"]
    # Counted from this pass on.
    assert h.get()["status"]["roles"][0]["replicas"] == 3
    creates_before = sum(1 for a in h.client.writes() if a.verb == "create")
    await h.converge()
    # Three pods for two replicas: one goes, the adopted one first (outdated: it has no hash).
    assert sum(1 for a in h.client.writes() if a.verb == "create") == creates_before
    assert len(h.pods()) == 2
    assert h.client.get_object(PODS, NS, "orphan") is None
    assert h.get()["status"]["roles"][0]["replicas"] == 2


async def test_adopted_orphan_fills_a_replica_instead_of_a_new_pod(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=1)]))
    await h.converge()
    (pod,) = h.pods()
    # Orphan our own pod (as `kubectl delete rs --cascade=orphan` would), then bring the RoleSet
    # back under a new uid: it adopts the pod instead of creating another.
    rs = h.get()
    await h.client.delete(ROLESETS, NS, "rs")
    await h.settle()
    await h.ctrl.sync(f"{NS}/rs")
    bare = dict(pod)
    bare["metadata"] = {k: v for k, v in pod["metadata"].items() if k != "ownerReferences"}
    await h.client.delete(PODS, NS, pod["metadata"]["name"])
    del bare["metadata"]["uid"], bare["metadata"]["resourceVersion"]
    h.client.seed(PODS, bare)
    h.client.clear_actions()
    h.create(roleset(roles=[role("worker", replicas=1)]))
    await h.converge()
    assert h.get()["metadata"]["uid"] != rs["metadata"]["uid"]
    (after,) = h.pods()
    assert after["metadata"]["name"] == pod["metadata"]["name"], "adopted, not replaced"
    assert controller_uid(after) == h.get()["metadata"]["uid"]
    assert not [a for a in h.client.writes() if a.verb == "create" and a.resource == "pods"]


async def test_foreign_and_unmatched_pods_are_not_adopted(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=1)]))
    h.client.seed(PODS, orphan("foreign", ownerReferences=[FOREIGN_REF]))
    h.client.seed(PODS, orphan("other-rs", rs="rs2"))
    await h.converge()
    for name in ("foreign", "other-rs"):
        assert not patches_of(h, name)
        assert not [a for a in h.client.writes() if a.name == name]
    foreign = h.client.get_object(PODS, NS, "foreign")
    assert foreign is not None and controller_uid(foreign) == "other"


async def test_owned_pod_that_stops_matching_is_released(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=2)]))
    await h.converge()
    victim = h.pods()[0]
    name = victim["metadata"]["name"]
    labels = dict(victim["metadata"]["labels"])
    labels[L.ROLESET_NAME_LABEL] = "quarantine"
    await h.client.patch(PODS, NS, name, {"metadata": {"labels": labels}})
    await h.converge()
    released = h.client.get_object(PODS, NS, name)
    assert released is not None, "released, not deleted"
    assert controller_uid(released) is None
    (release,) = patches_of(h, name)[-1:]
    assert {"op": "test", "path": "/metadata/uid", "value": victim["metadata"]["uid"]} in release.body
    # It no longer counts: a replacement was created.
    ours = [p for p in h.pods() if controller_uid(p) == h.get()["metadata"]["uid"]]
    assert len(ours) == 2 and name not in {p["metadata"]["name"] for p in ours}


async def test_owned_pod_whose_label_is_removed_is_released(h: Harness) -> None:
    """The pod cache holds only labelled pods, so the pod just vanishes from it (the API server
    reports it as deleted); ReplicaSet's rule still applies: release it, do not delete it."""
    h.create(roleset(roles=[role("worker", replicas=2)]))
    await h.converge()
    victim = h.pods()[0]
    name, uid = victim["metadata"]["name"], victim["metadata"]["uid"]
    await remove_roleset_label(h, name)
    await h.converge()
    released = h.client.get_object(PODS, NS, name)
    assert released is not None and released["metadata"]["uid"] == uid, "released, not deleted"
    assert controller_uid(released) is None
    (release,) = patches_of(h, name)[-1:]
    assert {"op": "test", "path": "/metadata/uid", "value": uid} in release.body
    ours = [p for p in h.pods() if controller_uid(p) == h.get()["metadata"]["uid"]]
    assert len(ours) == 2 and name not in {p["metadata"]["name"] for p in ours}
    # Released once; later passes leave it alone.
    h.client.clear_actions()
    await h.sync()
    assert not patches_of(h, name)


async def test_a_deleted_pod_is_not_released(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=2)]))
    await h.converge()
    name = h.pods()[0]["metadata"]["name"]
    await h.client.delete(PODS, NS, name)
    await h.converge()
    assert not patches_of(h, name)
    assert not [r for r in h.client.requests if r.verb == "get" and r.resource == PODS]


async def test_failed_release_of_a_departed_pod_is_retried(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=1)]))
    await h.converge()
    name = h.pods()[0]["metadata"]["name"]
    h.client.inject_error("get", "pods", ServerError(500, "InternalError", "boom"), times=1)
    await remove_roleset_label(h, name)
    await h.settle()
    with pytest.raises(SyncError, match="boom"):
        await h.sync()
    failure = h.condition("ReplicaFailure")
    assert failure is not None and failure["reason"] == "FailedClaim"
    await h.converge()
    pod = h.client.get_object(PODS, NS, name)
    assert pod is not None and controller_uid(pod) is None


def departed_pod(**meta: Any) -> dict[str, Any]:
    owner = {"apiVersion": "orchestration.aibrix.ai/v1alpha1", "kind": "RoleSet", "name": "rs",
             "uid": "rs-uid", "controller": True}  # fmt: skip
    base = {"uid": "pod-uid", "ownerReferences": [owner], **meta}
    return bare_pod("p", {L.ROLE_NAME_LABEL: "worker"}, **base)


@pytest.mark.parametrize(
    ("on_server", "released"),
    [
        pytest.param(departed_pod(), True, id="ours-without-label"),
        pytest.param(None, False, id="gone"),
        pytest.param(departed_pod(uid="other-uid"), False, id="recreated-under-the-name"),
        pytest.param(departed_pod(deletionTimestamp="2024-01-01T00:00:00Z"), False, id="being-deleted"),
        pytest.param(departed_pod(ownerReferences=[]), False, id="already-released"),
        pytest.param(
            bare_pod(
                "p",
                {L.ROLESET_NAME_LABEL: "rs"},
                uid="pod-uid",
                ownerReferences=departed_pod()["metadata"]["ownerReferences"],
            ),
            False,
            id="label-back",
        ),
    ],
)
async def test_release_departed(on_server: dict[str, Any] | None, released: bool) -> None:
    patches: list[tuple[str, Any, str]] = []

    async def get_pod(name: str) -> dict[str, Any]:
        if on_server is None:
            raise NotFound(404, "NotFound", "gone")
        return on_server

    async def patch(name: str, body: Any, patch_type: str) -> dict[str, Any]:
        patches.append((name, body, patch_type))
        return {}

    rs = {"metadata": {"name": "rs", "namespace": NS, "uid": "rs-uid"}}
    assert await release_departed(rs, "p", "pod-uid", get_pod=get_pod, patch=patch) is released
    if released:
        assert patches == [
            (
                "p",
                [
                    {"op": "test", "path": "/metadata/uid", "value": "pod-uid"},
                    {"op": "test", "path": "/metadata/ownerReferences/0/uid", "value": "rs-uid"},
                    {"op": "remove", "path": "/metadata/ownerReferences/0"},
                ],
                "json",
            )
        ]
    else:
        assert patches == []


async def test_no_adoption_when_the_roleset_is_gone_from_the_server(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=1)]))
    await h.converge()
    h.client.seed(PODS, orphan())
    await h.settle()
    # The cache still has the RoleSet (frozen: informers stopped); the API server does not:
    # can_adopt re-reads it and refuses.
    await h.factory.stop()
    await h.client.delete(ROLESETS, NS, "rs")
    assert h.ctrl.rolesets.store.get(f"{NS}/rs") is not None
    # (The failure cannot be reported in a status that is gone; the pass just ends.)
    await h.ctrl.sync(f"{NS}/rs")
    pod = h.client.get_object(PODS, NS, "orphan")
    assert pod is not None and controller_uid(pod) is None
    assert not patches_of(h, "orphan")


async def test_idle_roleset_with_a_foreign_pod_makes_no_writes(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=1)]))
    h.client.seed(PODS, orphan("foreign", ownerReferences=[FOREIGN_REF]))
    await h.converge()
    h.client.clear_actions()
    for _ in range(3):
        await h.sync()
    assert h.client.writes() == []


async def test_failed_adoption_is_reported_and_retried(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=2)]))
    await h.converge()
    h.client.seed(PODS, orphan())
    h.client.inject_error("patch", "pods", ServerError(500, "InternalError", "boom"), times=1)
    with pytest.raises(SyncError, match="boom"):
        await h.sync()
    failure = h.condition("ReplicaFailure")
    assert failure is not None and failure["reason"] == "FailedClaim"
    await h.sync()
    pod = h.client.get_object(PODS, NS, "orphan")
    assert pod is not None and controller_uid(pod) == h.get()["metadata"]["uid"]


async def test_adoption_never_claims_a_pod_recreated_under_the_same_name(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=2)]))
    await h.converge()
    h.client.seed(PODS, orphan())
    await h.settle()
    # The cache (frozen) shows the first orphan; the server now has another pod of that name.
    await h.factory.stop()
    await h.client.delete(PODS, NS, "orphan")
    h.client.seed(PODS, orphan())
    # (The API server answers a uid mismatch in a patch body with 422 "field is immutable".)
    with pytest.raises(SyncError, match="FailedClaim"):
        await h.ctrl.sync(f"{NS}/rs")
    pod = h.client.get_object(PODS, NS, "orphan")
    assert pod is not None and controller_uid(pod) is None
