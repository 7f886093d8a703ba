"""The RoleSet reconcile on a FakeClient with real informers: what it writes, and what it does not."""

from __future__ import annotations

import copy
import dataclasses
import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest

from controller.roleset import labels as L
from controller.roleset.sync import SyncConfig, SyncError, template_hash
from controller.runtime.errors import AlreadyExists, Forbidden, Invalid, ServerError, StatusCause
from controller.runtime.resources import CUSTOM_RESOURCE_DEFINITIONS, POD_DISRUPTION_BUDGETS, PODS, ROLESETS
from tests.unit.roleset.harness import NS, Harness, role, roleset


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    await harness.start()
    yield harness
    await harness.stop()


def creates(h: Harness, resource: str = "pods") -> int:
    return sum(1 for a in h.client.writes() if a.verb == "create" and a.resource == resource)


async def test_creates_pods_once_despite_overlapping_syncs(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=3)]))
    await h.sync()
    assert creates(h) == 3  # slow start: batches of 1 then 2
    assert len(h.pods()) == 3
    # The cache has not seen the pods yet: a second pass must not create again.
    await h.ctrl.sync(f"{NS}/rs")
    assert len(h.pods()) == 3
    await h.sync()
    assert len(h.pods()) == 3


async def test_status_is_written_only_when_it_changes(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=2)]))
    await h.converge()
    status = h.get()["status"]
    assert status["observedGeneration"] == 1
    assert status["roles"] == [
        {
            "name": "worker",
            "replicas": 2,
            "readyReplicas": 2,
            "notReadyReplicas": 0,
            "updatedReplicas": 2,
            "updatedReadyReplicas": 2,
        }
    ]
    ready = h.condition("Ready")
    assert ready is not None and ready["status"] == "True"
    h.client.clear_actions()
    for _ in range(3):
        await h.sync()
    assert h.client.writes() == []


async def test_ready_condition_flips_with_transition_time(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=1)]))
    await h.sync()
    await h.sync()
    first = h.condition("Ready")
    assert first is not None and first["status"] == "False"
    await h.converge()
    second = h.condition("Ready")
    assert second is not None and second["status"] == "True"
    progressing = h.condition("Progressing")
    assert progressing is not None and progressing["reason"] == "RolloutComplete"


async def test_pod_labels_env_and_owner(h: Harness) -> None:
    h.create(roleset(roles=[role("decode", replicas=1, stateful=True)]))
    await h.sync()
    (pod,) = h.pods()
    rs = h.get()
    h_ = template_hash(rs["spec"]["roles"][0]["template"])
    assert pod["metadata"]["name"] == f"rs-decode-{h_}-0"
    assert pod["metadata"]["labels"][L.ROLE_TEMPLATE_HASH_LABEL] == h_
    assert pod["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["ROLE_REPLICA_INDEX"] == "0" and env["ROLESET_NAME"] == "rs"


async def test_deleted_stateful_pod_comes_back_with_the_same_name(h: Harness) -> None:
    h.create(roleset(roles=[role("decode", replicas=2, stateful=True)]))
    await h.converge()
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in h.pods()}
    victim = sorted(before)[0]
    await h.client.delete(PODS, NS, victim)
    await h.converge()
    after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in h.pods()}
    assert set(after) == set(before)
    assert after[victim] != before[victim]


async def test_other_owners_pods_are_never_touched(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=1)]))
    foreign = {
        "metadata": {
            "name": "foreign",
            "namespace": NS,
            "labels": {L.ROLESET_NAME_LABEL: "rs", L.ROLE_NAME_LABEL: "worker"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "x",
                    "uid": "other",
                    "controller": True,
                }
            ],
        },
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }
    h.client.seed(PODS, foreign)
    await h.converge()
    assert h.client.get_object(PODS, NS, "foreign") is not None
    assert not [a for a in h.client.writes() if a.name == "foreign"]


async def test_removed_role_pods_are_deleted(h: Harness) -> None:
    h.create(roleset(roles=[role("a", replicas=1), role("b", replicas=2)]))
    await h.converge()
    h.update_spec(lambda s: s.__setitem__("roles", [s["roles"][0]]))
    await h.converge()
    assert {L.labels_of(p)[L.ROLE_NAME_LABEL] for p in h.pods()} == {"a"}
    assert [r["name"] for r in h.get()["status"]["roles"]] == ["a"]


async def test_sequential_rollout_waits_for_earlier_roles(h: Harness) -> None:
    h.create(roleset(roles=[role("a", replicas=2, upgradeOrder=2), role("b", replicas=2, upgradeOrder=1)]))
    await h.converge()
    old = {p["metadata"]["name"] for p in h.pods()}

    def bump(spec: dict[str, Any]) -> None:
        for r in spec["roles"]:
            r["template"]["spec"]["containers"][0]["image"] = "img:2"

    h.update_spec(bump)
    await h.sync()  # b rolls first (upgradeOrder 1); no new pod is ready yet
    await h.sync()
    a_changed = [p for p in h.pods("a") if p["metadata"]["name"] not in old]
    b_changed = [p for p in h.pods("b") if p["metadata"]["name"] not in old]
    assert b_changed and not a_changed
    await h.converge()
    assert all(p["spec"]["containers"][0]["image"] == "img:2" for p in h.pods())
    assert len(h.pods()) == 4


