"""The StormService sync against a FakeClient with real informers and the controller's handlers."""

from __future__ import annotations

from typing import Any

import pytest

from controller.runtime.client import Obj, PatchType
from controller.runtime.errors import ApiError, Forbidden, Invalid, ServerError, StatusCause
from controller.runtime.fake import FakeClient
from controller.runtime.resources import CONTROLLER_REVISIONS, ROLESETS, SERVICES, STORMSERVICES
from controller.runtime.revision import hash_revision_data
from controller.stormservice.revisions import revision_data
from controller.stormservice.rolesetcontrol import FakeRoleSetControl, KubeRoleSetControl
from tests.unit.stormservice.harness import API, NS, Env, P, storm

pytestmark = pytest.mark.timeout(30)


def names(objs: list[dict[str, Any]]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in objs)


def revision_of(rs: dict[str, Any]) -> str:
    return str(rs["metadata"]["labels"]["storm-service-revision"])


def image_of(rs: dict[str, Any], role: str = "prefill") -> str:
    r = next(r for r in rs["spec"]["roles"] if r["name"] == role)
    return str(r["template"]["spec"]["containers"][0]["image"])


async def converge(env: Env, passes: int = 30) -> None:
    """Sync and let every RoleSet become ready, until nothing changes."""
    for _ in range(passes):
        before = env.client.resource_version
        await env.sync()
        env.all_ready()
        await env.sync()
        if env.client.resource_version == before:
            return
    raise AssertionError("did not converge")


