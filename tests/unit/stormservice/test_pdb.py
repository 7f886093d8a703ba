"""Per-role PodDisruptionBudgets of a StormService: the pure decisions, then the sync against a
FakeClient with real informers."""

from __future__ import annotations

from typing import Any

import pytest

from controller.runtime.errors import ApiError, Forbidden
from controller.runtime.resources import POD_DISRUPTION_BUDGETS, ROLESETS, STORMSERVICES
from controller.stormservice import sync as ss_sync
from controller.stormservice.naming import MAX_OBJECT_NAME_LENGTH, pdb_name
from controller.stormservice.pdb import desired_pdbs, min_available, pdb_patch, plan_pdbs
from tests.unit.stormservice.harness import API, NS, Env, storm

pytestmark = pytest.mark.timeout(30)

Obj = dict[str, Any]


def with_tolerance(obj: Obj, ss: int | str | None = None, **roles: int | str | None) -> Obj:
    """`obj` with StormService-level and per-role disruptionTolerance.maxUnavailable."""
    spec = obj["spec"]
    if ss is not None:
        spec["disruptionTolerance"] = {"maxUnavailable": ss}
    for r in spec["template"]["spec"]["roles"]:
        if r["name"] in roles:
            value = roles[r["name"]]
            if value is None:
                r.pop("disruptionTolerance", None)
            else:
                r["disruptionTolerance"] = {"maxUnavailable": value}
    return obj


def ss_obj(**kwargs: Any) -> Obj:
    obj = storm()
    obj["metadata"]["uid"] = "ss-uid"
    return with_tolerance(obj, **kwargs)


def min_available_of(pdbs: dict[str, Obj]) -> dict[str, Any]:
    return {name: p["spec"]["minAvailable"] for name, p in pdbs.items()}


def pdbs_in(env: Env) -> dict[str, Obj]:
    return {p["metadata"]["name"]: p for p in env.client.objects(POD_DISRUPTION_BUDGETS, NS)}


def pdb_writes(env: Env) -> list[tuple[str, str | None]]:
    return [(a.verb, a.name) for a in env.client.writes() if a.resource == "poddisruptionbudgets"]


async def drain(env: Env) -> None:
    while len(env.ctrl.queue):
        key = await env.ctrl.queue.get()
        assert key is not None
        env.ctrl.queue.done(key)


# ---------------------------------------------------------------------------------------------
# names


def test_pdb_name_short_and_long() -> None:
    assert pdb_name("llm", "prefill") == "llm-prefill"
    long_ss, other_ss = "s" * 49, "s" * 48 + "t"
    a, b = pdb_name(long_ss, "r" * 44), pdb_name(long_ss, "r" * 43 + "q")
    c = pdb_name(other_ss, "r" * 44)
    for name in (a, b, c):
        assert len(name) <= MAX_OBJECT_NAME_LENGTH
        assert name[0].isalnum() and name[-1].isalnum()
    assert len({a, b, c}) == 3, "shortening keeps names unique"
    assert a.endswith("-" + "r" * 44), "the role (the tail) is kept"
    assert pdb_name(long_ss, "r" * 44) == a, "stable"
    # A role name longer than admission allows today (an old object) still gives a valid name.
    old = pdb_name("llm", "x" * 70)
    assert len(old) <= MAX_OBJECT_NAME_LENGTH and old != pdb_name("llm", "x" * 69)


# ---------------------------------------------------------------------------------------------
# desired PDBs