async def test_api_errors_are_reported_and_raised(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=2)]))
    h.client.inject_error("create", "pods", ServerError(500, "InternalError", "boom"), times=1)
    with pytest.raises(SyncError):
        await h.sync()
    failure = h.condition("ReplicaFailure")
    assert failure is not None and failure["status"] == "True" and failure["reason"] == "FailedCreate"
    # Slow start: the first batch (one pod) failed, the rest were never tried.
    assert sum(1 for a in h.client.actions if a.verb == "create" and a.resource == "pods") == 1
    await h.converge()
    assert h.condition("ReplicaFailure") is None
    assert len(h.pods()) == 2


@pytest.mark.parametrize("code", [0, 504], ids=["connection-broken", "api-server-timeout"])
async def test_a_create_of_unknown_outcome_is_expected_only_for_a_while(code: int) -> None:
    # The pod may have been made: the next pass waits for it, and looks again when the short
    # wait ends (no event would come for a pod never made); then it creates it.
    h = Harness(SyncConfig(unknown_create_seconds=0.2))
    await h.start()
    try:
        h.create(roleset(roles=[role("worker", replicas=1)]))
        h.client.inject_error("create", "pods", ServerError(code, "", "Server disconnected"), times=1)
        with pytest.raises(SyncError):
            await h.sync()
        assert h.pods() == []
        requeue = await h.sync()
        assert h.pods() == [], "created again while the first create may still show up"
        assert requeue is not None and requeue <= 0.2 + 0.1
        await h.until(lambda: h.ctrl.expectations.satisfied(f"{NS}/rs"), within=5.0)
        await h.sync()
        assert len(h.pods()) == 1
    finally:
        await h.stop()


def pending_reason(h: Harness, name: str) -> str | None:
    """The in-place pending reason the pod shows, as stored."""
    fresh = h.client.get_object(PODS, NS, name)
    assert fresh is not None
    value = fresh["metadata"]["annotations"].get(L.INPLACE_PENDING_REASON_ANNOTATION)
    return None if value is None else str(value)


async def test_in_place_image_update_keeps_name_and_uid(h: Harness) -> None:
    # Every pending reason shown at once: this follows them step by step.
    h.ctrl.syncer.config = dataclasses.replace(h.ctrl.syncer.config, inplace_pending_reason_after_seconds=0)
    h.create(
        roleset(
            roles=[
                role("worker", replicas=2, updateStrategy={"type": "InPlaceIfPossible", "maxUnavailable": 1})
            ]
        )
    )
    await h.converge()
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in h.pods()}
    h.update_spec(lambda s: s["roles"][0]["template"]["spec"]["containers"][0].__setitem__("image", "img:2"))
    await h.sync()
    patched = [p for p in h.pods() if p["metadata"]["annotations"].get(L.INPLACE_TARGET_HASH_ANNOTATION)]
    assert len(patched) == 1
    pod = patched[0]
    assert pod["spec"]["containers"][0]["image"] == "img:2"
    assert "InPlaceUpdateStarted" in h.recorder.reasons()
    name = pod["metadata"]["name"]

    # The runtime still reports the old image: not complete.
    await h.sync()
    assert pending_reason(h, name) == "RuntimeImageMismatch"
    # New image reported, but the same imageID (the container did not restart): not complete.
    fresh = h.client.get_object(PODS, NS, name)
    assert fresh is not None
    h.set_ready(fresh)
    await h.sync()
    assert pending_reason(h, name) == "ContainerNotRestarted"
    assert (
        h.pods()[0]["metadata"]["annotations"].get(L.INPLACE_TARGET_HASH_ANNOTATION) is None
        or len([p for p in h.pods() if p["metadata"]["annotations"].get(L.INPLACE_TARGET_HASH_ANNOTATION)])
        == 1
    ), "maxUnavailable 1: the second pod waits"
    fresh = h.client.get_object(PODS, NS, name)
    assert fresh is not None
    h.set_ready(fresh, image_id="id-new")
    for _ in range(10):
        await h.sync()
        for p in h.pods():
            if (
                p["metadata"]["annotations"].get(L.INPLACE_TARGET_HASH_ANNOTATION)
                and p["spec"]["containers"][0]["image"] == "img:2"
            ):
                h.set_ready(p, image_id="id-new-" + p["metadata"]["name"])
    after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in h.pods()}
    assert after == before
    new_hash = template_hash(h.get()["spec"]["roles"][0]["template"])
    for p in h.pods():
        assert p["metadata"]["labels"][L.ROLE_TEMPLATE_HASH_LABEL] == new_hash
        assert L.INPLACE_TARGET_HASH_ANNOTATION not in p["metadata"]["annotations"]
        assert L.INPLACE_STATE_ANNOTATION not in p["metadata"]["annotations"]
    assert "InPlaceUpdateCompleted" in h.recorder.reasons()


async def test_in_place_falls_back_to_recreate(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=1, updateStrategy={"type": "InPlaceIfPossible"})]))
    await h.converge()
    (before,) = h.pods()

    def change(spec: dict[str, Any]) -> None:
        c = spec["roles"][0]["template"]["spec"]["containers"][0]
        c["image"] = "img:2"
        c["env"] = [{"name": "NEW", "value": "1"}]

    h.update_spec(change)
    await h.converge()
    (after,) = h.pods()
    assert after["metadata"]["uid"] != before["metadata"]["uid"]
    assert "InPlaceFallback" in h.recorder.reasons()