async def test_new_stormservice_gets_revision_service_and_rolesets() -> None:
    async with Env() as env:
        ss = env.seed(STORMSERVICES, storm(replicas=3))
        await env.sync()

        [rev] = env.revisions()
        data = revision_data(storm()["spec"]["template"])
        hash_ = hash_revision_data(data, 0)
        assert rev["metadata"]["name"] == f"llm-{hash_}"
        assert rev["metadata"]["labels"] == {"name": "llm", "controller.kubernetes.io/hash": hash_}
        assert rev["data"] == data
        assert rev["revision"] == 1
        assert rev["metadata"]["ownerReferences"][0]["uid"] == ss["metadata"]["uid"]

        svc = env.client.get_object(SERVICES, NS, "llm")
        assert svc is not None
        assert svc["spec"] == {
            "clusterIP": "None",
            "selector": {"storm-service-name": "llm"},
            "publishNotReadyAddresses": True,
        }
        assert svc["metadata"]["ownerReferences"][0]["uid"] == ss["metadata"]["uid"]

        rolesets = env.rolesets()
        assert len(rolesets) == 3
        for rs in rolesets:
            meta = rs["metadata"]
            assert meta["name"].startswith("llm-roleset-")
            assert meta["labels"] == {
                "app": "llm",
                "storm-service-name": "llm",
                "storm-service-revision": rev["metadata"]["name"],
            }
            assert meta["annotations"][P + "revision"] == rev["metadata"]["name"]
            assert meta["annotations"][P + "role-revision.prefill"] == "1"
            assert meta["annotations"][P + "role-revision-name.decode"] == rev["metadata"]["name"]
            assert meta["annotations"]["team"] == "infra"
            assert meta["ownerReferences"] == [
                {
                    "apiVersion": API,
                    "kind": "StormService",
                    "name": "llm",
                    "uid": ss["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
            assert rs["spec"] == storm()["spec"]["template"]["spec"]
        assert sorted(rs["metadata"]["annotations"][P + "roleset-index"] for rs in rolesets) == [
            "0",
            "1",
            "2",
        ]

        status = env.status()
        assert status["observedGeneration"] == 1
        assert (status["currentRevision"], status["updateRevision"]) == (rev["metadata"]["name"],) * 2
        assert status["scalingTargetSelector"] == "storm-service-name=llm"
        assert status["collisionCount"] == 0
        assert env.recorder.reasons().count("SuccessfulCreate") == 3
        assert "HeadlessServiceCreated" in env.recorder.reasons()
        assert ("llm", "Normal", "ScalingRoleSets", "Scaling up from 0 to 3 RoleSets") in env.recorder.events


async def test_expectations_stop_a_second_pass_from_creating_again() -> None:
    control = FakeRoleSetControl()  # creations the cache never sees: a lagging watch
    async with Env(control=control) as env:
        env.seed(STORMSERVICES, storm(replicas=3))
        await env.sync()
        assert len(control.created) == 3
        await env.sync()
        assert await env.ctrl.sync(f"{NS}/llm") == 30.0  # waits; a fallback requeue in case of a lost event
        assert len(control.created) == 3
        key = f"{NS}/llm"
        assert not env.ctrl.expectations.satisfied(key)
        for _ in range(3):  # what the informer reports once the creations show up
            env.ctrl.expectations.creation_observed(key)
        await env.sync()
        assert len(control.created) == 6  # the cache still shows none: acting again is now right


async def test_write_fence_waits_for_the_cache_after_an_update() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, storm(replicas=1))
        await converge(env)
        [rs] = env.rolesets()
        control = FakeRoleSetControl()  # patches the cache will never see
        env.ctrl.syncer.control = control

        def scale(spec: dict[str, Any]) -> None:
            spec["template"]["spec"]["roles"][0]["replicas"] = 4

        await env.edit(scale)
        await env.sync()
        await env.sync()
        assert control.actions == [("patch", rs["metadata"]["name"])]  # not patched again from a stale copy
        assert len(env.ctrl.syncer.fence) == 1
        env.report(rs, ready=False)  # any newer version of the RoleSet lifts the fence
        await env.sync()
        assert control.actions == [("patch", rs["metadata"]["name"])] * 2
        assert len(env.ctrl.syncer.fence) == 1


async def test_status_ready_and_written_only_when_changed() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, storm(replicas=2))
        await env.sync()
        ready = env.condition("Ready")
        assert ready is not None and ready["status"] == "False"
        env.all_ready()
        await env.sync()
        ready = env.condition("Ready")
        assert ready is not None
        assert (ready["status"], ready["reason"]) == ("True", "AllRoleSetsReady")
        status = env.status()
        assert (status["readyReplicas"], status["updatedReplicas"], status["updatedReadyReplicas"]) == (
            2,
            2,
            2,
        )
        assert status["roleStatuses"] == [
            {
                "name": "decode",
                "replicas": 2,
                "readyReplicas": 2,
                "notReadyReplicas": 0,
                "updatedReplicas": 2,
                "updatedReadyReplicas": 2,
            },
            {
                "name": "prefill",
                "replicas": 4,
                "readyReplicas": 4,
                "notReadyReplicas": 0,
                "updatedReplicas": 4,
                "updatedReadyReplicas": 4,
            },
        ]
        env.client.clear_actions()
        await env.sync()
        await env.sync()
        assert env.client.writes() == []  # nothing new observed: nothing written


async def test_replicas_only_change_scales_roles_in_place() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, storm(replicas=2, prefill=2))
        await converge(env)
        before = {rs["metadata"]["uid"]: rs["metadata"]["name"] for rs in env.rolesets()}
        revisions = names(env.revisions())
        env.client.clear_actions()

        def scale_prefill(spec: dict[str, Any]) -> None:
            spec["template"]["spec"]["roles"][0]["replicas"] = 5

        await env.edit(scale_prefill)
        await env.sync()
        assert names(env.revisions()) == revisions  # no new revision
        assert {rs["metadata"]["uid"]: rs["metadata"]["name"] for rs in env.rolesets()} == before
        assert [
            r["prefill"]
            for r in [{x["name"]: x["replicas"] for x in rs["spec"]["roles"]} for rs in env.rolesets()]
        ] == [5, 5]
        writes = env.client.writes()
        assert {w.verb for w in writes if w.resource == "rolesets"} == {"patch"}
        patches = [r for r in env.client.requests if r.verb == "patch" and r.resource == ROLESETS]
        assert all(r.options["patch_type"] == "json" for r in patches)
        assert patches[0].body == [
            {"op": "test", "path": "/spec/roles/0/name", "value": "prefill"},
            {"op": "add", "path": "/spec/roles/0/replicas", "value": 5},
        ]
        assert (
            "llm",
            "Normal",
            "ScaledRoles",
            f"Scaled roles of RoleSet {names(env.rolesets())[0]}: prefill=5",
        ) in env.recorder.events
        await converge(env)
        assert env.condition("Ready")["status"] == "True"  # type: ignore[index]


async def test_rolling_update_within_surge_and_availability() -> None:
    async with Env() as env:
        env.seed(
            STORMSERVICES,
            storm(replicas=3, strategy={"type": "RollingUpdate", "maxSurge": 1, "maxUnavailable": 0}),
        )
        await converge(env)
        old_rev = env.status()["currentRevision"]

        def upgrade(spec: dict[str, Any]) -> None:
            spec["template"]["spec"]["roles"][0]["template"]["spec"]["containers"][0]["image"] = "prefill:v2"

        await env.edit(upgrade)
        for _ in range(40):
            await env.sync()
            rolesets = env.rolesets()
            assert len(rolesets) <= 4
            ready = [
                rs
                for rs in rolesets
                if rs.get("status", {}).get("roles") and not rs["metadata"].get("deletionTimestamp")
            ]
            assert len(ready) >= 3
            # the world: newly created RoleSets become ready one pass later
            env.all_ready()
            if env.condition("Ready")["status"] == "True" and len(env.revisions()) == 2:  # type: ignore[index]
                await env.sync()
                break
        status = env.status()
        new_rev = status["updateRevision"]
        assert new_rev != old_rev
        assert status["currentRevision"] == new_rev
        assert [revision_of(rs) for rs in env.rolesets()] == [new_rev] * 3
        assert all(image_of(rs) == "prefill:v2" for rs in env.rolesets())
        # unique among live RoleSets (with a surge of one, at most index 3 is ever needed)
        indexes = [int(rs["metadata"]["annotations"][P + "roleset-index"]) for rs in env.rolesets()]
        assert len(set(indexes)) == 3 and max(indexes) <= 3
        # decode did not change: its role revision still points at revision 1
        assert {rs["metadata"]["annotations"][P + "role-revision.decode"] for rs in env.rolesets()} == {"1"}
        assert {rs["metadata"]["annotations"][P + "role-revision.prefill"] for rs in env.rolesets()} == {"2"}
        reasons = env.recorder.reasons()
        assert "RolloutStarted" in reasons
        assert "RolloutCompleted" in reasons
        assert reasons.count("SuccessfulDelete") == 3


