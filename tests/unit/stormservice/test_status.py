"""Status and conditions: counts, Ready always present, lastTransitionTime only on flips."""

from __future__ import annotations

from typing import Any

import pytest

from controller.stormservice.status import (
    Failure,
    advance_current_revision,
    compute_status,
    role_statuses,
    set_condition,
    status_patch,
)
from controller.stormservice.view import RoleSetView, view_of
from tests.unit.stormservice.helpers import rs

T0, T1 = "2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z"


def ss(replicas: int = 2, *, paused: bool = False, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "llm", "namespace": "ns", "generation": 4},
        "spec": {"replicas": replicas, "paused": paused},
        "status": status or {},
    }


def cond(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status["conditions"] if c["type"] == type_), None)


def test_ready_status_fields() -> None:
    st = compute_status(
        ss(2), [rs("a"), rs("b")], current_revision="new", update_revision="new", collision_count=1, now=T0
    )
    assert {k: v for k, v in st.items() if k not in ("conditions", "roleStatuses")} == {
        "observedGeneration": 4,
        "replicas": 2,
        "readyReplicas": 2,
        "notReadyReplicas": 0,
        "currentReplicas": 2,
        "updatedReplicas": 2,
        "updatedReadyReplicas": 2,
        "currentRevision": "new",
        "updateRevision": "new",
        "collisionCount": 1,
        "scalingTargetSelector": "storm-service-name=llm",
    }
    assert cond(st, "Ready") == {
        "type": "Ready",
        "status": "True",
        "reason": "AllRoleSetsReady",
        "message": "2 of 2 RoleSets ready",
        "lastTransitionTime": T0,
    }
    # Deployment convention, as on RoleSets: a completed rollout is Progressing=True with a
    # completion reason; False only when it cannot go on.
    assert cond(st, "Progressing") == {
        "type": "Progressing",
        "status": "True",
        "reason": "RolloutComplete",
        "message": "2 of 2 RoleSets ready",
        "lastTransitionTime": T0,
    }
    assert cond(st, "ReplicaFailure") is None


@pytest.mark.parametrize(
    ("rolesets", "current", "replicas", "paused", "ready_reason", "progressing"),
    [
        pytest.param([], "new", 2, False, "Scaling", ("True", "Scaling"), id="fresh"),
        pytest.param(
            [rs("a", "old"), rs("b")],
            "old",
            2,
            False,
            "RolloutInProgress",
            ("True", "RolloutInProgress"),
            id="rolling",
        ),
        pytest.param(
            [rs("a", "old"), rs("b")], "old", 2, True, "RolloutInProgress", ("Unknown", "Paused"), id="paused"
        ),
        pytest.param(
            [rs("a"), rs("b", ready=False)],
            "new",
            2,
            False,
            "RoleSetsNotReady",
            ("True", "RoleSetsNotReady"),
            id="not-ready",
        ),
        pytest.param(
            [rs("a"), rs("b"), rs("c")], "new", 2, False, "Scaling", ("True", "Scaling"), id="too-many"
        ),
        pytest.param(
            [rs("a"), rs("b"), rs("t", terminating=True)],
            "new",
            2,
            False,
            "Scaling",
            ("True", "Scaling"),
            id="terminating-count",
        ),
        pytest.param(
            [rs("a"), rs("b")],
            "old",
            2,
            False,
            "RolloutInProgress",
            ("True", "RolloutInProgress"),
            id="current-lags",
        ),
        pytest.param(
            [], "new", 0, False, "AllRoleSetsReady", ("True", "RolloutComplete"), id="zero-is-ready"
        ),
    ],
)
def test_not_ready_reasons(
    rolesets: list[RoleSetView],
    current: str,
    replicas: int,
    paused: bool,
    ready_reason: str,
    progressing: tuple[str, str],
) -> None:
    st = compute_status(
        ss(replicas, paused=paused),
        rolesets,
        current_revision=current,
        update_revision="new",
        collision_count=0,
        now=T0,
    )
    ready = cond(st, "Ready")
    assert ready is not None
    assert ready["reason"] == ready_reason
    assert ready["status"] == ("True" if ready_reason == "AllRoleSetsReady" else "False")
    p = cond(st, "Progressing")
    assert p is not None
    assert (p["status"], p["reason"]) == progressing


def test_counts_during_rollout() -> None:
    views = [
        rs("o1", "old"),
        rs("o2", "old", terminating=True),
        rs("n1"),
        rs("n2", ready=False),
        RoleSetView("n3", "new", ready=True, updated=False, updated_ready=False),
    ]
    st = compute_status(
        ss(3), views, current_revision="old", update_revision="new", collision_count=0, now=T0
    )
    assert (st["replicas"], st["readyReplicas"], st["notReadyReplicas"]) == (5, 3, 2)
    assert (st["currentReplicas"], st["updatedReplicas"], st["updatedReadyReplicas"]) == (2, 2, 1)