async def test_in_place_pending_reason_waits_until_the_update_is_slow(h: Harness) -> None:
    """A quick in-place restart writes no pending reason (a pod write per step of it); one still
    pending after inplace_pending_reason_after_seconds says why, and then follows the reason."""
    now = [datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)]
    h.ctrl.syncer.clock = lambda: now[0]
    after = h.ctrl.syncer.config.inplace_pending_reason_after_seconds
    assert after == 10.0
    h.create(roleset(roles=[role("worker", replicas=1, updateStrategy={"type": "InPlaceIfPossible"})]))
    await h.converge()
    h.update_spec(lambda s: s["roles"][0]["template"]["spec"]["containers"][0].__setitem__("image", "img:2"))
    await h.sync()  # starts the update
    (pod,) = h.pods()
    assert pod["metadata"]["annotations"].get(L.INPLACE_TARGET_HASH_ANNOTATION)
    name = pod["metadata"]["name"]

    now[0] += datetime.timedelta(seconds=after - 1)
    requeue = await h.sync()
    assert pending_reason(h, name) is None, "pending for less than the delay: nothing written"
    assert requeue is not None and 1.0 <= requeue <= 1.2, "woken when the reason is due"

    now[0] += datetime.timedelta(seconds=1)
    await h.sync()
    assert pending_reason(h, name) == "RuntimeImageMismatch"

    # Shown once, a reason is kept true at once.
    fresh = h.client.get_object(PODS, NS, name)
    assert fresh is not None
    h.set_ready(fresh, ready=False)
    await h.sync()
    assert pending_reason(h, name) == "PodNotReady"

    fresh = h.client.get_object(PODS, NS, name)
    assert fresh is not None
    h.set_ready(fresh, image_id="id-new")
    await h.converge(ready=False)
    (done,) = h.pods()
    assert done["spec"]["containers"][0]["image"] == "img:2"
    assert L.INPLACE_PENDING_REASON_ANNOTATION not in done["metadata"]["annotations"]
    assert L.INPLACE_TARGET_HASH_ANNOTATION not in done["metadata"]["annotations"]


async def test_a_quick_in_place_update_writes_the_pod_twice(h: Harness) -> None:
    """Start (images, target) and completion (labels): no pending-reason write in between when
    the restart takes less than the delay."""
    h.create(roleset(roles=[role("worker", replicas=1, updateStrategy={"type": "InPlaceIfPossible"})]))
    await h.converge()
    pod_writes = len([w for w in h.client.writes() if w.resource == "pods" and w.verb == "patch"])
    h.update_spec(lambda s: s["roles"][0]["template"]["spec"]["containers"][0].__setitem__("image", "img:2"))
    await h.sync()
    await h.sync()  # the old image still runs: pending, for less than the delay
    (pod,) = h.pods()
    h.set_ready(pod, ready=False)
    await h.sync()
    (pod,) = h.pods()
    h.set_ready(pod, image_id="id-new")
    await h.converge(ready=False)
    (done,) = h.pods()
    assert L.INPLACE_TARGET_HASH_ANNOTATION not in done["metadata"]["annotations"]
    patches = [w for w in h.client.writes() if w.resource == "pods" and w.verb == "patch"]
    assert len(patches) - pod_writes == 2


async def test_stuck_in_place_update_is_reported() -> None:
    h = Harness(SyncConfig(inplace_deadline_seconds=0))
    await h.start()
    try:
        h.create(roleset(roles=[role("worker", replicas=1, updateStrategy={"type": "InPlaceIfPossible"})]))
        await h.converge()
        h.update_spec(
            lambda s: s["roles"][0]["template"]["spec"]["containers"][0].__setitem__("image", "img:2")
        )
        await h.sync()
        await h.sync()
        await h.sync()
        cond = h.condition("Progressing")
        assert cond is not None and (cond["status"], cond["reason"]) == ("False", "InPlaceUpdateStuck")
        assert h.recorder.reasons().count("InPlaceUpdateStuck") == 1
        # Reverting the template reverts the pod.
        h.update_spec(
            lambda s: s["roles"][0]["template"]["spec"]["containers"][0].__setitem__("image", "img:1")
        )
        await h.converge()
        (pod,) = h.pods()
        assert pod["spec"]["containers"][0]["image"] == "img:1"
        assert L.INPLACE_TARGET_HASH_ANNOTATION not in pod["metadata"]["annotations"]
        cond = h.condition("Progressing")
        assert cond is not None and cond["status"] == "True"
    finally:
        await h.stop()