@pytest.mark.parametrize(
    ("value", "replicas", "role_replicas", "group", "want"),
    [
        (1, 3, 2, 1, 5),  # 6 pods, one instance may go
        # A group is broken when any member is gone: one instance tolerated is one pod, or a
        # drain could take one member of each of several groups and break them all.
        (1, 3, 2, 4, 23),
        (1, 4, 1, 8, 31),  # the case: 4 groups of 8, tolerance 1 (was 24: 8 pods)
        (2, 3, 2, 4, 22),
        (0, 3, 2, 4, 24),  # nothing may go
        (10, 3, 2, 1, 0),  # more than there is
        (10, 3, 2, 4, 0),  # every instance may break: nothing to protect
        (5, 3, 2, 4, 19),  # all but one of 6 instances: 5 pods
        ("25%", 3, 2, 4, 22),  # 25% of 6 instances rounds up to 2: 2 pods of 24
        ("50%", 4, 1, 8, 30),
        ("33%", 3, 2, 1, 4),  # 1.98 rounds up to 2, as the disruption controller rounds
        ("10%", 1, 1, 1, 0),  # 0.1 rounds up to 1
        ("0%", 3, 2, 1, 6),
        ("100%", 3, 2, 1, 0),
        (1, 0, 2, 1, 0),  # scaled to zero
        (1, 3, 0, 1, 0),
        ("50", 3, 2, 1, None),  # refused at admission; no PDB rather than a wrong one
    ],
)
def test_min_available(
    value: int | str, replicas: int, role_replicas: int, group: int, want: int | None
) -> None:
    assert min_available(value, replicas=replicas, role_replicas=role_replicas, group_size=group) == want


@pytest.mark.parametrize(
    ("tolerance", "group", "want"),
    [
        # storm(): 3 RoleSets, prefill 2 instances, decode 1
        ({}, 1, {}),  # neither level: no PDB
        ({"ss": 1}, 1, {"llm-prefill": 5, "llm-decode": 2}),
        # N instances tolerated: N pods (a group breaks when one member goes), of
        # instances x podGroupSize.
        ({"ss": 2}, 4, {"llm-prefill": 22, "llm-decode": 10}),
        # a percent counts instances: 25% of 6 -> 2, 25% of 3 -> 1 (rounded up)
        ({"ss": "25%"}, 4, {"llm-prefill": 22, "llm-decode": 11}),
        ({"ss": 1, "prefill": 3}, 2, {"llm-prefill": 9, "llm-decode": 5}),  # the role's own wins
        ({"prefill": "50%"}, 2, {"llm-prefill": 9}),  # role only: the other role gets none
        ({"ss": "10%", "decode": 0}, 1, {"llm-prefill": 5, "llm-decode": 3}),  # 0 is a value
    ],
)
def test_desired_pdbs(tolerance: dict[str, Any], group: int, want: dict[str, Any]) -> None:
    obj = ss_obj(**tolerance)
    for r in obj["spec"]["template"]["spec"]["roles"]:
        r["podGroupSize"] = group
    assert min_available_of(desired_pdbs(obj)) == want