async def test_rolling_update_unavailable_one_at_a_time() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, storm(replicas=3))  # AIBrix defaults: surge 0, unavailable 1
        await converge(env)

        def upgrade(spec: dict[str, Any]) -> None:
            spec["template"]["spec"]["roles"][1]["template"]["spec"]["containers"][0]["image"] = "decode:v2"

        await env.edit(upgrade)
        for _ in range(40):
            await env.sync()
            assert len(env.rolesets()) <= 3
            live = env.rolesets(live_only=True)
            assert sum(1 for rs in live if rs.get("status")) >= 2
            env.all_ready()
            if {image_of(rs, "decode") for rs in env.rolesets()} == {"decode:v2"} and len(
                env.rolesets()
            ) == 3:
                break
        await converge(env)
        assert env.condition("Ready")["status"] == "True"  # type: ignore[index]


async def test_inplace_update_keeps_roleset_names() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, storm(replicas=3, strategy={"type": "InPlaceUpdate"}))
        await converge(env)
        before = {
            rs["metadata"]["uid"]: (
                rs["metadata"]["name"],
                rs["metadata"]["annotations"][P + "roleset-index"],
            )
            for rs in env.rolesets()
        }

        def upgrade(spec: dict[str, Any]) -> None:
            spec["template"]["spec"]["roles"][0]["template"]["spec"]["containers"][0]["image"] = "prefill:v2"
            spec["template"]["metadata"]["labels"]["tier"] = "gold"

        await env.edit(upgrade)
        env.client.clear_actions()
        await env.sync()
        assert {w.verb for w in env.client.writes() if w.resource == "rolesets"} == {"patch"}
        after = {
            rs["metadata"]["uid"]: (
                rs["metadata"]["name"],
                rs["metadata"]["annotations"][P + "roleset-index"],
            )
            for rs in env.rolesets()
        }
        assert after == before
        new_rev = env.status()["updateRevision"]
        for rs in env.rolesets():
            assert revision_of(rs) == new_rev
            assert rs["metadata"]["annotations"][P + "revision"] == new_rev
            assert rs["metadata"]["labels"]["tier"] == "gold"
            assert image_of(rs) == "prefill:v2"
        assert env.recorder.reasons().count("SuccessfulUpdate") == 3
        await converge(env)
        assert env.status()["currentRevision"] == new_rev
        assert env.condition("Ready")["status"] == "True"  # type: ignore[index]


async def test_rollback_reuses_the_old_revision() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, storm(replicas=2))
        await converge(env)
        [v1] = env.revisions()

        def set_image(image: str) -> Any:
            def mutate(spec: dict[str, Any]) -> None:
                spec["template"]["spec"]["roles"][0]["template"]["spec"]["containers"][0]["image"] = image

            return mutate

        await env.edit(set_image("prefill:v2"))
        await converge(env)
        assert len(env.revisions()) == 2
        await env.edit(set_image("prefill:v1"))
        await converge(env)
        revisions = env.revisions()
        assert names(revisions) == sorted([v1["metadata"]["name"], revisions[0]["metadata"]["name"]])
        latest = revisions[-1]
        assert latest["metadata"]["name"] == v1["metadata"]["name"]
        assert latest["revision"] == 3  # renumbered, not re-created
        assert latest["metadata"]["uid"] == v1["metadata"]["uid"]
        assert {revision_of(rs) for rs in env.rolesets()} == {v1["metadata"]["name"]}
        assert env.status()["currentRevision"] == v1["metadata"]["name"]


async def test_history_is_truncated_to_the_limit() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, storm(replicas=1, history_limit=1))
        await converge(env)
        for image in ("v2", "v3", "v4"):

            def mutate(spec: dict[str, Any], image: str = image) -> None:
                spec["template"]["spec"]["roles"][0]["template"]["spec"]["containers"][0]["image"] = image

            await env.edit(mutate)
            await converge(env)
        revisions = env.revisions()
        assert [r["revision"] for r in revisions] == [3, 4]  # the live one and one of history
        assert env.status()["updateRevision"] == revisions[-1]["metadata"]["name"]