async def test_pod_group_crd_missing_then_present(h: Harness) -> None:
    h.create(
        roleset(
            roles=[role("worker", replicas=2)],
            schedulingStrategy={"coschedulingSchedulingStrategy": {"scheduleTimeoutSeconds": 30}},
        )
    )
    await h.converge()
    cond = h.condition("PodGroupSynced")
    assert cond is not None and cond["reason"] == "PodGroupCRDMissing"
    assert h.recorder.reasons().count("PodGroupCRDMissing") == 1
    assert all(p["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "rs" for p in h.pods())
    from controller.roleset.scheduling import SCHEDULERS

    h.client.seed(CUSTOM_RESOURCE_DEFINITIONS, {"metadata": {"name": "podgroups.scheduling.x-k8s.io"}})
    await h.until(lambda: h.ctrl._pod_group_store(SCHEDULERS["coschedulingSchedulingStrategy"]) is not None)
    await h.converge()
    pgs = h.client.objects(SCHEDULERS["coschedulingSchedulingStrategy"].resource, NS)
    assert [pg["metadata"]["name"] for pg in pgs] == ["rs"]
    assert pgs[0]["spec"] == {"scheduleTimeoutSeconds": 30, "minMember": 2}
    cond = h.condition("PodGroupSynced")
    assert cond is not None and cond["status"] == "True"


async def test_pdb_per_role(h: Harness) -> None:
    h.create(
        roleset(roles=[role("worker", replicas=4, podGroupSize=2, disruptionTolerance={"maxUnavailable": 1})])
    )
    await h.converge()
    (pdb,) = h.client.objects(POD_DISRUPTION_BUDGETS, NS)
    assert pdb["metadata"]["name"] == "rs-worker"
    # 4 groups of 2 pods, one group may be down: one missing pod breaks a group, so 7 of 8 pods
    # must stay.
    assert pdb["spec"] == {
        "minAvailable": 7,
        "selector": {"matchLabels": {"roleset-name": "rs", "role-name": "worker"}},
    }
    h.update_spec(lambda s: s["roles"][0].pop("disruptionTolerance"))
    await h.converge()
    assert h.client.objects(POD_DISRUPTION_BUDGETS, NS) == []


async def test_pdb_outside_the_cache_is_relabelled_if_ours_and_reported_if_not(h: Harness) -> None:
    """The PDB cache selects on roleset-name: a PDB of our name without it is found by the
    refused create; ours gets its labels back (same object), anyone else's is a conflict."""
    h.create(roleset(roles=[role("worker", replicas=2, disruptionTolerance={"maxUnavailable": 1})]))
    await h.converge()
    (pdb,) = h.client.objects(POD_DISRUPTION_BUDGETS, NS)
    uid = pdb["metadata"]["uid"]
    del pdb["metadata"]["labels"]
    h.client.seed(POD_DISRUPTION_BUDGETS, pdb)
    await h.converge()
    (pdb,) = h.client.objects(POD_DISRUPTION_BUDGETS, NS)
    assert pdb["metadata"]["uid"] == uid
    assert pdb["metadata"]["labels"] == {"roleset-name": "rs", "role-name": "worker"}
    assert h.ctrl.pdbs.store.get(f"{NS}/rs-worker") is not None

    foreign = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "other-worker", "namespace": NS},
        "spec": {"minAvailable": 5, "selector": {"matchLabels": {"app": "x"}}},
    }
    h.client.seed(POD_DISRUPTION_BUDGETS, foreign)
    h.create(roleset("other", roles=[role("worker", replicas=1, disruptionTolerance={"maxUnavailable": 1})]))
    for _ in range(3):
        with pytest.raises(SyncError, match="PodDisruptionBudget other-worker is owned by another object"):
            await h.sync("other")
    creates = [
        a for a in h.client.writes() if a.resource == "poddisruptionbudgets" and a.name == "other-worker"
    ]
    assert [a.verb for a in creates] == ["create"], "one refused create, then no more attempts"
    kept = h.client.get_object(POD_DISRUPTION_BUDGETS, NS, "other-worker")
    assert kept is not None and kept["spec"]["minAvailable"] == 5 and "labels" not in kept["metadata"]
    cond = h.condition("ReplicaFailure", "other")
    assert (
        cond is not None and "PodDisruptionBudget other-worker is owned by another object" in cond["message"]
    )


async def test_no_per_roleset_pdb_under_a_stormservice(h: Harness) -> None:
    """The StormService controller owns the per-role PDBs of its RoleSets; a second PDB per
    RoleSet would put each pod under two budgets, which blocks every eviction."""
    obj = roleset(roles=[role("worker", replicas=2, disruptionTolerance={"maxUnavailable": 1})])
    h.create(obj)
    await h.converge()
    assert [p["metadata"]["name"] for p in h.client.objects(POD_DISRUPTION_BUDGETS, NS)] == ["rs-worker"]
    # Adopted by a StormService: its own PDB goes away.
    adopted = h.get()
    adopted["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "orchestration.aibrix.ai/v1alpha1",
            "kind": "StormService",
            "name": "ss",
            "uid": "ss-uid",
            "controller": True,
        }
    ]
    h.client.seed(ROLESETS, adopted)
    await h.converge()
    assert h.client.objects(POD_DISRUPTION_BUDGETS, NS) == []


async def test_grouped_role_creates_whole_groups(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=2, podGroupSize=3)]))
    await h.converge()
    pods = h.pods()
    assert len(pods) == 6
    groups = {p["metadata"]["labels"][L.PODSET_NAME_LABEL] for p in pods}
    assert len(groups) == 2
    status = h.get()["status"]["roles"][0]
    assert (status["replicas"], status["readyReplicas"]) == (2, 2)
    # One member not ready: that instance is not ready.
    h.set_ready(pods[0], ready=False)
    await h.sync()
    status = h.get()["status"]["roles"][0]
    assert (status["replicas"], status["readyReplicas"]) == (2, 1)