@pytest.mark.parametrize(
    ("paused", "ready", "progressing"),
    [
        (False, False, ("False", "RoleSetRolloutStalled")),
        # paused wins: nothing is expected to move, which is not a failure (Deployment: Unknown)
        (True, False, ("Unknown", "Paused")),
        (False, True, ("True", "RolloutComplete")),  # a stale report on a ready service is moot
    ],
)
def test_a_stalled_roleset_rollout_is_reported(
    paused: bool, ready: bool, progressing: tuple[str, str]
) -> None:
    stuck = RoleSetView(
        "b",
        "new",
        ready=ready,
        updated=ready,
        updated_ready=ready,
        stalled="RolloutBlocked: role w: podGroupSize changed to 3",
    )
    st = compute_status(
        ss(2, paused=paused),
        [rs("a"), stuck],
        current_revision="new",
        update_revision="new",
        collision_count=0,
        now=T0,
    )
    p = cond(st, "Progressing")
    assert p is not None and (p["status"], p["reason"]) == progressing
    if progressing[1] == "RoleSetRolloutStalled":
        assert "RoleSet b: RolloutBlocked: role w: podGroupSize changed to 3" in p["message"]


def test_a_stalled_roleset_of_an_old_revision_is_being_replaced_not_stalled() -> None:
    stuck = RoleSetView(
        "b", "old", ready=False, updated=False, updated_ready=False, stalled="RolloutBlocked: x"
    )
    st = compute_status(
        ss(2), [rs("a"), stuck], current_revision="old", update_revision="new", collision_count=0, now=T0
    )
    p = cond(st, "Progressing")
    assert p is not None and (p["status"], p["reason"]) == ("True", "RolloutInProgress")


def test_transition_time_moves_only_on_flip() -> None:
    first = compute_status(
        ss(2), [rs("a")], current_revision="new", update_revision="new", collision_count=0, now=T0
    )
    # same status (False), different reason and message: time kept
    second = compute_status(
        ss(2, status=first),
        [rs("a"), rs("b", ready=False)],
        current_revision="new",
        update_revision="new",
        collision_count=0,
        now=T1,
    )
    assert cond(second, "Ready")["lastTransitionTime"] == T0  # type: ignore[index]
    assert cond(second, "Ready")["reason"] == "RoleSetsNotReady"  # type: ignore[index]
    third = compute_status(
        ss(2, status=second),
        [rs("a"), rs("b")],
        current_revision="new",
        update_revision="new",
        collision_count=0,
        now=T1,
    )
    assert cond(third, "Ready")["status"] == "True"  # type: ignore[index]
    assert cond(third, "Ready")["lastTransitionTime"] == T1  # type: ignore[index]
    # nothing new observed: identical status, so no write
    fourth = compute_status(
        ss(2, status=third),
        [rs("a"), rs("b")],
        current_revision="new",
        update_revision="new",
        collision_count=0,
        now="later",
    )
    assert fourth == third
    assert status_patch(third, fourth) is None


def test_replica_failure_set_and_cleared() -> None:
    failed = compute_status(
        ss(1),
        [],
        current_revision="r",
        update_revision="r",
        collision_count=0,
        failure=Failure("FailedCreate", "boom"),
        now=T0,
    )
    assert cond(failed, "ReplicaFailure") == {
        "type": "ReplicaFailure",
        "status": "True",
        "reason": "FailedCreate",
        "message": "boom",
        "lastTransitionTime": T0,
    }
    cleared = compute_status(
        ss(1, status=failed),
        [rs("a", "r")],
        current_revision="r",
        update_revision="r",
        collision_count=0,
        now=T1,
    )
    assert cond(cleared, "ReplicaFailure") is None
    assert cond(cleared, "Ready") is not None


def test_set_condition_keeps_others_and_order() -> None:
    conds = [{"type": "A", "status": "True"}, {"type": "B", "status": "False", "lastTransitionTime": T0}]
    out = set_condition(conds, "B", "False", "r", "m", T1)
    assert [c["type"] for c in out] == ["A", "B"]
    assert out[1]["lastTransitionTime"] == T0
    assert set_condition(conds, "B", "True", "r", "m", T1)[1]["lastTransitionTime"] == T1
    assert (
        set_condition([{"type": "B", "status": "True"}], "B", "True", "r", "m", T1)[0]["lastTransitionTime"]
        == T1
    )


def _rs_obj(name: str, rev: str, roles: list[dict[str, Any]], *, fresh: bool = True) -> RoleSetView:
    obj = {
        "metadata": {"name": name, "generation": 2},
        "status": {"observedGeneration": 2 if fresh else 1, "roles": roles},
    }
    return RoleSetView(name, rev, obj=obj)