async def test_paused_scaling_keeps_proportion_and_creates_from_current() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, storm(replicas=4))
        await converge(env)
        current = env.status()["currentRevision"]

        def upgrade(spec: dict[str, Any]) -> None:
            spec["template"]["spec"]["roles"][0]["template"]["spec"]["containers"][0]["image"] = "prefill:v2"

        await env.edit(upgrade)
        # Roll until two of four are updated, then pause.
        for _ in range(20):
            await env.sync()
            env.all_ready()
            await env.settle()
            live = env.rolesets(live_only=True)
            if len(live) == 4 and sum(1 for rs in live if revision_of(rs) != current) == 2:
                break
        await env.edit(lambda spec: spec.update(paused=True))
        await env.sync()
        env.all_ready()
        await env.sync()
        counts = sorted(revision_of(rs) for rs in env.rolesets())
        assert len(counts) == 4 and counts.count(current) == 2
        await env.edit(lambda spec: spec.update(replicas=6))
        await env.sync()
        live = env.rolesets(live_only=True)
        assert len(live) == 6
        old = [rs for rs in live if revision_of(rs) == current]
        assert len(old) == 3
        assert all(image_of(rs) == "prefill:v1" for rs in old)  # created from the current revision
        assert sorted(int(rs["metadata"]["annotations"][P + "roleset-index"]) for rs in live) == list(
            range(6)
        )
        # paused: no rollout step
        env.all_ready()
        await env.sync()
        await env.sync()
        assert len([rs for rs in env.rolesets() if revision_of(rs) == current]) == 3
        status = env.status()
        progressing = env.condition("Progressing")
        assert progressing is not None and (progressing["status"], progressing["reason"]) == (
            "Unknown",
            "Paused",
        )
        assert status["currentRevision"] == current
        # resume: the rollout finishes
        await env.edit(lambda spec: spec.update(paused=False))
        await converge(env)
        assert {revision_of(rs) for rs in env.rolesets()} == {env.status()["updateRevision"]}
        assert len(env.rolesets()) == 6


async def test_scale_down_deletes_not_ready_then_newest() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, storm(replicas=4))
        await converge(env)
        by_index = {int(rs["metadata"]["annotations"][P + "roleset-index"]): rs for rs in env.rolesets()}
        env.report(by_index[0], ready=False)
        await env.edit(lambda spec: spec.update(replicas=2))
        await env.sync()
        remaining = names(env.rolesets())
        assert by_index[0]["metadata"]["name"] not in remaining
        assert len(remaining) == 2
        deletes = [r for r in env.client.requests if r.verb == "delete" and r.resource == ROLESETS]
        assert all(
            r.options["propagation_policy"] == "Foreground" and r.options["uid_precondition"] for r in deletes
        )


async def test_only_rolesets_controlled_by_this_stormservice_count() -> None:
    async with Env() as env:
        ss = env.seed(STORMSERVICES, storm(replicas=1))
        other = env.seed(STORMSERVICES, storm("other", replicas=0))
        labels = {"app": "llm", "storm-service-name": "llm", "storm-service-revision": "x"}
        foreign_owner = {
            "apiVersion": API,
            "kind": "StormService",
            "name": "other",
            "uid": other["metadata"]["uid"],
            "controller": True,
        }
        env.seed(
            ROLESETS,
            {
                "metadata": {
                    "name": "foreign",
                    "namespace": NS,
                    "labels": labels,
                    "ownerReferences": [foreign_owner],
                },
                "spec": {"roles": []},
            },
        )
        same_name_elsewhere = {
            "apiVersion": API,
            "kind": "StormService",
            "name": "llm",
            "uid": ss["metadata"]["uid"],
            "controller": True,
        }
        env.seed(
            ROLESETS,
            {
                "metadata": {
                    "name": "elsewhere",
                    "namespace": "other-ns",
                    "labels": labels,
                    "ownerReferences": [same_name_elsewhere],
                },
                "spec": {"roles": []},
            },
        )
        await env.sync()
        await env.sync()  # status is computed from the cache, which now shows our creation
        assert env.status()["replicas"] == 1
        assert len(env.rolesets()) == 2  # ours and the foreign one
        assert env.client.get_object(ROLESETS, "other-ns", "elsewhere") is not None
        assert not any(r.name in ("foreign", "elsewhere") for r in env.client.writes())