def test_desired_pdb_wire_format() -> None:
    [body] = desired_pdbs(ss_obj(prefill=2)).values()
    assert body == {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": "llm-prefill",
            "namespace": NS,
            "labels": {"storm-service-name": "llm", "role-name": "prefill"},
            "ownerReferences": [
                {
                    "apiVersion": API,
                    "kind": "StormService",
                    "name": "llm",
                    "uid": "ss-uid",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "minAvailable": 4,  # 3 x 2 pods, 2 may go
            "selector": {"matchLabels": {"storm-service-name": "llm", "role-name": "prefill"}},
        },
    }


def _existing(**spec: Any) -> Obj:
    body = desired_pdbs(ss_obj(prefill=2))["llm-prefill"]
    body["metadata"]["uid"] = "pdb-uid"
    body["metadata"]["resourceVersion"] = "7"
    body["spec"].update(spec)
    return body


@pytest.mark.parametrize(
    ("existing", "want"),
    [
        (_existing(), None),
        (_existing(minAvailable=1), {"spec": {"minAvailable": 4}}),
        (_existing(minAvailable="4"), {"spec": {"minAvailable": 4}}),
        (
            _existing(minAvailable=None, maxUnavailable=2),
            {"spec": {"minAvailable": 4, "maxUnavailable": None}},
        ),
        (
            _existing(
                selector={
                    "matchLabels": {"storm-service-name": "llm", "role-name": "decode", "x": "y"},
                    "matchExpressions": [{"key": "a", "operator": "Exists"}],
                }
            ),
            {
                "spec": {
                    "selector": {
                        "matchLabels": {"storm-service-name": "llm", "role-name": "prefill", "x": None},
                        "matchExpressions": None,
                    }
                }
            },
        ),
    ],
)
def test_pdb_patch(existing: Obj, want: Obj | None) -> None:
    desired = desired_pdbs(ss_obj(prefill=2))["llm-prefill"]
    assert pdb_patch(existing, desired) == want


def test_pdb_patch_restores_our_labels_and_keeps_others() -> None:
    existing = _existing()
    existing["metadata"]["labels"] = {"team": "a", "role-name": "prefill"}
    desired = desired_pdbs(ss_obj(prefill=2))["llm-prefill"]
    assert pdb_patch(existing, desired) == {"metadata": {"labels": {"storm-service-name": "llm"}}}


def test_plan_pdbs() -> None:
    obj = ss_obj(prefill=2, decode=1)
    ours = _existing(minAvailable=1)  # llm-prefill, to patch
    foreign = desired_pdbs(obj)["llm-decode"]
    foreign["metadata"]["ownerReferences"] = []
    dropped = desired_pdbs(ss_obj(prefill=2))["llm-prefill"]
    dropped["metadata"]["name"] = "llm-router"  # a role no longer in the spec
    cache = {"llm-prefill": ours, "llm-decode": foreign, "llm-router": dropped}
    actions = plan_pdbs(obj, [ours, dropped], cache.get)
    assert [(a.action, a.name) for a in actions] == [
        ("conflict", "llm-decode"),
        ("patch", "llm-prefill"),
        ("delete", "llm-router"),
    ]
    # Terminating objects are waited for.
    ours["metadata"]["deletionTimestamp"] = dropped["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert [(a.action, a.name) for a in plan_pdbs(obj, [ours, dropped], cache.get)] == [
        ("conflict", "llm-decode")
    ]


# ---------------------------------------------------------------------------------------------
# the sync


async def test_creates_pdbs_then_writes_nothing_when_equal() -> None:
    async with Env() as env:
        obj = with_tolerance(storm(replicas=2), ss=1, prefill="25%")
        obj["spec"]["template"]["spec"]["roles"][1]["podGroupSize"] = 2  # decode: 1 instance = 2 pods
        ss = env.seed(STORMSERVICES, obj)
        await env.sync()
        pdbs = pdbs_in(env)
        # prefill: 2 x 2 pods, 25% may go; decode: 2 x 1 instance of 2 pods, 1 instance may go,
        # which is one pod (one missing member breaks the instance)
        assert min_available_of(pdbs) == {"llm-prefill": 3, "llm-decode": 3}
        decode = pdbs["llm-decode"]
        assert decode["spec"]["selector"] == {
            "matchLabels": {"storm-service-name": "llm", "role-name": "decode"}
        }
        [ref] = decode["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("StormService", ss["metadata"]["uid"], True)
        assert env.recorder.reasons().count("CreatedPodDisruptionBudget") == 2
        assert len(env.rolesets()) == 2, "RoleSets are made in the same pass"

        env.client.clear_actions()
        await env.sync()
        await env.sync()
        assert pdb_writes(env) == [], "no write when nothing changed"


async def test_patches_on_change_and_deletes_when_dropped() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, with_tolerance(storm(replicas=2), ss=1))
        await env.sync()
        before = pdbs_in(env)
        assert min_available_of(before) == {"llm-prefill": 3, "llm-decode": 1}

        await env.edit(lambda spec: spec.update(disruptionTolerance={"maxUnavailable": "75%"}))
        env.client.clear_actions()
        await env.sync()
        assert pdb_writes(env) == [("patch", "llm-decode"), ("patch", "llm-prefill")]
        after = pdbs_in(env)
        assert min_available_of(after) == {"llm-prefill": 1, "llm-decode": 0}
        assert {n: p["metadata"]["uid"] for n, p in after.items()} == {
            n: p["metadata"]["uid"] for n, p in before.items()
        }, "patched in place, not recreated"
        assert "UpdatedPodDisruptionBudget" in env.recorder.reasons()

        # The StormService-wide value goes; only prefill keeps one of its own.
        def drop(spec: dict[str, Any]) -> None:
            del spec["disruptionTolerance"]
            spec["template"]["spec"]["roles"][0]["disruptionTolerance"] = {"maxUnavailable": 1}

        await env.edit(drop)
        env.client.clear_actions()
        await env.sync()
        assert sorted(pdb_writes(env)) == [("delete", "llm-decode"), ("patch", "llm-prefill")]
        assert min_available_of(pdbs_in(env)) == {"llm-prefill": 3}
        assert "DeletedPodDisruptionBudget" in env.recorder.reasons()

        await env.edit(lambda spec: spec["template"]["spec"]["roles"][0].pop("disruptionTolerance"))
        await env.sync()
        assert pdbs_in(env) == {}


async def test_follows_scaling_of_the_stormservice_and_of_a_role() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, with_tolerance(storm(replicas=2), ss=1))
        await env.sync()
        assert min_available_of(pdbs_in(env)) == {"llm-prefill": 3, "llm-decode": 1}
        await env.edit(lambda spec: spec.update(replicas=4))
        await env.sync()
        assert min_available_of(pdbs_in(env)) == {"llm-prefill": 7, "llm-decode": 3}
        await env.edit(lambda spec: spec["template"]["spec"]["roles"][1].update(replicas=3))
        await env.sync()
        assert min_available_of(pdbs_in(env)) == {"llm-prefill": 7, "llm-decode": 11}