async def test_blocked_group_size_change_is_reported_then_unblocked(h: Harness) -> None:
    strategy = {"maxSurge": 1, "maxUnavailable": 0}
    h.create(roleset(roles=[role("worker", replicas=2, podGroupSize=2, updateStrategy=strategy)]))
    await h.converge()
    before = {p["metadata"]["uid"] for p in h.pods()}
    h.update_spec(lambda s: s["roles"][0].__setitem__("podGroupSize", 3))
    await h.converge()
    assert {p["metadata"]["uid"] for p in h.pods()} == before, "no group was taken down"
    cond = h.condition("Progressing")
    assert cond is not None and (cond["status"], cond["reason"]) == ("False", "RolloutBlocked")
    assert "role worker: podGroupSize changed to 3" in cond["message"]
    assert "maxUnavailable" in cond["message"]
    # Following the message's advice lets the rollout finish.
    h.update_spec(lambda s: s["roles"][0]["updateStrategy"].__setitem__("maxUnavailable", 1))
    await h.converge()
    assert len(h.pods()) == 6
    cond = h.condition("Progressing")
    assert cond is not None and cond["reason"] != "RolloutBlocked"


async def test_legacy_finalizer_removed_on_deletion(h: Harness) -> None:
    obj = roleset(roles=[role("worker", replicas=1)])
    obj["metadata"]["finalizers"] = [L.LEGACY_FINALIZERS[0], "example.com/keep"]
    h.create(obj)
    await h.converge()
    from controller.runtime.resources import ROLESETS

    await h.client.delete(ROLESETS, NS, "rs")
    await h.sync()
    assert h.get()["metadata"]["finalizers"] == ["example.com/keep"]


async def test_deleted_roleset_forgets_its_expectations(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=2)]))
    await h.sync(settle=True)
    from controller.runtime.resources import ROLESETS

    await h.client.delete(ROLESETS, NS, "rs")
    await h.settle()
    assert await h.ctrl.sync(f"{NS}/rs") is None
    assert h.ctrl.expectations.pending(f"{NS}/rs") is None


async def test_pod_recreated_under_the_same_name_counts_as_delete_and_create(h: Harness) -> None:
    """A relist can deliver a deleted-and-recreated pod as one update with a new uid."""
    h.create(roleset(roles=[role("worker", replicas=1, stateful=True)]))
    await h.converge()
    (pod,) = h.pods()
    key, pod_key = f"{NS}/rs", f"{NS}/{pod['metadata']['name']}"
    h.ctrl.expectations.expect_deletions(key, [pod_key])
    h.ctrl.expectations.expect_creations(key, 1)
    recreated = {**pod, "metadata": {**pod["metadata"], "uid": "new-uid", "resourceVersion": "999999"}}
    h.ctrl._pod_updated(pod, recreated)
    assert h.ctrl.expectations.satisfied(key)


async def test_role_level_pod_groups_per_instance(h: Harness) -> None:
    from controller.roleset.scheduling import SCHEDULERS

    h.client.seed(CUSTOM_RESOURCE_DEFINITIONS, {"metadata": {"name": "podgroups.scheduling.volcano.sh"}})
    await h.until(lambda: h.ctrl._pod_group_store(SCHEDULERS["volcanoSchedulingStrategy"]) is not None)
    strategy = {"volcanoSchedulingStrategy": {"queue": "gpu"}}
    h.create(roleset(roles=[role("worker", replicas=2, podGroupSize=2, schedulingStrategy=strategy)]))
    await h.converge()
    groups = sorted({p["metadata"]["labels"][L.PODSET_NAME_LABEL] for p in h.pods()})
    pgs = h.client.objects(SCHEDULERS["volcanoSchedulingStrategy"].resource, NS)
    assert sorted(pg["metadata"]["name"] for pg in pgs) == groups
    assert all(pg["spec"] == {"queue": "gpu", "minMember": 2} for pg in pgs)
    for p in h.pods():
        group = p["metadata"]["labels"][L.PODSET_NAME_LABEL]
        assert p["metadata"]["annotations"]["scheduling.k8s.io/group-name"] == group
    # Scale down: the PodGroup of the removed group goes too.
    h.update_spec(lambda s: s["roles"][0].__setitem__("replicas", 1))
    await h.converge()
    assert len(h.client.objects(SCHEDULERS["volcanoSchedulingStrategy"].resource, NS)) == 1


def deleted_total(role_name: str, reason: str) -> float:
    from controller.runtime.metrics import REGISTRY

    value = REGISTRY.get_sample_value(
        "stormservice_roleset_pods_deleted_total", {"role": role_name, "reason": reason}
    )
    return value or 0.0