async def test_orphan_with_our_label_is_adopted() -> None:
    async with Env() as env:
        ss = env.seed(STORMSERVICES, storm(replicas=1))
        labels = {"app": "llm", "storm-service-name": "llm", "storm-service-revision": "gone"}
        env.seed(
            ROLESETS,
            {"metadata": {"name": "orphan", "namespace": NS, "labels": labels}, "spec": {"roles": []}},
        )
        await env.sync()
        adopt = [r for r in env.client.requests if r.verb == "patch" and r.name == "orphan"]
        assert len(adopt) == 1
        assert adopt[0].body[-1]["value"][0]["uid"] == ss["metadata"]["uid"]  # ownerReferences added
        # it counted as the one replica, of an old revision: the rollout replaced it at once
        # (not ready, so no availability is lost)
        assert [r.name for r in env.client.writes() if r.verb == "delete"] == ["orphan"]
        await converge(env)
        assert len(env.rolesets()) == 1
        assert env.client.get_object(ROLESETS, NS, "orphan") is None


async def test_selector_change_does_not_orphan_rolesets() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, storm(replicas=2))
        await converge(env)
        before = names(env.rolesets())

        def relabel(spec: dict[str, Any]) -> None:
            spec["selector"] = {"matchLabels": {"app": "llm2"}}
            spec["template"]["metadata"]["labels"] = {"app": "llm2"}

        await env.edit(relabel)
        env.client.clear_actions()
        await env.sync()
        assert all(rs["metadata"].get("ownerReferences") for rs in env.rolesets())
        assert env.status()["replicas"] == 2
        assert set(before) <= set(names(env.rolesets())) | {
            r.name for r in env.client.writes() if r.verb == "delete"
        }
        await converge(env)
        assert {rs["metadata"]["labels"]["app"] for rs in env.rolesets()} == {"llm2"}


async def test_api_errors_are_returned_and_reported() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, storm(replicas=2))
        env.client.inject_error("create", "rolesets", Forbidden(403, "Forbidden", "exceeded quota"))
        with pytest.raises(ApiError):
            await env.sync()
        assert env.rolesets() == []  # slow start: one attempt, not two
        failure = env.condition("ReplicaFailure")
        assert failure is not None
        assert (failure["status"], failure["reason"]) == ("True", "FailedCreate")
        assert "exceeded quota" in failure["message"]
        assert "FailedCreate" in env.recorder.reasons()
        assert env.ctrl.expectations.satisfied(f"{NS}/llm")  # the failed create is not awaited
        await env.sync()
        assert len(env.rolesets()) == 2
        assert env.condition("ReplicaFailure") is None


async def test_a_new_stormservice_failing_before_its_first_revision_still_reports_ready() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, storm(replicas=1))
        env.client.inject_error(
            "create", "controllerrevisions", Forbidden(403, "Forbidden", "cannot create controllerrevisions")
        )
        with pytest.raises(ApiError):
            await env.sync()
        assert env.revisions() == [] and env.rolesets() == []
        ready = env.condition("Ready")
        assert ready is not None and (ready["status"], ready["reason"]) == ("False", "ReconcileFailed")
        failure = env.condition("ReplicaFailure")
        assert failure is not None and (failure["status"], failure["reason"]) == ("True", "ReconcileFailed")
        assert "cannot create controllerrevisions" in failure["message"]
        assert "ReconcileFailed" in env.recorder.reasons()
        # The same failure again writes nothing more.
        env.client.inject_error(
            "create", "controllerrevisions", Forbidden(403, "Forbidden", "cannot create controllerrevisions")
        )
        before = env.client.resource_version
        with pytest.raises(ApiError):
            await env.sync()
        assert env.client.resource_version == before
        await converge(env)
        ready = env.condition("Ready")
        assert ready is not None and ready["status"] == "True"
        assert env.condition("ReplicaFailure") is None


class FailingCreates:
    """The real RoleSet control over the FakeClient, except that the creates numbered in `fail`
    (0-based, in call order) raise an API error."""

    def __init__(self, client: FakeClient, fail: set[int]) -> None:
        self.inner = KubeRoleSetControl(client)
        self.fail = fail
        self.creates = 0

    async def create(self, roleset: Obj) -> Obj:
        n = self.creates
        self.creates += 1
        if n in self.fail:
            raise Forbidden(403, "Forbidden", f"create {n} refused")
        return await self.inner.create(roleset)

    async def patch(
        self, roleset: Obj, patch: dict[str, Any] | list[dict[str, Any]], patch_type: PatchType
    ) -> Obj:
        return await self.inner.patch(roleset, patch, patch_type)

    async def delete(self, roleset: Obj) -> None:
        await self.inner.delete(roleset)

    async def dry_run_pod(self, namespace: str, pod: Obj) -> None:
        await self.inner.dry_run_pod(namespace, pod)


async def test_create_failure_in_a_later_batch_stops_the_rest() -> None:
    client = FakeClient()
    control = FailingCreates(client, fail={4})  # in the third batch (creates 3..6)
    async with Env(client, control) as env:
        env.seed(STORMSERVICES, storm(replicas=10))
        with pytest.raises(ApiError):
            await env.sync()
        assert control.creates == 1 + 2 + 4, "batches after the failing one never start"
        assert len(env.rolesets()) == 6
        failure = env.condition("ReplicaFailure")
        assert failure is not None and "create 4 refused" in failure["message"]
        # The failed create and the three never attempted are not awaited; the six are seen.
        assert env.ctrl.expectations.satisfied(f"{NS}/llm")
        await env.sync()
        assert control.creates == 7 + 1 + 2 + 1
        assert len(env.rolesets()) == 10


