"""Progress deadline and automatic rollback decisions (controller/stormservice/progress.py) and
the rollback's writes (rollback.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from controller.runtime.errors import Conflict
from controller.runtime.timestamps import format_epoch
from controller.stormservice.progress import (
    Progress,
    apply,
    decide,
    made_progress,
)
from controller.stormservice.revisions import revision_data, template_of, with_unversioned_fields
from controller.stormservice.rollback import roll_back

T0 = 1_700_000_000.0
DEADLINE = 60
STAMP = format_epoch(T0)


def condition(status: str, reason: str, since: float | None = T0, message: str = "m") -> dict[str, Any]:
    out: dict[str, Any] = {"type": "Progressing", "status": status, "reason": reason, "message": message}
    if since is not None:
        out["lastUpdateTime"] = format_epoch(since)
    return out


ROLLING = ("True", "RolloutInProgress", "0 of 1 RoleSets updated to revision b")
COMPLETE = ("True", "RolloutComplete", "1 of 1 RoleSets ready")
PAUSED = ("Unknown", "Paused", "paused: 0 of 1 RoleSets updated")
STALLED = ("False", "RoleSetRolloutStalled", "RoleSet x: RolloutBlocked")
HELD = ("True", "PartitionHeld", "RoleSet x: role decode: 4 of 6 instances kept on the old revision")


@pytest.mark.parametrize(
    ("deadline", "computed", "old", "progressed", "now", "rollback", "last_ready", "expected"),
    [
        pytest.param(None, ROLLING, None, False, T0 + 999, True, "a", Progress(*ROLLING), id="no-deadline"),
        pytest.param(
            DEADLINE, ROLLING, None, False, T0, False, None,
            Progress(*ROLLING, STAMP, 60.0), id="first-pass-starts-the-clock",
        ),
        pytest.param(
            DEADLINE, ROLLING, condition("True", "RolloutComplete"), False, T0 + 5, False, None,
            Progress(*ROLLING, format_epoch(T0 + 5), 60.0), id="new-rollout-after-complete-starts-the-clock",
        ),
        pytest.param(
            DEADLINE, ROLLING, condition("True", "RolloutInProgress"), False, T0 + 20, False, None,
            Progress(*ROLLING, STAMP, 40.0), id="progressing-requeues-at-the-deadline",
        ),
        pytest.param(
            DEADLINE, ROLLING, condition("True", "RolloutInProgress"), True, T0 + 59, False, None,
            Progress(*ROLLING, format_epoch(T0 + 59), 60.0), id="progress-resets-the-clock",
        ),
        pytest.param(
            DEADLINE, ROLLING, condition("True", "RolloutInProgress"), False, T0 + 60, False, None,
            Progress(
                "False", "ProgressDeadlineExceeded",
                f"revision b made no progress for 60s: {ROLLING[2]}", STAMP,
            ),
            id="stalled",
        ),
        pytest.param(
            DEADLINE, ROLLING, condition("True", "RolloutInProgress"), False, T0 + 61, True, "a",
            Progress(
                "False", "ProgressDeadlineExceeded",
                f"revision b made no progress for 60s: {ROLLING[2]}", STAMP, None, "a",
            ),
            id="stalled-rolls-back-to-the-last-ready-revision",
        ),
        pytest.param(
            DEADLINE, ROLLING, condition("False", "ProgressDeadlineExceeded"), False, T0 + 999, False, None,
            Progress(
                "False", "ProgressDeadlineExceeded",
                f"revision b made no progress for 60s: {ROLLING[2]}", STAMP,
            ),
            id="stays-timed-out-without-progress",
        ),
        pytest.param(
            DEADLINE, ROLLING, condition("False", "ProgressDeadlineExceeded"), True, T0 + 999, True, "a",
            Progress(*ROLLING, format_epoch(T0 + 999), 60.0), id="progress-after-timeout-revives",
        ),
        pytest.param(
            DEADLINE, ROLLING, condition("True", "RolloutInProgress"), False, T0 + 61, True, None,
            Progress(
                "False", "ProgressDeadlineExceeded",
                f"revision b made no progress for 60s: {ROLLING[2]}; not rolled back: no revision has "
                "been fully Ready since progressDeadlineSeconds was set", STAMP,
            ),
            id="rollback-target-unknown",
        ),
        pytest.param(
            DEADLINE, ROLLING, condition("True", "RolloutInProgress"), False, T0 + 61, True, "gone",
            Progress(
                "False", "ProgressDeadlineExceeded",
                f"revision b made no progress for 60s: {ROLLING[2]}; not rolled back: revision gone is "
                "no longer in the revision history", STAMP,
            ),
            id="rollback-target-missing-from-history",
        ),
        pytest.param(
            DEADLINE, ROLLING, condition("True", "RolloutInProgress"), False, T0 + 61, True, "b",
            Progress(
                "False", "ProgressDeadlineExceeded",
                f"revision b made no progress for 60s: {ROLLING[2]}; not rolled back: revision b is the "
                "last one that was Ready", STAMP,
            ),
            id="already-rolled-back-a-stalled-rollback-stops",
        ),
        pytest.param(
            DEADLINE, PAUSED, condition("True", "RolloutInProgress"), False, T0 + 999, True, "a",
            Progress(*PAUSED, format_epoch(T0 + 999)), id="paused-never-times-out",
        ),
        pytest.param(
            DEADLINE, PAUSED, condition("Unknown", "Paused"), False, T0 + 999, True, "a",
            Progress(*PAUSED, STAMP), id="paused-keeps-its-time",
        ),
        pytest.param(
            DEADLINE, ROLLING, condition("Unknown", "Paused"), False, T0 + 999, True, "a",
            Progress(*ROLLING, format_epoch(T0 + 999), 60.0), id="resumed-starts-the-clock-afresh",
        ),
        pytest.param(
            DEADLINE, HELD, condition("True", "PartitionHeld"), False, T0 + 999, True, "a",
            Progress(*HELD, STAMP), id="held-by-a-partition-never-times-out",
        ),
        pytest.param(
            DEADLINE, ROLLING, condition("True", "PartitionHeld"), False, T0 + 999, True, "a",
            Progress(*ROLLING, format_epoch(T0 + 999), 60.0), id="partition-lowered-starts-the-clock-afresh",
        ),
        pytest.param(
            DEADLINE, STALLED, condition("True", "RolloutInProgress"), False, T0 + 999, True, "a",
            Progress(*STALLED, format_epoch(T0 + 999)), id="a-more-precise-stall-wins",
        ),
        pytest.param(
            DEADLINE, COMPLETE, condition("True", "RolloutInProgress"), False, T0 + 30, True, "a",
            Progress(*COMPLETE, format_epoch(T0 + 30)), id="just-completed",
        ),
        pytest.param(
            DEADLINE, COMPLETE, condition("True", "RolloutComplete"), False, T0 + 999, True, "a",
            Progress(*COMPLETE, STAMP), id="complete-never-times-out",
        ),
        pytest.param(
            DEADLINE, ROLLING, condition("True", "RolloutInProgress", since=None), False, T0 + 999, False,
            None, Progress(*ROLLING, format_epoch(T0 + 999), 60.0), id="deadline-just-set-starts-the-clock",
        ),
    ],
)  # fmt: skip
def test_decide(
    deadline: int | None,
    computed: tuple[str, str, str],
    old: dict[str, Any] | None,
    progressed: bool,
    now: float,
    rollback: bool,
    last_ready: str | None,
    expected: Progress,
) -> None:
    got = decide(
        deadline=deadline,
        computed=computed,
        old=old,
        progressed=progressed,
        now=now,
        update_revision="b",
        rollback=rollback,
        last_ready_revision=last_ready,
        revisions={"a", "b"},
    )
    assert got == expected


def counts(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "updateRevision": "b",
        "replicas": 2,
        "updatedReplicas": 1,
        "updatedReadyReplicas": 0,
        "readyReplicas": 1,
        "roleStatuses": [{"name": "w", "replicas": 2, "readyReplicas": 1, "updatedReplicas": 1}],
    }
    return {**base, **kw}


@pytest.mark.parametrize(
    ("new", "progressed"),
    [
        pytest.param(counts(), False, id="nothing-moved"),
        pytest.param(counts(updateRevision="c"), True, id="new-update-revision"),
        pytest.param(counts(updatedReplicas=2), True, id="roleset-updated"),
        pytest.param(counts(updatedReadyReplicas=1), True, id="roleset-updated-and-ready"),
        pytest.param(counts(readyReplicas=2), True, id="roleset-ready"),
        pytest.param(counts(readyReplicas=0), False, id="roleset-not-ready-is-no-progress"),
        pytest.param(counts(replicas=1), True, id="old-roleset-gone"),
        pytest.param(
            counts(roleStatuses=[{"name": "w", "replicas": 2, "readyReplicas": 2, "updatedReplicas": 1}]),
            True,
            id="pod-ready",
        ),
        pytest.param(
            counts(roleStatuses=[{"name": "w", "replicas": 2, "readyReplicas": 1, "updatedReplicas": 2}]),
            True,
            id="pod-updated",
        ),
        pytest.param(
            counts(roleStatuses=[{"name": "w", "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}]),
            True,
            id="old-pod-gone",
        ),
    ],
)
def test_made_progress(new: dict[str, Any], progressed: bool) -> None:
    assert made_progress(counts(), new, want=1) is progressed


def test_made_progress_counts_rolesets_nearer_to_replicas() -> None:
    assert made_progress(counts(replicas=1, updatedReplicas=1), counts(replicas=2, updatedReplicas=2), want=3)
    assert not made_progress(
        counts(replicas=3, updatedReplicas=3), counts(replicas=3, updatedReplicas=3), want=4
    )


def storm(spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "s", "namespace": "ns", "resourceVersion": "7"},
        "spec": spec,
        "status": status,
    }


def computed_status(
    update: str, ready: bool, progressing: tuple[str, str, str] = ROLLING, carried: Any = None
) -> dict[str, Any]:
    """As compute_status makes it: conditions of other types carried over from `carried`."""
    others = [x for x in (carried or {}).get("conditions") or () if x["type"] not in ("Ready", "Progressing")]
    return {
        "updateRevision": update,
        "conditions": [
            {"type": "Ready", "status": "True" if ready else "False", "reason": "r", "message": "m"},
            {
                "type": "Progressing",
                "status": progressing[0],
                "reason": progressing[1],
                "message": progressing[2],
            },
            *others,
        ],
    }


def conditions_of(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {x["type"]: x for x in status["conditions"]}


def test_apply_without_a_deadline_changes_nothing() -> None:
    new = computed_status("b", False)
    out = apply(storm({}, computed_status("b", False)), new, now=T0, revisions={"b"}, want=1)
    assert out.status == new and out.requeue_after is None and out.rollback_to is None
    assert "lastUpdateTime" not in conditions_of(out.status)["Progressing"]


def test_apply_records_the_last_ready_revision_and_rolls_back_once_stalled() -> None:
    spec = {"progressDeadlineSeconds": DEADLINE, "rollbackOnFailure": True}
    ready = apply(storm(spec, {}), computed_status("a", True, COMPLETE), now=T0, revisions={"a"}, want=1)
    assert ready.status["lastReadyRevision"] == "a"

    old = {**computed_status("b", False), "lastReadyRevision": "a"}
    old["conditions"][1]["lastUpdateTime"] = STAMP
    stalled = apply(storm(spec, old), computed_status("b", False), now=T0 + 61, revisions={"a", "b"}, want=1)
    assert stalled.rollback_to == "a"
    assert stalled.status["lastReadyRevision"] == "a"
    got = conditions_of(stalled.status)
    assert (got["Progressing"]["status"], got["Progressing"]["reason"]) == (
        "False",
        "ProgressDeadlineExceeded",
    )
    assert got["RolledBack"]["status"] == "True"
    assert got["RolledBack"]["message"].startswith("rolled back from revision b to revision a")

    # The rollback rolls out: RolledBack stays; a rollout of another revision removes it.
    rolling_back = apply(
        storm(spec, stalled.status),
        computed_status("a", False, carried=stalled.status),
        now=T0 + 62,
        revisions={"a", "b"},
        want=1,
    )
    assert "RolledBack" in conditions_of(rolling_back.status)
    assert rolling_back.rollback_to is None
    moved_on = apply(
        storm(spec, rolling_back.status),
        computed_status("c", False, carried=rolling_back.status),
        now=T0 + 63,
        revisions={"a", "b", "c"},
        want=1,
    )
    assert "RolledBack" not in conditions_of(moved_on.status)


def test_the_rollback_template_keeps_what_revisions_do_not_record() -> None:
    def role(name: str, image: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}, **extra}

    old = {"spec": {"roles": [role("p", "v1", replicas=9), role("r", "v1", replicas=2)]}}
    revision = {"metadata": {"name": "a"}, "data": revision_data(old)}
    desired = {"spec": {"roles": [role("p", "v2", replicas=3, scaling="External")]}}
    out = with_unversioned_fields(template_of(revision), desired, {"r": 2})
    assert out == {
        "spec": {"roles": [role("p", "v1", replicas=3, scaling="External"), role("r", "v1", replicas=2)]}
    }


class FakeControl:
    def __init__(self, conflict: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.conflict = conflict

    async def patch_status(self, storm_service: Any, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("status", patch))
        return {**storm_service, "metadata": {**storm_service["metadata"], "resourceVersion": "8"}}

    async def replace_template(self, storm_service: Any, resource_version: str, template: Any) -> Any:
        self.calls.append(("template", (resource_version, template)))
        if self.conflict:
            raise Conflict(409, "Conflict", "the object has been modified")
        return storm_service


class FakeRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def event(self, obj: Any, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


@pytest.mark.parametrize("conflict", [False, True], ids=["written", "user-edit-wins"])
def test_roll_back_writes_status_then_the_template_on_that_version(conflict: bool) -> None:
    revision = {"metadata": {"name": "a"}, "data": revision_data({"spec": {"roles": [{"name": "p"}]}})}
    obj = storm({"template": {"spec": {"roles": [{"name": "p", "replicas": 2}]}}}, {})
    status = {"conditions": [{"type": "RolledBack", "status": "True", "reason": "ProgressDeadlineExceeded",
                              "message": "rolled back from revision b to revision a"}]}  # fmt: skip
    control, recorder = FakeControl(conflict), FakeRecorder()
    result = asyncio.run(roll_back(control, recorder, obj, status, revision, []))
    assert [kind for kind, _ in control.calls] == ["status", "template"]
    assert control.calls[0][1] == {"metadata": {"resourceVersion": "7"}, "status": status}
    assert control.calls[1][1] == ("8", {"spec": {"roles": [{"name": "p", "replicas": 2}]}})
    if conflict:
        assert result is None and recorder.events == []
    else:
        assert result is not None
        assert recorder.events == [("Warning", "RolledBack", "rolled back from revision b to revision a")]