async def test_pods_deleted_metric_by_role_and_reason(h: Harness) -> None:
    h.create(roleset(roles=[role("mdel", replicas=3), role("mgone", replicas=2)]))
    await h.converge()
    before = {
        (r, why): deleted_total(r, why)
        for r in ("mdel", "mgone")
        for why in ("scale-down", "terminated", "role-removed", "rollout")
    }
    # Scale down by two, one pod fails, a role is removed.
    h.update_spec(lambda s: s["roles"][0].__setitem__("replicas", 1))
    await h.converge()
    (survivor,) = h.pods("mdel")
    status = dict(survivor.get("status") or {})
    status["phase"] = "Failed"
    h.client.set_status(PODS, NS, survivor["metadata"]["name"], status)
    await h.sync()  # (converge would first mark it Running again, as kwok does for new pods)
    await h.converge()
    h.update_spec(lambda s: s.__setitem__("roles", [s["roles"][0]]))
    await h.converge()
    delta = {k: deleted_total(*k) - v for k, v in before.items()}
    assert delta == {
        ("mdel", "scale-down"): 2,
        ("mdel", "terminated"): 1,
        ("mdel", "role-removed"): 0,
        ("mdel", "rollout"): 0,
        ("mgone", "scale-down"): 0,
        ("mgone", "terminated"): 0,
        ("mgone", "role-removed"): 2,
        ("mgone", "rollout"): 0,
    }
    # Each count is one successful DELETE: the metric matches what reached the API server.
    deletes = [a for a in h.client.writes() if a.verb == "delete" and a.resource == "pods"]
    assert len(deletes) == 5


async def test_failed_delete_is_not_counted(h: Harness) -> None:
    h.create(roleset(roles=[role("mfail", replicas=2)]))
    await h.converge()
    before = deleted_total("mfail", "scale-down")
    h.update_spec(lambda s: s["roles"][0].__setitem__("replicas", 1))
    h.client.inject_error("delete", "pods", ServerError(500, "InternalError", "boom"), times=1)
    with pytest.raises(SyncError):
        await h.sync()
    assert deleted_total("mfail", "scale-down") == before
    await h.converge()
    assert deleted_total("mfail", "scale-down") - before == 1


async def test_lost_member_of_an_in_place_updated_group_rejoins_its_group(h: Harness) -> None:
    """A group updated in place keeps its names (they carry the old hash); a member lost later
    is replaced under the group's own name, group label and leader, not as a new group."""
    strategy = {"type": "InPlaceIfPossible", "maxUnavailable": 1}
    h.create(roleset(roles=[role("worker", replicas=1, podGroupSize=2, updateStrategy=strategy)]))
    await h.converge()
    before = {p["metadata"]["name"]: p for p in h.pods()}
    (group,) = {p["metadata"]["labels"][L.PODSET_NAME_LABEL] for p in before.values()}
    h.update_spec(lambda s: s["roles"][0]["template"]["spec"]["containers"][0].__setitem__("image", "img:2"))
    new_hash = template_hash(h.get()["spec"]["roles"][0]["template"])
    for _ in range(10):
        await h.sync()
        for p in h.pods():
            if p["metadata"]["annotations"].get(L.INPLACE_TARGET_HASH_ANNOTATION):
                h.set_ready(p, image_id="id-new-" + p["metadata"]["name"])
    assert {p["metadata"]["name"] for p in h.pods()} == set(before)
    assert all(p["metadata"]["labels"][L.ROLE_TEMPLATE_HASH_LABEL] == new_hash for p in h.pods())

    lost = next(p for p in before.values() if p["metadata"]["labels"][L.POD_GROUP_INDEX_LABEL] == "1")
    await h.client.delete(PODS, NS, lost["metadata"]["name"])
    await h.converge()
    pods = {p["metadata"]["name"]: p for p in h.pods()}
    assert set(pods) == set(before), "the member comes back under its group's name"
    back = pods[lost["metadata"]["name"]]
    assert back["metadata"]["uid"] != lost["metadata"]["uid"]
    assert back["metadata"]["labels"][L.PODSET_NAME_LABEL] == group
    assert back["metadata"]["labels"][L.ROLE_TEMPLATE_HASH_LABEL] == new_hash
    assert back["spec"]["containers"][0]["image"] == "img:2"
    env = {e["name"]: e.get("value") for e in back["spec"]["containers"][0]["env"]}
    leader = next(p for p in before.values() if p["metadata"]["labels"][L.POD_GROUP_INDEX_LABEL] == "0")
    assert env[L.ENV_PODSET_NAME] == group
    assert env[L.ENV_LEADER_ADDRESS].split(".")[0] == leader["metadata"]["name"]