async def test_status_write_error_is_returned() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, storm(replicas=1))
        env.client.inject_error("patch", "stormservices/status", ServerError(500, "InternalError", "etcd"))
        with pytest.raises(ServerError):
            await env.sync()


async def test_revision_collision_counts_and_renames() -> None:
    async with Env() as env:
        ss = env.seed(STORMSERVICES, storm(replicas=1))
        data = revision_data(storm()["spec"]["template"])
        clash = f"llm-{hash_revision_data(data, 0)}"
        env.seed(
            CONTROLLER_REVISIONS,
            {
                "metadata": {
                    "name": clash,
                    "namespace": NS,
                    "labels": {"name": "llm", "controller.kubernetes.io/hash": "zzz"},
                    "ownerReferences": [
                        {
                            "apiVersion": API,
                            "kind": "StormService",
                            "name": "llm",
                            "uid": ss["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                },
                "data": {"spec": {"template": {"different": True}}},
                "revision": 1,
            },
        )
        await env.sync()
        status = env.status()
        assert status["collisionCount"] == 1
        assert status["updateRevision"] == f"llm-{hash_revision_data(data, 1)}"
        assert {revision_of(rs) for rs in env.rolesets()} == {status["updateRevision"]}


async def test_headless_service_repaired_recreated_or_left_alone() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, storm(replicas=1))
        await env.sync()
        svc = env.client.get_object(SERVICES, NS, "llm")
        assert svc is not None
        svc["spec"]["publishNotReadyAddresses"] = False
        svc["spec"]["selector"]["extra"] = "x"
        env.seed(SERVICES, svc)
        await env.sync()
        svc = env.client.get_object(SERVICES, NS, "llm")
        assert svc is not None
        assert svc["spec"]["publishNotReadyAddresses"] is True
        assert svc["spec"]["selector"] == {"storm-service-name": "llm"}
        # lost headlessness: deleted, then created again
        svc["spec"]["clusterIP"] = "10.0.0.7"
        env.seed(SERVICES, svc)
        await env.sync()
        await env.sync()
        svc = env.client.get_object(SERVICES, NS, "llm")
        assert svc is not None and svc["spec"]["clusterIP"] == "None"
        # someone else's Service of that name: reported once, not touched. Without our label it
        # is outside the cache: one create finds it (refused), later passes do not try again.
        env.seed(STORMSERVICES, storm("mine", replicas=0))
        foreign = env.seed(
            SERVICES, {"metadata": {"name": "mine", "namespace": NS}, "spec": {"clusterIP": "10.0.0.8"}}
        )
        env.client.clear_actions()
        await env.sync("mine")
        await env.sync("mine")
        assert [(w.verb, w.name) for w in env.client.writes() if w.resource == "services"] == [
            ("create", "mine")
        ]
        assert env.client.get_object(SERVICES, NS, "mine") == foreign
        assert env.recorder.reasons().count("HeadlessServiceConflict") == 1


async def test_own_service_without_our_labels_gets_them_back() -> None:
    """The Service cache selects on storm-service-name; our Service stripped of its labels (or
    one AIBrix made, which has none) is found by the refused create and relabelled, which puts
    it back in the cache; it is not recreated."""
    async with Env() as env:
        env.seed(STORMSERVICES, storm(replicas=1))
        await env.sync()
        svc = env.client.get_object(SERVICES, NS, "llm")
        assert svc is not None
        uid = svc["metadata"]["uid"]
        del svc["metadata"]["labels"]
        env.seed(SERVICES, svc)
        await env.settle()
        assert env.ctrl.syncer.services.get(f"{NS}/llm") is None, "outside the cache"
        env.client.clear_actions()
        await env.sync()
        assert [(w.verb, w.name) for w in env.client.writes() if w.resource == "services"] == [
            ("create", "llm"),
            ("patch", "llm"),
        ]
        svc = env.client.get_object(SERVICES, NS, "llm")
        assert svc is not None and svc["metadata"]["uid"] == uid
        assert svc["metadata"]["labels"]["storm-service-name"] == "llm"
        assert env.ctrl.syncer.services.get(f"{NS}/llm") is not None


async def test_reference_finalizer_is_removed_on_deletion() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, storm(replicas=1))
        await converge(env)
        obj = env.ss()
        obj["metadata"]["finalizers"] = ["orchestration.aibrix.ai/stormservice-finalizer", "example.com/keep"]
        env.seed(STORMSERVICES, obj)
        await env.client.delete(STORMSERVICES, NS, "llm")
        env.client.clear_actions()
        await env.sync()
        left = env.client.get_object(STORMSERVICES, NS, "llm")
        assert left is not None and left["metadata"]["finalizers"] == ["example.com/keep"]
        assert [(w.verb, w.resource) for w in env.client.writes()] == [("patch", "stormservices")]
        assert "RemovedLegacyFinalizer" in env.recorder.reasons()
        obj = env.ss()
        obj["metadata"]["finalizers"] = ["orchestration.aibrix.ai/stormservice-finalizer"]
        env.seed(STORMSERVICES, obj)
        await env.sync()
        assert env.client.get_object(STORMSERVICES, NS, "llm") is None  # its last finalizer went


async def test_restarted_controller_converges_without_extra_rolesets() -> None:
    async with Env() as env:
        env.seed(
            STORMSERVICES,
            storm(replicas=3, strategy={"type": "RollingUpdate", "maxSurge": 1, "maxUnavailable": 1}),
        )
        await converge(env)

        def upgrade(spec: dict[str, Any]) -> None:
            spec["template"]["spec"]["roles"][0]["template"]["spec"]["containers"][0]["image"] = "prefill:v2"

        await env.edit(upgrade)
        await env.sync()  # mid-rollout
        client = env.client
    # a new process: fresh caches, no expectations, same API server
    env2 = Env(client)
    async with env2:
        for _ in range(30):
            await env2.sync()
            assert len(env2.rolesets()) <= 4
            env2.all_ready()
        await converge(env2)
        status = env2.status()
        assert len(env2.rolesets()) == 3
        assert {revision_of(rs) for rs in env2.rolesets()} == {status["updateRevision"]}
        assert env2.condition("Ready")["status"] == "True"  # type: ignore[index]


async def test_role_replicas_and_template_change_together_in_place() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, storm(replicas=2, strategy={"type": "InPlaceUpdate"}))
        await converge(env)
        names_before = names(env.rolesets())

        def both(spec: dict[str, Any]) -> None:
            spec["template"]["spec"]["roles"][0]["replicas"] = 3
            spec["template"]["spec"]["roles"][0]["template"]["spec"]["containers"][0]["image"] = "prefill:v2"

        await env.edit(both)
        await env.sync()  # role replicas first
        await env.sync()  # then the rewrite, from the new versions (no 409)
        assert env.condition("ReplicaFailure") is None
        assert names(env.rolesets()) == names_before
        for rs in env.rolesets():
            assert image_of(rs) == "prefill:v2"
            assert rs["spec"]["roles"][0]["replicas"] == 3


async def test_expectations_are_checked_before_reading_the_cache() -> None:
    """The cache is read first and the awaits of the pass (headless Service, revisions) let the
    informer deliver events: a creation observed during them satisfies the expectations, but the
    RoleSets the pass already read do not include it. Acting on them would create a duplicate."""
    async with Env() as env:
        key = f"{NS}/llm"
        env.seed(STORMSERVICES, storm(replicas=1))
        await converge(env)
        [a] = env.rolesets()
        await env.client.delete(SERVICES, NS, "llm")  # the next pass awaits a Service create
        await env.settle()

        def scale(spec: dict[str, Any]) -> None:
            spec["replicas"] = 2

        await env.edit(scale)
        await env.settle()
        # An earlier pass created RoleSet b; the cache has not shown it yet.
        env.ctrl.expectations.expect_creations(key, 1)
        b = env.copy(a)
        b["metadata"] = {
            k: v for k, v in a["metadata"].items() if k not in ("uid", "resourceVersion", "creationTimestamp")
        }
        b["metadata"]["name"] = "llm-roleset-bbbbb"
        b["metadata"]["annotations"] = {**a["metadata"]["annotations"], f"{P}roleset-index": "1"}
        create = env.client.create

        async def create_then_deliver(
            resource: Any, namespace: str | None, body: Obj, *, dry_run: bool = False
        ) -> Obj:
            if resource == SERVICES:
                env.client.seed(ROLESETS, b)
                await env.settle()  # the informer delivers b: the creation is observed
            return await create(resource, namespace, body, dry_run=dry_run)

        env.client.create = create_then_deliver  # type: ignore[method-assign]
        await env.ctrl.sync(key)
        env.client.create = create  # type: ignore[method-assign]
        await env.settle()
        assert len(env.rolesets(live_only=True)) == 2


async def test_deleting_a_roleset_already_gone_from_the_cache_expects_nothing() -> None:
    """A RoleSet read at the start of the pass whose deletion the informer delivers during the
    pass's awaits, before the pass deletes it: the delete finds nothing and no event will come,
    so expecting that deletion would stall the StormService until the expectations expire."""
    async with Env() as env:
        key = f"{NS}/llm"
        env.seed(STORMSERVICES, storm(replicas=2))
        await converge(env)
        victim = env.rolesets()[0]
        env.report(victim, ready=False)  # not ready: the one a scale-down deletes
        await env.client.delete(SERVICES, NS, "llm")  # the next pass awaits a Service create
        await env.settle()

        def scale(spec: dict[str, Any]) -> None:
            spec["replicas"] = 1

        await env.edit(scale)
        await env.settle()
        create = env.client.create

        async def create_then_deliver(
            resource: Any, namespace: str | None, body: Obj, *, dry_run: bool = False
        ) -> Obj:
            if resource == SERVICES:
                await env.client.delete(ROLESETS, NS, victim["metadata"]["name"])  # someone else
                await env.settle()  # the informer delivers the deletion
            return await create(resource, namespace, body, dry_run=dry_run)

        env.client.create = create_then_deliver  # type: ignore[method-assign]
        await env.ctrl.sync(key)
        env.client.create = create  # type: ignore[method-assign]
        await env.settle()
        assert env.ctrl.expectations.satisfied(key), env.ctrl.expectations.pending(key)
        assert len(env.rolesets(live_only=True)) == 1


@pytest.mark.parametrize("strategy", ["RollingUpdate", "InPlaceUpdate"])
async def test_a_revision_whose_pods_the_api_server_rejects_is_not_rolled_out(strategy: str) -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, storm(replicas=3, strategy={"type": strategy}))
        await converge(env)
        before = {rs["metadata"]["uid"]: rs["metadata"]["resourceVersion"] for rs in env.rolesets()}
        old_revision = env.status()["updateRevision"]
        env.client.clear_actions()
        env.client.inject_error(
            "create-dry-run",
            "pods",
            Invalid(
                422,
                "Invalid",
                'Pod "llm-decode-x" is invalid: spec.containers[0].volumeMounts[0].name: Not found',
            ),
        )

        def break_it(spec: dict[str, Any]) -> None:
            container = spec["template"]["spec"]["roles"][1]["template"]["spec"]["containers"][0]
            container["image"] = "decode:v2"
            container["volumeMounts"] = [{"name": "missing", "mountPath": "/data"}]

        await env.edit(break_it)
        for _ in range(3):
            await env.sync()
        assert [w for w in env.client.writes() if w.resource == "rolesets"] == []
        assert {rs["metadata"]["uid"]: rs["metadata"]["resourceVersion"] for rs in env.rolesets()} == before
        # Asked once for this revision (the first role's pod is refused: the rest is not asked).
        assert sum(1 for a in env.client.actions if a.verb == "create-dry-run") == 1
        failure = env.condition("ReplicaFailure")
        assert failure is not None and failure["reason"] == "InvalidPodTemplate"
        assert "volumeMounts[0].name: Not found" in failure["message"]
        progressing = env.condition("Progressing")
        assert progressing is not None and (progressing["status"], progressing["reason"]) == (
            "False",
            "RolloutBlocked",
        )
        assert env.recorder.reasons().count("InvalidPodTemplate") == 1
        assert env.status()["currentRevision"] == old_revision

        def fix_it(spec: dict[str, Any]) -> None:
            spec["template"]["spec"]["roles"][1]["template"]["spec"]["containers"][0].pop("volumeMounts")

        await env.edit(fix_it)
        await converge(env)
        assert env.condition("ReplicaFailure") is None
        assert env.condition("Ready")["status"] == "True"  # type: ignore[index]
        assert {image_of(rs, "decode") for rs in env.rolesets()} == {"decode:v2"}


