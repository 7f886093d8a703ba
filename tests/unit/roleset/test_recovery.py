"""recovery.py: what a failed member of a pod group leads to, given the grace, the budget and
the history; and how build_view carries the decisions out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.roleset import labels as L
from controller.roleset import recovery as rec
from controller.roleset.instances import GroupHolds, build_view, pod_info
from controller.roleset.sync import SyncError
from controller.runtime.errors import ServerError
from controller.runtime.resources import PODS
from tests.unit.roleset.factories import mkpod, params
from tests.unit.roleset.harness import NS, Harness, role, roleset

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def ok(k: int) -> rec.Member:
    return rec.Member(f"u{k}", k, "ok")


def failed(k: int) -> rec.Member:
    return rec.Member(f"u{k}", k, "failed")


def leaving(k: int) -> rec.Member:
    return rec.Member(f"u{k}", k, "terminating")


def unhealthy(k: int, since: datetime | None) -> rec.Member:
    return rec.Member(f"u{k}", k, "unhealthy", since)


RECREATE_30 = rec.RecoveryPolicy(recreate=True, grace_seconds=30)
REPLACE_30 = rec.RecoveryPolicy(recreate=False, grace_seconds=30)
RECREATE_BUDGET = rec.RecoveryPolicy(recreate=True, grace_seconds=30, max_restarts=2, window_seconds=600)
REPLACE_BUDGET = rec.RecoveryPolicy(recreate=False, max_restarts=1, window_seconds=600)
BUDGET_ONLY = rec.RecoveryPolicy(recreate=True, max_restarts=1, window_seconds=600)

# (case, members of a group of 2, policy, history, expected decision)
DECISIONS: list[tuple[str, list[rec.Member], rec.RecoveryPolicy, list[datetime], rec.Decision]] = [
    ("healthy", [ok(0), ok(1)], RECREATE_30, [], rec.Decision("none")),
    (
        "unhealthy within the grace: wait for its end",
        [ok(0), unhealthy(1, ago(10))],
        RECREATE_30,
        [],
        rec.Decision("wait", wake_at=later(20)),
    ),
    (
        "unhealthy past the grace: recreate, failing it",
        [ok(0), unhealthy(1, ago(30))],
        RECREATE_30,
        [],
        rec.Decision("recover", fail=("u1",)),
    ),
    (
        "unhealthy without a known start: failed now",
        [ok(0), unhealthy(1, None)],
        RECREATE_30,
        [],
        rec.Decision("recover", fail=("u1",)),
    ),
    (
        "unhealthy without a grace: left to the kubelet",
        [ok(0), unhealthy(1, ago(3600))],
        BUDGET_ONLY,
        [],
        rec.Decision("none"),
    ),
    (
        "deleted member: no grace, recreated at once",
        [ok(0)],
        RECREATE_30,
        [],
        rec.Decision("recover"),
    ),
    ("terminating member: the same", [ok(0), leaving(1)], RECREATE_30, [], rec.Decision("recover")),
    ("Failed member: terminal, at once", [ok(0), failed(1)], RECREATE_30, [], rec.Decision("recover")),
    (
        "every member on its way out: nothing left to recover",
        [leaving(0), leaving(1)],
        RECREATE_30,
        [],
        rec.Decision("none"),
    ),
    (
        "replace: the grace ended, the member goes; its successor is recorded when created",
        [ok(0), unhealthy(1, ago(31))],
        REPLACE_30,
        [],
        rec.Decision("recover", fail=("u1",)),
    ),
    (
        "replace: a member on its way out is the rest of a recovery",
        [ok(0), leaving(1)],
        REPLACE_BUDGET,
        [ago(5)],
        rec.Decision("none"),
    ),
    (
        "replace: one member waits while another is replaced",
        [failed(0), unhealthy(1, ago(10))],
        REPLACE_30,
        [],
        rec.Decision("recover", wake_at=later(20)),
    ),
    (
        "budget: the recovery is recorded",
        [ok(0), unhealthy(1, ago(40))],
        RECREATE_BUDGET,
        [ago(100)],
        rec.Decision("recover", fail=("u1",), record=True),
    ),
    (
        "budget: exhausted, held until the older of the two leaves the window",
        [ok(0), unhealthy(1, ago(40))],
        RECREATE_BUDGET,
        [ago(100), ago(300)],
        rec.Decision("exhausted", wake_at=later(300), recent=2),
    ),
    (
        "budget: recoveries out of the window do not count",
        [ok(0)],
        RECREATE_BUDGET,
        [ago(601), ago(700), ago(10)],
        rec.Decision("recover", record=True),
    ),
    (
        "budget: replacing a missing member is recorded",
        [ok(0)],
        REPLACE_BUDGET,
        [],
        rec.Decision("recover", record=True),
    ),
    (
        "budget: deleting a Failed member is not recorded (its replacement will be)",
        [ok(0), failed(1)],
        REPLACE_BUDGET,
        [],
        rec.Decision("recover"),
    ),
    (
        "budget: exhausted also holds the deletion of a Failed member",
        [ok(0), failed(1)],
        REPLACE_BUDGET,
        [ago(60)],
        rec.Decision("exhausted", wake_at=later(540), recent=1),
    ),
    (
        "budget: a healthy group is not held, whatever its history",
        [ok(0), ok(1)],
        REPLACE_BUDGET,
        [ago(60)],
        rec.Decision("none"),
    ),
]


@pytest.mark.parametrize(
    ("members", "policy", "history", "expected"),
    [case[1:] for case in DECISIONS],
    ids=[case[0] for case in DECISIONS],
)
def test_decide(
    members: list[rec.Member], policy: rec.RecoveryPolicy, history: list[datetime], expected: rec.Decision
) -> None:
    assert rec.decide(2, members, policy, history, NOW) == expected


def status_pod(
    *,
    phase: str = "Running",
    ready: bool = False,
    restarts: int = 0,
    since: str | None = "2026-01-01T11:59:50Z",
    deleting: bool = False,
    inplace: bool = False,
) -> dict[str, Any]:
    pod = mkpod("p", ready=ready, phase=phase, deleting=deleting, target="h2" if inplace else None)
    ready_cond: dict[str, Any] = {"type": "Ready", "status": "True" if ready else "False"}
    if since is not None:
        ready_cond["lastTransitionTime"] = since
    pod["status"]["conditions"] = [ready_cond]
    pod["status"]["containerStatuses"] = [{"name": "main", "ready": ready, "restartCount": restarts}]
    return pod


MEMBER_STATES: list[tuple[str, dict[str, Any], tuple[rec.MemberState, datetime | None]]] = [
    ("ready", status_pod(ready=True, restarts=3), ("ok", None)),
    ("not ready, never restarted: a probe or a node, not a failure", status_pod(), ("ok", None)),
    ("not ready after a restart", status_pod(restarts=1), ("unhealthy", ago(10))),
    ("not ready after a restart, time unknown", status_pod(restarts=1, since=None), ("unhealthy", None)),
    ("an in-place update restarts on purpose", status_pod(restarts=1, inplace=True), ("ok", None)),
    ("pending", status_pod(phase="Pending", restarts=1), ("ok", None)),
    ("failed", status_pod(phase="Failed"), ("failed", None)),
    ("succeeded is terminal too", status_pod(phase="Succeeded"), ("failed", None)),
    ("terminating", status_pod(restarts=1, deleting=True), ("terminating", None)),
]


@pytest.mark.parametrize(
    ("pod", "expected"), [c[1:] for c in MEMBER_STATES], ids=[c[0] for c in MEMBER_STATES]
)
def test_member_state(pod: dict[str, Any], expected: tuple[rec.MemberState, datetime | None]) -> None:
    assert rec.member_state(pod) == expected


def group_pods(index: int, *states: str, hash_: str = "new") -> list[dict[str, Any]]:
    """Members of group `index` (size len(states)): ok, failed, unhealthy or gone."""
    out = []
    key = f"rs-worker-{hash_}-{index}"
    for k, state in enumerate(states):
        if state == "gone":
            continue
        pod = mkpod(
            f"{key}-{k}",
            hash_=hash_,
            index=index,
            group=key,
            member=k,
            size=len(states),
            phase="Failed" if state == "failed" else "Running",
            ready=state == "ok",
        )
        if state == "unhealthy":
            pod["status"]["conditions"][0]["lastTransitionTime"] = "2026-01-01T11:59:00Z"
            pod["status"]["containerStatuses"] = [{"name": "main", "ready": False, "restartCount": 1}]
        out.append(pod)
    return out


def plan(
    pods: list[dict[str, Any]], policy: rec.RecoveryPolicy, history: dict[str, list[datetime]] | None = None
) -> rec.RoleRecovery:
    states = [(pod_info(p), *rec.member_state(p)) for p in pods]
    return rec.plan_recovery("worker", 2, 2, "new", states, policy, history or {}, NOW)


def test_plan_records_a_recreate_and_keeps_the_window() -> None:
    pods = group_pods(0, "ok", "unhealthy") + group_pods(1, "ok", "ok")
    history = {"rs-worker-new-0": [ago(700)], "rs-worker-new-1": [ago(10)], "rs-worker-old-0": [ago(20)]}
    out = plan(pods, RECREATE_BUDGET, history)
    assert out.fail == {"uid-rs-worker-new-0-1"}
    assert out.hold == set()
    assert out.recovered == ["rs-worker-new-0"]
    # The entry out of the window is dropped, this pass's is added; a group not seen now (its
    # pods replaced under another hash) keeps its entries while they are in the window.
    assert out.history == {
        "rs-worker-new-0": [NOW],
        "rs-worker-new-1": [ago(10)],
        "rs-worker-old-0": [ago(20)],
    }
    assert out.unrecorded() == {"rs-worker-new-1": [ago(10)], "rs-worker-old-0": [ago(20)]}
    assert out.unrecorded(["rs-worker-new-1"]) == out.history  # no record of it this pass
    assert out.unrecorded(["rs-worker-new-0"]) == out.unrecorded()


def test_plan_holds_an_exhausted_group_and_wakes_when_the_window_frees_it() -> None:
    pods = group_pods(0, "ok", "failed") + group_pods(1, "ok", "unhealthy")
    policy = rec.RecoveryPolicy(recreate=True, grace_seconds=120, max_restarts=1, window_seconds=600)
    out = plan(pods, policy, {"rs-worker-new-0": [ago(100)]})
    assert out.hold == {"rs-worker-new-0"}
    assert out.exhausted == [
        "role worker: group rs-worker-new-0 was recovered 1 times within 600s "
        "(restartBudget.maxRestarts 1); left as it is until 2026-01-01T12:08:20Z"
    ]
    # Group 1's member went not Ready at 11:59:00: its grace ends at 12:01:00, before group 0
    # is free again.
    assert out.wake_at == later(60)


def test_outdated_and_surplus_groups_are_left_to_the_rollout() -> None:
    pods = group_pods(0, "ok", "failed", hash_="old") + group_pods(2, "ok", "failed")
    # Same template, another podGroupSize (not in the hash): outdated too, not "missing" a member.
    pods += group_pods(1, "ok")
    history = {"rs-worker-old-0": [ago(5)], "rs-worker-new-2": [ago(5)], "rs-worker-new-1": [ago(5)]}
    out = plan(pods, BUDGET_ONLY, history)
    assert out.hold == set() and out.recovered == []


def view_of(pods: list[dict[str, Any]], recreate: bool, holds: GroupHolds | None) -> Any:
    return build_view(params(2, group_size=2, recreate=recreate), [pod_info(p) for p in pods], holds)


@pytest.mark.parametrize("recreate", [True, False])
def test_a_held_group_is_left_as_it_is(recreate: bool) -> None:
    pods = group_pods(0, "ok", "failed") + group_pods(1, "ok", "gone")
    free = view_of(pods, recreate, None)
    assert free.cleanup  # without a hold: the Failed member (and with Recreate the rest) go
    held = view_of(pods, recreate, GroupHolds(hold=frozenset({"rs-worker-new-0", "rs-worker-new-1"})))
    assert held.cleanup == [] and held.missing_members == []
    assert sorted(i.key for i in held.instances) == ["rs-worker-new-0", "rs-worker-new-1"]
    assert not any(i.ready for i in held.instances)
    # The Failed member keeps its name: its slot is not refilled next to it.
    assert (0, 1) in held.taken


def test_a_held_group_whose_members_all_failed_is_not_created_again() -> None:
    pods = group_pods(0, "failed", "failed")
    held = view_of(pods, True, GroupHolds(hold=frozenset({"rs-worker-new-0"})))
    assert held.cleanup == [] and held.instances == []
    assert {(0, 0), (0, 1)} <= held.taken


@pytest.mark.parametrize(
    ("recreate", "deleted"),
    [
        (True, {"rs-worker-new-0-0": "group-recreate", "rs-worker-new-0-1": "not-recovered"}),
        (False, {"rs-worker-new-0-1": "not-recovered"}),
    ],
)
def test_a_member_whose_grace_ended_is_handled_as_failed(recreate: bool, deleted: dict[str, str]) -> None:
    pods = group_pods(0, "ok", "unhealthy")
    view = view_of(pods, recreate, GroupHolds(fail=frozenset({"uid-rs-worker-new-0-1"})))
    assert {p.name: why for p, why in view.cleanup} == deleted


def test_history_round_trips_through_the_status() -> None:
    history = {"worker": {"g1": [ago(10), ago(20)]}, "other": {"g2": [NOW]}}
    status = rec.history_status(history)
    assert status == [
        {"group": "g2", "role": "other", "times": ["2026-01-01T12:00:00Z"]},
        {"group": "g1", "role": "worker", "times": ["2026-01-01T11:59:40Z", "2026-01-01T11:59:50Z"]},
    ]
    assert rec.read_history({"groupRecoveries": status}) == {
        "worker": {"g1": [ago(20), ago(10)]},
        "other": {"g2": [NOW]},
    }
    assert L.REASON_GROUP_RESTART_BUDGET_EXHAUSTED == "GroupRestartBudgetExhausted"


# --- the sync, on a FakeClient ---------------------------------------------------------------


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    await harness.start()
    yield harness
    await harness.stop()


def budget_role(**extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "replicas": 1,
        "podGroupSize": 2,
        "recoveryPolicy": "Recreate",
        "restartBudget": {"maxRestarts": 1, "windowSeconds": 3600},
    }
    return role("worker", **(fields | extra))


def fail(h: Harness, pod: dict[str, Any]) -> None:
    status = dict(pod.get("status") or {})
    status["phase"] = "Failed"
    h.client.set_status(PODS, NS, pod["metadata"]["name"], status)


def uids(h: Harness) -> set[str]:
    return {p["metadata"]["uid"] for p in h.pods("worker")}


async def test_budget_holds_a_group_across_a_controller_restart(h: Harness) -> None:
    h.create(roleset(roles=[budget_role()]))
    await h.converge()
    first = uids(h)
    assert len(first) == 2

    fail(h, h.pods("worker")[1])
    await h.sync()  # (converge would first mark it Running again, as kwok does for new pods)
    await h.converge()
    second = uids(h)
    assert len(second) == 2 and not second & first  # recreated as a whole
    (entry,) = h.get()["status"]["groupRecoveries"]
    assert entry["role"] == "worker" and len(entry["times"]) == 1
    assert h.condition(L.COND_REPLICA_FAILURE) is None

    failing = h.pods("worker")[1]
    fail(h, failing)
    requeue = await h.sync()
    assert uids(h) == second  # held: not even the Failed member is deleted
    cond = h.condition(L.COND_REPLICA_FAILURE)
    assert cond is not None and cond["reason"] == L.REASON_GROUP_RESTART_BUDGET_EXHAUSTED
    assert entry["group"] in cond["message"]
    assert h.recorder.reasons().count(L.REASON_GROUP_RESTART_BUDGET_EXHAUSTED) == 1
    assert requeue is not None and 3000 < requeue <= 3601  # woken when the window frees it
    await h.sync()
    assert h.recorder.reasons().count(L.REASON_GROUP_RESTART_BUDGET_EXHAUSTED) == 1  # once

    await h.stop()
    h2 = Harness(client=h.client)  # a new controller process: the history is in the status
    await h2.start()
    try:
        await h2.sync()
        assert uids(h2) == second
        cond = h2.condition(L.COND_REPLICA_FAILURE)
        assert cond is not None and cond["reason"] == L.REASON_GROUP_RESTART_BUDGET_EXHAUSTED

        # A larger budget is a spec change: the group is recovered at once.
        h2.update_spec(lambda s: s["roles"][0]["restartBudget"].__setitem__("maxRestarts", 2))
        await h2.sync()
        await h2.converge()
        assert len(uids(h2)) == 2 and not uids(h2) & second
        assert h2.condition(L.COND_REPLICA_FAILURE) is None
        (entry,) = h2.get()["status"]["groupRecoveries"]
        assert len(entry["times"]) == 2
    finally:
        await h2.stop()


async def test_without_the_fields_nothing_new_is_written(h: Harness) -> None:
    h.create(roleset(roles=[role("worker", replicas=1, podGroupSize=2, recoveryPolicy="Recreate")]))
    await h.converge()
    first = uids(h)
    fail(h, h.pods("worker")[1])
    await h.sync()
    await h.converge()
    assert not uids(h) & first
    assert "groupRecoveries" not in h.get()["status"]


def test_a_history_written_but_not_yet_cached_is_not_lost() -> None:
    cached = {"worker": {"g1": [ago(60)]}}
    written = {"worker": {"g1": [ago(60), NOW], "g2": [ago(5)]}}
    assert rec.merge_history(cached, written) == {"worker": {"g1": [ago(60), NOW], "g2": [ago(5)]}}
    assert rec.merge_history(written, {}) == written
    twice = {"worker": {"g1": [NOW, NOW]}}
    assert rec.merge_history(twice, {"worker": {"g1": [NOW]}}) == twice


@pytest.mark.parametrize("verb", ["delete", "create"])
async def test_a_recovery_whose_writes_failed_is_not_counted(h: Harness, verb: str) -> None:
    """A transient API error during a recovery: the retry carries it out, and the budget counts
    it once (counted twice, a budget of 1 would hold the group broken for the whole window)."""
    recreate = verb == "delete"  # Recreate deletes the group; ReplaceUnhealthy recreates a member
    h.create(roleset(roles=[budget_role(recoveryPolicy="Recreate" if recreate else "ReplaceUnhealthy")]))
    await h.converge()
    before = uids(h)
    failing = h.pods("worker")[1]
    if recreate:
        fail(h, failing)
    else:
        await h.client.delete(PODS, NS, failing["metadata"]["name"])  # a member gone: recreated
    h.client.inject_error(verb, "pods", ServerError(500, "InternalError", "boom"), times=1)
    with pytest.raises(SyncError):
        await h.sync()
    assert "groupRecoveries" not in (h.get().get("status") or {}), "nothing was recovered yet"

    await h.sync()
    await h.converge()
    after = uids(h)
    assert len(after) == 2 and after != before
    (entry,) = h.get()["status"]["groupRecoveries"]
    assert len(entry["times"]) == 1
    assert h.condition(L.COND_REPLICA_FAILURE) is None