async def test_name_held_by_a_pod_of_another_owner_is_reported(h: Harness) -> None:
    """A fixed pod name taken by someone else's pod never frees itself by an event of ours:
    the failed create must show in ReplicaFailure and back off, not be dropped silently."""
    from controller.roleset import naming

    spec_role = role("decode", replicas=1, stateful=True)
    h.create(roleset(roles=[spec_role]))
    await h.settle()
    name = naming.stateful_pod_name("rs", "decode", template_hash(spec_role["template"]), 0)
    h.client.seed(
        PODS,
        {"metadata": {"name": name, "namespace": NS}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
    )
    # Not labelled for us, so never in our cache: sync without waiting for it to show.
    with pytest.raises(SyncError):
        await h.ctrl.sync(f"{NS}/rs")
    failure = h.condition("ReplicaFailure")
    assert failure is not None and failure["reason"] == "FailedCreate", failure
    assert name in failure.get("message", "")
    assert "FailedCreate" in h.recorder.reasons()
    assert h.ctrl.expectations.satisfied(f"{NS}/rs")


async def test_creations_seen_during_a_claim_do_not_satisfy_a_stale_pod_list(h: Harness) -> None:
    """Scale 3 -> 5: the first pass creates 2 pods; one pod is relabelled to another RoleSet; the
    second pass releases it (an API call) and the 2 creations reach the cache while it waits.
    Acting on the pod list read before that wait would create 3 more (7 pods for 5 replicas)."""
    h.create(roleset(roles=[role("worker", replicas=3)]))
    await h.converge()
    key = f"{NS}/rs"
    first_pass_pods = [copy.deepcopy(p) for p in h.pods()[:2]]
    h.update_spec(lambda spec: spec["roles"][0].__setitem__("replicas", 5))
    # What the first pass did: 2 creations, not yet seen by the cache.
    h.ctrl.expectations.expect_creations(key, 2)
    relabelled = h.pods()[0]["metadata"]["name"]
    await h.client.patch(PODS, NS, relabelled, {"metadata": {"labels": {L.ROLESET_NAME_LABEL: "other"}}})
    await h.settle()

    real_patch = h.client.patch
    delivered = False

    async def patch_then_deliver_creations(*args: Any, **kwargs: Any) -> Any:
        nonlocal delivered
        result = await real_patch(*args, **kwargs)
        if args[0] is PODS and not delivered:
            delivered = True
            for i, pod in enumerate(first_pass_pods):
                body = copy.deepcopy(pod)
                meta = body["metadata"]
                meta["name"] = f"rs-worker-first-pass-{i}"
                for field in ("uid", "resourceVersion", "creationTimestamp"):
                    meta.pop(field, None)
                body.pop("status", None)
                await h.client.create(PODS, NS, body)
            await h.settle()
        return result

    h.client.patch = patch_then_deliver_creations  # type: ignore[method-assign]
    await h.ctrl.sync(key)  # releases the relabelled pod; the creations arrive meanwhile
    h.client.patch = real_patch  # type: ignore[method-assign]
    assert delivered

    def owned() -> int:
        return sum(1 for p in h.pods() if L.labels_of(p).get(L.ROLESET_NAME_LABEL) == "rs")

    assert owned() <= 5
    await h.converge()
    assert owned() == 5
    deleted = [a for a in h.client.writes() if a.verb == "delete" and a.resource == "pods"]
    assert deleted == []


def _dry_runs(h: Harness) -> int:
    return sum(1 for a in h.client.actions if a.verb == "create-dry-run" and a.resource == "pods")


INVALID = Invalid(
    422,
    "Invalid",
    'Pod "rs-worker-x" is invalid: spec.containers[0].name: Invalid value: "Engine_1": a lowercase RFC 1123 label must ...',
)


@pytest.mark.parametrize("stateful", [False, True])
async def test_a_template_the_api_server_rejects_replaces_nothing(h: Harness, stateful: bool) -> None:
    strategy = {"maxSurge": 0, "maxUnavailable": 1}
    h.create(roleset(roles=[role("worker", replicas=3, stateful=stateful, updateStrategy=strategy)]))
    await h.converge()
    before = {p["metadata"]["uid"] for p in h.pods()}
    assert _dry_runs(h) == 0  # nothing to replace: the first create was the check
    h.client.clear_actions()
    h.client.inject_error("create-dry-run", "pods", INVALID)
    h.update_spec(
        lambda s: s["roles"][0]["template"]["spec"]["containers"][0].__setitem__("name", "Engine_1")
    )
    for _ in range(3):
        await h.sync()
    assert h.client.writes() == [a for a in h.client.writes() if a.resource == "rolesets/status"]
    assert {p["metadata"]["uid"] for p in h.pods()} == before
    assert _dry_runs(h) == 1, "asked once for this template"
    failure = h.condition("ReplicaFailure")
    assert failure is not None and (failure["status"], failure["reason"]) == ("True", "InvalidPodTemplate")
    assert "Engine_1" in failure["message"] and "role worker" in failure["message"]
    progressing = h.condition("Progressing")
    assert progressing is not None and (progressing["status"], progressing["reason"]) == (
        "False",
        "RolloutBlocked",
    )
    assert h.recorder.reasons().count("InvalidPodTemplate") == 1
    # A new template is asked about again, and rolls.
    h.update_spec(lambda s: s["roles"][0]["template"]["spec"]["containers"][0].__setitem__("name", "engine"))
    await h.converge()
    assert _dry_runs(h) == 2
    assert h.condition("ReplicaFailure") is None
    assert not {p["metadata"]["uid"] for p in h.pods()} & before


def _pod_creates(h: Harness) -> int:
    return sum(1 for a in h.client.actions if a.verb == "create" and a.resource == "pods")


@pytest.mark.parametrize(
    ("plan", "spec_change", "dry_runs"),
    [
        ("a new RoleSet", None, 0),
        ("a scale-up", lambda s: s["roles"][0].__setitem__("replicas", 4), 0),
        (
            "a rollout (pods replaced)",
            lambda s: s["roles"][0]["template"]["spec"]["containers"][0].__setitem__("image", "img:2"),
            1,
        ),
    ],
)
async def test_a_dry_run_only_where_pods_would_be_replaced(
    h: Harness, plan: str, spec_change: Any, dry_runs: int
) -> None:
    strategy = {"maxSurge": 0, "maxUnavailable": 1}
    h.create(roleset(roles=[role("worker", replicas=2, updateStrategy=strategy)]))
    await h.converge()
    if spec_change is not None:
        h.client.clear_actions()
        h.update_spec(spec_change)
        await h.converge()
    assert _dry_runs(h) == dry_runs, plan
    assert h.condition("ReplicaFailure") is None


async def test_a_new_role_whose_first_pod_is_refused_is_held_as_after_a_dry_run(h: Harness) -> None:
    """No dry run before creating into an empty role: the first create asks the API server, and
    its refusal holds the role as a refused dry run does (one request, InvalidPodTemplate, no
    retries); the other role is created as usual."""
    h.create(
        roleset(
            roles=[
                role("prefill", replicas=3),
                role("decode", replicas=3, image="img:bad"),
            ]
        )
    )
    real_create = h.client.create

    async def refuse_bad_image(resource: Any, namespace: str | None, body: Any, **kw: Any) -> Any:
        containers = (body.get("spec") or {}).get("containers") or [{}]
        if resource == PODS and containers[0].get("image") == "img:bad":
            await real_create(resource, namespace, body, dry_run=True)  # recorded as an attempt
            raise INVALID
        return await real_create(resource, namespace, body, **kw)

    h.client.create = refuse_bad_image  # type: ignore[method-assign]
    await h.converge()
    assert sum(1 for p in h.pods() if L.labels_of(p).get(L.ROLE_NAME_LABEL) == "prefill") == 3
    assert not [p for p in h.pods() if L.labels_of(p).get(L.ROLE_NAME_LABEL) == "decode"]
    refused_attempts = _dry_runs(h)
    # Slow start: prefill's 1, prefill's 2, then decode's 3 together; nothing after that batch.
    assert refused_attempts == 3
    for _ in range(3):
        assert await h.sync() is None  # nothing to retry until the template changes
    assert _dry_runs(h) == refused_attempts
    failure = h.condition("ReplicaFailure")
    assert failure is not None and (failure["status"], failure["reason"]) == ("True", "InvalidPodTemplate")
    assert "role decode" in failure["message"] and "Engine_1" in failure["message"]
    progressing = h.condition("Progressing")
    assert progressing is not None and (progressing["status"], progressing["reason"]) == (
        "False",
        "RolloutBlocked",
    )
    assert h.recorder.reasons().count("InvalidPodTemplate") == 1
    assert "FailedCreate" not in h.recorder.reasons()
    # A new template is tried again, and its pods are made.
    h.client.create = real_create  # type: ignore[method-assign]
    h.update_spec(lambda s: s["roles"][1]["template"]["spec"]["containers"][0].__setitem__("image", "img:2"))
    await h.converge()
    assert sum(1 for p in h.pods() if L.labels_of(p).get(L.ROLE_NAME_LABEL) == "decode") == 3
    assert h.condition("ReplicaFailure") is None


async def test_a_dry_run_that_fails_for_another_reason_holds_the_rollout_and_retries(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=2, updateStrategy={"maxSurge": 0, "maxUnavailable": 1})]))
    await h.converge()
    before = {p["metadata"]["uid"] for p in h.pods()}
    h.client.inject_error("create-dry-run", "pods", ServerError(503, "ServiceUnavailable", "etcd is away"))
    h.update_spec(lambda s: s["roles"][0]["template"]["spec"]["containers"][0].__setitem__("image", "img:2"))
    with pytest.raises(SyncError):
        await h.sync()
    assert {p["metadata"]["uid"] for p in h.pods()} == before
    await h.converge()  # the retry asks again and rolls
    assert not {p["metadata"]["uid"] for p in h.pods()} & before


