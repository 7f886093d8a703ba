"""Progress deadline and automatic rollback: pure decisions, as kube-controller-manager's
Deployment controller makes them (`syncRolloutStatus`, `DeploymentProgressing`,
`DeploymentTimedOut`).

With `spec.progressDeadlineSeconds` (> 0) the Progressing condition carries a
`lastUpdateTime`: the last time the StormService made progress (a new update revision, a
RoleSet or pod newly updated or ready, an old RoleSet gone, the RoleSet count nearer to
`replicas`). While it is not Ready and nothing moved for the deadline, Progressing becomes
False with reason ProgressDeadlineExceeded, until it moves again. The clock only runs while
Progressing is True and not complete: a paused StormService (Unknown), one held by a role's
partition (PartitionHeld), a stalled or blocked one (False, a more precise reason) or a
complete one never times out; resuming starts the clock afresh. The sync is requeued at the deadline, never polled.

With `spec.rollbackOnFailure`, a timed-out rollout is rolled back to `status.lastReadyRevision`
(the last revision that was fully Ready): never to the revision that timed out (a rollback that
stalls in turn stays Progressing=False), never to one that was not Ready. The RolledBack
condition says from which revision to which; it goes when a rollout of another revision starts.

Without a deadline (every AIBrix manifest) nothing here changes the status compute_status makes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from apis.v1alpha1 import constants as c
from controller.runtime.timestamps import format_epoch
from controller.stormservice.status import get_condition, remove_condition, set_condition
from controller.stormservice.view import parse_timestamp

Obj = dict[str, Any]

REASON_DEADLINE_EXCEEDED = c.REASON_PROGRESS_DEADLINE_EXCEEDED
CONDITION_ROLLED_BACK = c.CONDITION_ROLLED_BACK

#: Progressing=True reasons that wait for nothing: done, or held by request (a role's partition).
_NO_CLOCK = (c.REASON_ROLLOUT_COMPLETE, c.REASON_PARTITION_HELD)
#: Status counts that only grow while a rollout or scale-up goes on.
_RISING = ("updatedReplicas", "updatedReadyReplicas", "readyReplicas")


def deadline_of(spec: Mapping[str, Any]) -> int | None:
    """The progress deadline in seconds; None when absent or 0 (no deadline)."""
    value = spec.get("progressDeadlineSeconds")
    return int(value) if value else None


def made_progress(old: Mapping[str, Any], new: Mapping[str, Any], want: int) -> bool:
    """Whether `new` status is a step forward from `old` (the last one written): a new update
    revision, more RoleSets or pods updated or ready, fewer RoleSets or pods of older revisions,
    or the RoleSet count nearer to `want`."""
    if old.get("updateRevision") != new.get("updateRevision"):
        return True

    def n(status: Mapping[str, Any], key: str) -> int:
        return int(status.get(key) or 0)

    if any(n(new, k) > n(old, k) for k in _RISING):
        return True
    if n(new, "replicas") - n(new, "updatedReplicas") < n(old, "replicas") - n(old, "updatedReplicas"):
        return True
    if abs(n(new, "replicas") - want) < abs(n(old, "replicas") - want):
        return True
    old_roles = {r.get("name"): r for r in old.get("roleStatuses") or ()}
    for role in new.get("roleStatuses") or ():
        before = old_roles.get(role.get("name")) or {}
        if any(n(role, k) > n(before, k) for k in _RISING):
            return True
        if n(role, "replicas") - n(role, "updatedReplicas") < n(before, "replicas") - n(
            before, "updatedReplicas"
        ):
            return True
    return False


@dataclass(frozen=True, slots=True)
class Progress:
    """The Progressing condition to write (status, reason, message, lastUpdateTime), when to look
    again (seconds), and the revision to roll back to, if any."""

    status: str
    reason: str
    message: str
    last_update_time: str | None = None
    requeue_after: float | None = None
    rollback_to: str | None = None


def decide(
    *,
    deadline: int | None,
    computed: tuple[str, str, str],
    old: Mapping[str, Any] | None,
    progressed: bool,
    now: float,
    update_revision: str,
    rollback: bool = False,
    last_ready_revision: str | None = None,
    revisions: Collection[str] = (),
) -> Progress:
    """The Progressing condition given the one compute_status made (`computed`: status,
    reason, message), the condition last written (`old`), and whether this pass saw progress.
    `revisions`: the names of the ControllerRevisions still in the history."""
    status, reason, message = computed
    if deadline is None:
        return Progress(status, reason, message)
    old = old or {}
    since = parse_timestamp(old.get("lastUpdateTime")) or None
    if status != "True" or reason in _NO_CLOCK:
        # Paused, stalled, blocked, held by a partition or complete: no clock runs. Its time is
        # when this state began.
        same = (old.get("status"), old.get("reason")) == (status, reason)
        return Progress(status, reason, message, format_epoch(since if same and since else now))
    timed_out = old.get("status") == "False" and old.get("reason") == REASON_DEADLINE_EXCEEDED
    running = old.get("status") == "True" and old.get("reason") not in _NO_CLOCK
    if progressed or since is None or not (running or timed_out):
        return Progress(status, reason, message, format_epoch(now), float(deadline))
    left = since + deadline - now
    if not timed_out and left > 0:
        return Progress(status, reason, message, format_epoch(since), left)
    stuck = f"revision {update_revision} made no progress for {deadline}s: {message}"
    target, why_not = rollback_target(
        rollback=rollback,
        update_revision=update_revision,
        last_ready_revision=last_ready_revision,
        revisions=revisions,
    )
    if why_not is not None:
        stuck = f"{stuck}; not rolled back: {why_not}"
    return Progress("False", REASON_DEADLINE_EXCEEDED, stuck, format_epoch(since), None, target)


def rollback_target(
    *, rollback: bool, update_revision: str, last_ready_revision: str | None, revisions: Collection[str]
) -> tuple[str | None, str | None]:
    """(revision to roll back to, None) or (None, why not; None when rollback is off)."""
    if not rollback:
        return None, None
    if last_ready_revision is None:
        return None, "no revision has been fully Ready since progressDeadlineSeconds was set"
    if last_ready_revision == update_revision:
        return None, f"revision {update_revision} is the last one that was Ready"
    if last_ready_revision not in revisions:
        return None, f"revision {last_ready_revision} is no longer in the revision history"
    return last_ready_revision, None


def rolled_back_message(from_revision: str, to_revision: str, deadline: int) -> str:
    return (
        f"rolled back from revision {from_revision} to revision {to_revision}: "
        f"{from_revision} made no progress for {deadline}s"
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """The status to write (with the Progressing condition, lastReadyRevision and RolledBack
    decided), when to look again, and the rollback to make, if any."""

    status: Obj
    requeue_after: float | None = None
    rollback_to: str | None = None


def apply(
    storm_service: Mapping[str, Any],
    status: Mapping[str, Any],
    *,
    now: float,
    revisions: Collection[str],
    want: int,
) -> Outcome:
    """`status` (from compute_status) with the deadline applied; `revisions`: the names of the
    ControllerRevisions in the history; `want`: spec.replicas."""
    spec = storm_service.get("spec") or {}
    deadline = deadline_of(spec)
    out: Obj = dict(status)
    if deadline is None:
        # Only a StormService that had a deadline has these: they go with it.
        out.pop("lastReadyRevision", None)
        out["conditions"] = remove_condition(status.get("conditions") or (), CONDITION_ROLLED_BACK)
        return Outcome(out)
    old = storm_service.get("status") or {}
    update = str(status.get("updateRevision") or "")
    ready = get_condition(status, c.CONDITION_READY) or {}
    last_ready = update if ready.get("status") == "True" else old.get("lastReadyRevision")
    computed = get_condition(status, c.CONDITION_PROGRESSING) or {}
    progress = decide(
        deadline=deadline,
        computed=(str(computed.get("status")), str(computed.get("reason")), str(computed.get("message"))),
        old=get_condition(old, c.CONDITION_PROGRESSING),
        progressed=made_progress(old, status, want),
        now=now,
        update_revision=update,
        rollback=bool(spec.get("rollbackOnFailure")),
        last_ready_revision=last_ready,
        revisions=revisions,
    )
    conditions = set_condition(
        status.get("conditions") or (),
        c.CONDITION_PROGRESSING,
        progress.status,
        progress.reason,
        progress.message,
        format_epoch(now),
    )
    conditions = [
        {**cond, "lastUpdateTime": progress.last_update_time}
        if cond.get("type") == c.CONDITION_PROGRESSING
        else cond
        for cond in conditions
    ]
    if progress.rollback_to is not None:
        conditions = set_condition(
            conditions,
            CONDITION_ROLLED_BACK,
            "True",
            REASON_DEADLINE_EXCEEDED,
            rolled_back_message(update, progress.rollback_to, deadline),
            format_epoch(now),
        )
    elif old.get("updateRevision") != update and update != last_ready:
        # A rollout of a revision the rollback did not return to: the user has moved on.
        conditions = remove_condition(conditions, CONDITION_ROLLED_BACK)
    out["conditions"] = conditions
    if last_ready is not None:
        out["lastReadyRevision"] = last_ready
    else:
        out.pop("lastReadyRevision", None)
    return Outcome(out, progress.requeue_after, progress.rollback_to)
