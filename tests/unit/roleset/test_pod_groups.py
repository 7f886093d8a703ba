"""PodGroups on a FakeClient with real informers: derived from the cluster (a PodGroup cache),
so groups that are gone lose their PodGroups after a restart too; the Godel scheduler's keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from controller.roleset import labels as L
from controller.roleset.scheduling import SCHEDULERS, Scheduler
from controller.roleset.sync import SyncError
from controller.runtime.resources import CUSTOM_RESOURCE_DEFINITIONS, ROLESETS
from tests.unit.roleset.harness import NS, Harness, role, roleset

VOLCANO = SCHEDULERS["volcanoSchedulingStrategy"]
COSCHEDULING = SCHEDULERS["coschedulingSchedulingStrategy"]
GODEL = SCHEDULERS["godelSchedulingStrategy"]


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    await harness.start()
    yield harness
    await harness.stop()


async def install(h: Harness, sched: Scheduler) -> None:
    h.client.seed(CUSTOM_RESOURCE_DEFINITIONS, {"metadata": {"name": sched.crd_name}})
    await h.until(lambda: h.ctrl._pod_group_store(sched) is not None)


def pod_groups(h: Harness, sched: Scheduler) -> dict[str, dict[str, Any]]:
    return {pg["metadata"]["name"]: pg for pg in h.client.objects(sched.resource, NS)}


def grouped(replicas: int, strategy: dict[str, Any], size: int = 2) -> dict[str, Any]:
    return role("worker", replicas=replicas, podGroupSize=size, schedulingStrategy=strategy)


async def test_pod_groups_of_removed_groups_are_deleted_after_a_restart(h: Harness) -> None:
    await install(h, VOLCANO)
    strategy = {"volcanoSchedulingStrategy": {"queue": "gpu"}}
    h.create(roleset(roles=[grouped(3, strategy)]))
    await h.converge()
    before = pod_groups(h, VOLCANO)
    assert len(before) == 3
    for pg in before.values():
        assert pg["metadata"]["labels"] == {L.ROLESET_NAME_LABEL: "rs"}
        assert pg["metadata"]["ownerReferences"][0]["uid"] == h.get()["metadata"]["uid"]
    await h.stop()

    # A new controller process: nothing in memory about the PodGroups it wrote.
    h2 = Harness(client=h.client)
    await h2.start()
    try:
        await h2.until(lambda: h2.ctrl._pod_group_store(VOLCANO) is not None)
        h2.update_spec(lambda s: s["roles"][0].__setitem__("replicas", 1))
        await h2.converge()
        groups = {p["metadata"]["labels"][L.PODSET_NAME_LABEL] for p in h2.pods()}
        assert len(groups) == 1
        assert set(pod_groups(h2, VOLCANO)) == groups
        deleted = [a for a in h2.client.writes() if a.verb == "delete" and a.resource == "podgroups"]
        assert len(deleted) == 2
    finally:
        await h2.stop()


async def test_pod_groups_left_while_the_controller_was_down_are_deleted(h: Harness) -> None:
    await install(h, VOLCANO)
    strategy = {"volcanoSchedulingStrategy": {"queue": "gpu"}}
    h.create(roleset(roles=[grouped(2, strategy)]))
    await h.converge()
    await h.stop()
    # The spec changes while no controller runs: the strategy is dropped altogether.
    obj = h.get()
    obj["spec"]["roles"][0].pop("schedulingStrategy")
    h.client.seed(ROLESETS, obj)
    h2 = Harness(client=h.client)
    await h2.start()
    try:
        await h2.until(lambda: h2.ctrl._pod_group_store(VOLCANO) is not None)
        await h2.converge()
        assert pod_groups(h2, VOLCANO) == {}
    finally:
        await h2.stop()


async def test_switching_scheduler_deletes_the_old_schedulers_pod_groups(h: Harness) -> None:
    await install(h, VOLCANO)
    await install(h, COSCHEDULING)
    h.create(roleset(roles=[grouped(2, {"volcanoSchedulingStrategy": {"queue": "gpu"}})]))
    await h.converge()
    assert len(pod_groups(h, VOLCANO)) == 2
    h.update_spec(
        lambda s: s["roles"][0].__setitem__(
            "schedulingStrategy", {"coschedulingSchedulingStrategy": {"scheduleTimeoutSeconds": 30}}
        )
    )
    await h.converge()
    assert pod_groups(h, VOLCANO) == {}
    assert len(pod_groups(h, COSCHEDULING)) == 2


async def test_foreign_pod_groups_are_never_touched(h: Harness) -> None:
    await install(h, VOLCANO)
    foreign_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "other", "controller": True}
    h.client.seed(
        VOLCANO.resource,
        {
            "apiVersion": VOLCANO.resource.api_version,
            "kind": "PodGroup",
            "metadata": {
                "name": "rs-stray",
                "namespace": NS,
                "labels": {L.ROLESET_NAME_LABEL: "rs"},
                "ownerReferences": [foreign_ref],
            },
            "spec": {"minMember": 9},
        },
    )
    h.create(roleset(roles=[grouped(1, {"volcanoSchedulingStrategy": {}})]))
    await h.converge()
    stray = pod_groups(h, VOLCANO)["rs-stray"]
    assert stray["spec"] == {"minMember": 9}
    assert not [a for a in h.client.writes() if a.name == "rs-stray"]
    assert len(pod_groups(h, VOLCANO)) == 2


async def test_name_taken_by_a_foreign_pod_group_is_reported(h: Harness) -> None:
    await install(h, COSCHEDULING)
    h.client.seed(
        COSCHEDULING.resource,
        {
            "apiVersion": COSCHEDULING.resource.api_version,
            "kind": "PodGroup",
            "metadata": {"name": "rs", "namespace": NS},  # unlabelled: not in the cache
            "spec": {"minMember": 1},
        },
    )
    h.create(
        roleset(roles=[role("worker", replicas=2)], schedulingStrategy={"coschedulingSchedulingStrategy": {}})
    )
    await h.settle()
    with pytest.raises(SyncError):
        for _ in range(5):
            h.mark_all_ready()
            await h.sync()
    cond = h.condition("PodGroupSynced")
    assert cond is not None and cond["reason"] == "PodGroupSyncFailed"
    assert "not controlled by this RoleSet" in cond["message"]
    assert pod_groups(h, COSCHEDULING)["rs"]["spec"] == {"minMember": 1}


async def test_an_unlabelled_pod_group_of_ours_is_labelled_and_then_managed(h: Harness) -> None:
    """A PodGroup we own that lacks the label the cache selects on (written by an older
    release): labelled on the first pass, so that from then on the cache sees it."""
    await install(h, COSCHEDULING)
    h.create(
        roleset(roles=[role("worker", replicas=2)], schedulingStrategy={"coschedulingSchedulingStrategy": {}})
    )
    await h.settle()
    rs = h.get()
    h.client.seed(
        COSCHEDULING.resource,
        {
            "apiVersion": COSCHEDULING.resource.api_version,
            "kind": "PodGroup",
            "metadata": {
                "name": "rs",
                "namespace": NS,
                "ownerReferences": [
                    {
                        "apiVersion": rs["apiVersion"],
                        "kind": "RoleSet",
                        "name": "rs",
                        "uid": rs["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {"minMember": 1},
        },
    )
    await h.converge()
    pg = pod_groups(h, COSCHEDULING)["rs"]
    assert pg["metadata"]["labels"] == {L.ROLESET_NAME_LABEL: "rs"}
    assert pg["spec"] == {"minMember": 2}
    assert h.ctrl._pod_group_store(COSCHEDULING) is not None
    assert h.ctrl.pod_group_informers["coschedulingSchedulingStrategy"].store.get(f"{NS}/rs") is not None
    # Dropping the strategy now deletes it: it is known from the cluster.
    h.update_spec(lambda s: s.pop("schedulingStrategy"))
    await h.converge()
    assert pod_groups(h, COSCHEDULING) == {}


async def test_idle_roleset_with_pod_groups_makes_no_writes(h: Harness) -> None:
    await install(h, VOLCANO)
    h.create(roleset(roles=[grouped(2, {"volcanoSchedulingStrategy": {"queue": "gpu"}})]))
    await h.converge()
    # A scheduler adds status and defaults; that is no reason to write.
    for name, pg in pod_groups(h, VOLCANO).items():
        pg["spec"]["minResources"] = {"cpu": "1"}
        pg["status"] = {"phase": "Running"}
        h.client.seed(VOLCANO.resource, pg)
        del name
    await h.settle()
    h.client.clear_actions()
    for _ in range(3):
        await h.sync()
    assert h.client.writes() == []


async def test_godel_pod_group_and_pod_keys(h: Harness) -> None:
    await install(h, GODEL)
    strategy = {"godelSchedulingStrategy": {"minMember": 2, "scheduleTimeoutSeconds": 60}}
    h.create(
        roleset(roles=[role("worker", replicas=2), role("router", replicas=1)], schedulingStrategy=strategy)
    )
    await h.converge()
    pgs = pod_groups(h, GODEL)
    assert list(pgs) == ["rs"]
    pg = pgs["rs"]
    assert pg["apiVersion"] == "scheduling.godel.kubewharf.io/v1alpha1" and pg["kind"] == "PodGroup"
    assert pg["spec"] == {"minMember": 2, "scheduleTimeoutSeconds": 60}
    assert pg["metadata"]["labels"] == {L.ROLESET_NAME_LABEL: "rs"}
    assert pg["metadata"]["ownerReferences"][0]["uid"] == h.get()["metadata"]["uid"]
    assert len(h.pods()) == 3
    for p in h.pods():
        assert p["metadata"]["labels"]["godel.bytedance.com/pod-group-name"] == "rs"
        assert p["metadata"]["annotations"]["godel.bytedance.com/pod-group-name"] == "rs"
    cond = h.condition("PodGroupSynced")
    assert cond is not None and cond["status"] == "True"
    assert "scheduling.godel.kubewharf.io" in cond["message"]

    # Without minMember, it defaults to the pods of the RoleSet.
    h.update_spec(lambda s: s["schedulingStrategy"]["godelSchedulingStrategy"].pop("minMember"))
    await h.converge()
    assert pod_groups(h, GODEL)["rs"]["spec"]["minMember"] == 3


async def test_godel_role_level_pod_groups_per_group(h: Harness) -> None:
    await install(h, GODEL)
    h.create(roleset(roles=[grouped(2, {"godelSchedulingStrategy": {}}, size=3)]))
    await h.converge()
    groups = sorted({p["metadata"]["labels"][L.PODSET_NAME_LABEL] for p in h.pods()})
    pgs = pod_groups(h, GODEL)
    assert sorted(pgs) == groups
    assert all(pg["spec"] == {"minMember": 3} for pg in pgs.values())
    for p in h.pods():
        group = p["metadata"]["labels"][L.PODSET_NAME_LABEL]
        assert p["metadata"]["annotations"]["godel.bytedance.com/pod-group-name"] == group
        assert p["metadata"]["labels"]["godel.bytedance.com/pod-group-name"] == group


async def test_uninstalled_scheduler_stops_its_informer_and_a_reinstall_resumes(h: Harness) -> None:
    await install(h, VOLCANO)
    strategy = {"volcanoSchedulingStrategy": {"queue": "gpu"}}
    h.create(roleset(roles=[grouped(2, strategy)]))
    await h.converge()
    assert len(pod_groups(h, VOLCANO)) == 2
    first = h.ctrl.pod_group_informers[VOLCANO.strategy_key]

    # Uninstalled: the API server deletes the CRD's objects, then the CRD.
    for name in list(pod_groups(h, VOLCANO)):
        await h.client.delete(VOLCANO.resource, NS, name)
    await h.client.delete(CUSTOM_RESOURCE_DEFINITIONS, None, VOLCANO.crd_name)
    await h.until(lambda: VOLCANO.strategy_key not in h.ctrl.pod_group_informers)
    assert first not in h.factory.informers, "no informer left failing on a resource not served"
    await h.converge()
    cond = h.condition("PodGroupSynced")
    assert cond is not None and cond["status"] == "False"

    await install(h, VOLCANO)
    second = h.ctrl.pod_group_informers[VOLCANO.strategy_key]
    assert second is not first
    await h.converge()
    assert len(pod_groups(h, VOLCANO)) == 2