def test_role_statuses_updated_counts_only_update_revision() -> None:
    def r(name: str, n: int, ready: int, upd: int, upd_ready: int) -> dict[str, Any]:
        return {
            "name": name,
            "replicas": n,
            "readyReplicas": ready,
            "notReadyReplicas": n - ready,
            "updatedReplicas": upd,
            "updatedReadyReplicas": upd_ready,
        }

    views = [
        _rs_obj("a", "old", [r("prefill", 2, 2, 2, 2), r("decode", 1, 1, 1, 1)]),
        _rs_obj("b", "new", [r("prefill", 2, 1, 2, 1), r("decode", 1, 0, 1, 0)]),
        _rs_obj("c", "new", [r("prefill", 2, 2, 2, 2)], fresh=False),
    ]
    assert role_statuses(views, "new") == [
        {
            "name": "decode",
            "replicas": 2,
            "readyReplicas": 1,
            "notReadyReplicas": 1,
            "updatedReplicas": 1,
            "updatedReadyReplicas": 0,
        },
        {
            "name": "prefill",
            "replicas": 6,
            "readyReplicas": 5,
            "notReadyReplicas": 1,
            "updatedReplicas": 2,
            "updatedReadyReplicas": 1,
        },
    ]


def test_advance_current_revision() -> None:
    assert advance_current_revision([rs("a"), rs("b")], "old", "new") == "new"
    assert advance_current_revision([], "old", "new") == "new"
    assert advance_current_revision([rs("a"), rs("o", "old", terminating=True)], "old", "new") == "old"


def test_status_patch() -> None:
    assert status_patch({"a": 1}, {"a": 1}) is None
    assert status_patch(None, {"a": 1}) == {"status": {"a": 1}}
    assert status_patch({"a": 1, "legacy": 2}, {"a": 2}) == {"status": {"a": 2, "legacy": None}}


@pytest.mark.parametrize(
    ("group_size", "expected"),
    [
        pytest.param(None, (2, 1, 1, 2, 1), id="ungrouped-pods-as-reported"),
        pytest.param(1, (2, 1, 1, 2, 1), id="group-of-one"),
        pytest.param(4, (8, 4, 4, 8, 4), id="grouped-instances-times-group-size"),
    ],
)
def test_role_statuses_count_pods_for_grouped_roles(
    group_size: int | None, expected: tuple[int, int, int, int, int]
) -> None:
    """Spec section 4: a RoleSet counts a grouped role in instances, the StormService in pods."""
    role: dict[str, Any] = {"name": "decode", "replicas": 2}
    if group_size is not None:
        role["podGroupSize"] = group_size
    view = _rs_obj(
        "a",
        "new",
        [
            {
                "name": "decode",
                "replicas": 2,
                "readyReplicas": 1,
                "notReadyReplicas": 1,
                "updatedReplicas": 2,
                "updatedReadyReplicas": 1,
            }
        ],
    )
    view.obj["spec"] = {"roles": [role]}
    [out] = role_statuses([view], "new")
    fields = ("replicas", "readyReplicas", "notReadyReplicas", "updatedReplicas", "updatedReadyReplicas")
    assert tuple(out[f] for f in fields) == expected


def test_a_roleset_whose_template_is_rejected_is_a_replica_failure() -> None:
    rejected = RoleSetView(
        "b",
        "new",
        ready=False,
        updated=False,
        updated_ready=False,
        stalled="RolloutBlocked: role w: ... (pods of this template are refused)",
        rejected_template="the API server rejects pods of the template: role w: spec.containers[0]...",
    )
    st = compute_status(
        ss(2), [rs("a"), rejected], current_revision="old", update_revision="new", collision_count=0, now=T0
    )
    f = cond(st, "ReplicaFailure")
    assert f is not None and (f["status"], f["reason"]) == ("True", "InvalidPodTemplate")
    assert f["message"].startswith("RoleSet b: the API server rejects pods of the template: role w")
    # A failure of the pass itself still comes first.
    st = compute_status(
        ss(2),
        [rs("a"), rejected],
        current_revision="old",
        update_revision="new",
        collision_count=0,
        failure=Failure("FailedCreate", "boom"),
        now=T0,
    )
    f = cond(st, "ReplicaFailure")
    assert f is not None and f["reason"] == "FailedCreate"


def test_view_reads_a_rejected_template_from_the_roleset() -> None:
    obj = {
        "metadata": {"name": "b", "generation": 1},
        "spec": {"roles": []},
        "status": {
            "observedGeneration": 1,
            "conditions": [
                {"type": "ReplicaFailure", "status": "True", "reason": "InvalidPodTemplate", "message": "m"}
            ],
        },
    }
    assert view_of(obj).rejected_template == "m"