def _namespace_terminating() -> Forbidden:
    return Forbidden(
        403,
        "Forbidden",
        'pods "rs-worker-x" is forbidden: unable to create new content in namespace ns because it is being terminated',
        causes=[
            StatusCause("NamespaceTerminating", "namespace ns is being terminated", "metadata.namespace")
        ],
    )


async def test_creates_in_a_namespace_being_deleted_are_skipped_quietly(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=3)]))
    h.client.inject_error("create", "pods", _namespace_terminating(), times=10)
    assert await h.sync() is None  # no error: nothing to retry, the namespace goes
    assert h.condition("ReplicaFailure") is None
    assert "FailedCreate" not in h.recorder.reasons()
    assert h.ctrl.expectations.satisfied(f"{NS}/rs")
    creates = [a for a in h.client.actions if a.verb == "create" and a.resource == "pods"]
    assert len(creates) == 1, "the first refusal stops the batch"


async def test_stateless_pods_are_named_here_with_their_name_as_hostname(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=3)]))
    # A random name taken: another one is tried, as the API server does for generateName.
    h.client.inject_error("create", "pods", AlreadyExists(409, "AlreadyExists", 'pods "x" already exists'))
    await h.converge()
    pods = h.pods()
    assert len(pods) == 3
    for p in pods:
        assert p["spec"]["hostname"] == p["metadata"]["name"]
        assert p["metadata"]["name"].startswith("rs-worker-")
        assert p["spec"]["subdomain"] == "ss"
    creates = [a for a in h.client.actions if a.verb == "create" and a.resource == "pods"]
    assert len(creates) == 4
    assert h.condition("ReplicaFailure") is None