async def test_a_new_stormservice_whose_pods_are_rejected_creates_no_roleset() -> None:
    async with Env() as env:
        env.client.inject_error("create-dry-run", "pods", Invalid(422, "Invalid", "Pod is invalid: spec.x"))
        env.seed(STORMSERVICES, storm(replicas=2))
        await env.sync()
        await env.sync()
        assert env.rolesets() == []
        failure = env.condition("ReplicaFailure")
        assert failure is not None and failure["reason"] == "InvalidPodTemplate"
        ready = env.condition("Ready")
        assert ready is not None and ready["status"] == "False"


async def test_creates_in_a_namespace_being_deleted_are_skipped_quietly() -> None:
    terminating = Forbidden(
        403,
        "Forbidden",
        "unable to create new content in namespace ns because it is being terminated",
        causes=[
            StatusCause("NamespaceTerminating", "namespace ns is being terminated", "metadata.namespace")
        ],
    )
    async with Env() as env:
        env.client.inject_error("create", "rolesets", terminating, times=10)
        env.client.inject_error("create", "services", terminating, times=10)
        env.client.inject_error("create", "poddisruptionbudgets", terminating, times=10)
        env.seed(STORMSERVICES, storm(replicas=2))
        assert await env.sync() is None
        assert "FailedCreate" not in env.recorder.reasons()
        assert env.condition("ReplicaFailure") is None