async def test_repairs_a_pdb_edited_by_hand() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, with_tolerance(storm(replicas=1), prefill=1))
        await env.sync()
        pdb = pdbs_in(env)["llm-prefill"]
        pdb["spec"] = {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "other"}}}
        env.seed(POD_DISRUPTION_BUDGETS, pdb)
        env.client.clear_actions()
        await env.sync()
        assert pdb_writes(env) == [("patch", "llm-prefill")]
        spec = pdbs_in(env)["llm-prefill"]["spec"]
        assert spec.get("maxUnavailable") is None
        assert spec["minAvailable"] == 1
        assert spec["selector"] == {"matchLabels": {"storm-service-name": "llm", "role-name": "prefill"}}


@pytest.mark.parametrize("labelled", [False, True])
@pytest.mark.parametrize("owner", ["none", "other"])
async def test_foreign_pdb_is_reported_and_left_alone(
    owner: str, labelled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, with_tolerance(storm(replicas=1), ss=1))
        refs = (
            []
            if owner == "none"
            else [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "x",
                    "uid": "x-uid",
                    "controller": True,
                }
            ]
        )
        foreign = env.seed(
            POD_DISRUPTION_BUDGETS,
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {
                    "name": "llm-decode",
                    "namespace": NS,
                    "ownerReferences": refs,
                    **({"labels": {"storm-service-name": "llm"}} if labelled else {}),
                },
                "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "mine"}}},
            },
        )
        requeue = await env.sync()
        if labelled:
            # In the cache (it carries the label the cache selects on): seen, never written.
            assert pdb_writes(env) == [("create", "llm-prefill")]
        else:
            # Outside the cache: found by the refused create, and looked at again later, since
            # its removal brings no event.
            assert pdb_writes(env) == [("create", "llm-decode"), ("create", "llm-prefill")]
            assert requeue is not None and requeue <= 60
        assert env.client.get_object(POD_DISRUPTION_BUDGETS, NS, "llm-decode") == foreign, "untouched"
        failure = env.condition("ReplicaFailure")
        assert failure is not None
        assert (failure["status"], failure["reason"]) == ("True", "PodDisruptionBudgetConflict")
        assert "llm-decode" in failure["message"]
        assert env.recorder.reasons().count("PodDisruptionBudgetConflict") == 1
        assert len(env.rolesets()) == 1, "a PDB conflict does not hold up RoleSets"

        await env.sync()  # the status catches up with the RoleSet created above
        env.client.clear_actions()
        status_rv = env.ss()["metadata"]["resourceVersion"]
        await env.sync()
        assert env.client.writes() == [], "reported once, not every pass"
        assert env.ss()["metadata"]["resourceVersion"] == status_rv
        assert env.recorder.reasons().count("PodDisruptionBudgetConflict") == 1

        await drain(env)
        await env.client.delete(POD_DISRUPTION_BUDGETS, NS, "llm-decode")
        await env.settle()
        if labelled:
            # Its deletion wakes the StormService, which then makes its own.
            assert len(env.ctrl.queue) == 1 and await env.ctrl.queue.get() == f"{NS}/llm"
        else:
            # No event for an object outside the cache: the requeued pass, once the recheck
            # interval has passed, makes it.
            assert len(env.ctrl.queue) == 0
            monkeypatch.setattr(ss_sync, "UNCACHED_CONFLICT_RECHECK_SECONDS", 0.0)
        await env.sync()
        assert pdbs_in(env)["llm-decode"]["metadata"]["ownerReferences"][0]["kind"] == "StormService"
        assert env.condition("ReplicaFailure") is None


async def test_pdb_api_error_is_returned_and_does_not_stall_rolesets() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, with_tolerance(storm(replicas=2), ss=1))
        env.client.inject_error(
            "create", "poddisruptionbudgets", Forbidden(403, "Forbidden", "no RBAC for PDBs"), times=2
        )
        with pytest.raises(ApiError):
            await env.sync()
        assert len(env.rolesets()) == 2
        assert pdbs_in(env) == {}
        failure = env.condition("ReplicaFailure")
        assert failure is not None
        assert (failure["reason"], "no RBAC for PDBs" in failure["message"]) == (
            "FailedPodDisruptionBudget",
            True,
        )
        assert env.recorder.reasons().count("FailedPodDisruptionBudget") == 2, "every PDB was tried"
        await env.sync()
        assert set(pdbs_in(env)) == {"llm-prefill", "llm-decode"}
        assert env.condition("ReplicaFailure") is None


async def test_pdb_events_map_to_the_owner() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, with_tolerance(storm(replicas=1), ss=1))
        env.seed(STORMSERVICES, {**storm("other"), "metadata": {"name": "other", "namespace": NS}})
        await env.sync()
        await drain(env)
        # A hand edit of our PDB wakes its owner only.
        pdb = pdbs_in(env)["llm-prefill"]
        pdb["spec"]["minAvailable"] = 5
        env.seed(POD_DISRUPTION_BUDGETS, pdb)
        await env.settle()
        assert len(env.ctrl.queue) == 1 and await env.ctrl.queue.get() == f"{NS}/llm"
        # A RoleSet's PDB wakes no StormService.
        env.ctrl.queue.done(f"{NS}/llm")
        rs = env.rolesets()[0]
        env.seed(
            POD_DISRUPTION_BUDGETS,
            {
                "metadata": {
                    "name": f"{rs['metadata']['name']}-prefill",
                    "namespace": NS,
                    "ownerReferences": [
                        {
                            "apiVersion": API,
                            "kind": "RoleSet",
                            "name": rs["metadata"]["name"],
                            "uid": rs["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": {"maxUnavailable": 1},
            },
        )
        await env.settle()
        assert len(env.ctrl.queue) == 0
        assert env.client.objects(ROLESETS, NS)
