"""StormService status, recomputed from the cache on every pass.

Every field is always present (so a merge patch of the whole status is a full replacement, even
when computed against a stale copy) and conditions keep their `lastTransitionTime` unless their
status flips, so a pass that observes nothing new produces an identical status and writes
nothing (the reference rewrote it every pass and woke itself forever).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from apis.v1alpha1 import constants as c
from controller.runtime.statusbatch import condition_states
from controller.runtime.timestamps import now_rfc3339
from controller.stormservice.dependencies import waiting_for_dependencies
from controller.stormservice.labels import scaling_target_selector
from controller.stormservice.scale import budget_for
from controller.stormservice.view import RoleSetView, status_is_fresh

Obj = dict[str, Any]

# Condition reasons.
REASON_READY = "AllRoleSetsReady"
REASON_ROLLOUT = "RolloutInProgress"
REASON_SCALING = "Scaling"
REASON_NOT_READY = "RoleSetsNotReady"
REASON_PAUSED = "Paused"
REASON_COMPLETE = c.REASON_ROLLOUT_COMPLETE
REASON_ROLESET_STALLED = "RoleSetRolloutStalled"
# A pass failed before it could compute a status (claiming RoleSets, writing a revision).
REASON_RECONCILE_FAILED = "ReconcileFailed"

ROLE_COUNT_FIELDS = ("replicas", "readyReplicas", "notReadyReplicas")
ROLE_UPDATED_FIELDS = ("updatedReplicas", "updatedReadyReplicas")


@dataclass(frozen=True, slots=True)
class Failure:
    """A write that failed in this pass: the ReplicaFailure condition reports it."""

    reason: str
    message: str


def set_condition(
    conditions: Sequence[Mapping[str, Any]], type_: str, status: str, reason: str, message: str, now: str
) -> list[Obj]:
    """`conditions` with `type_` set; `lastTransitionTime` moves only when the status flips."""
    out: list[Obj] = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            out.append(dict(cond))
            continue
        found = True
        same = cond.get("status") == status
        out.append(
            {
                "type": type_,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": cond.get("lastTransitionTime")
                if same and cond.get("lastTransitionTime")
                else now,
            }
        )
    if not found:
        out.append(
            {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": now}
        )
    return out


def remove_condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> list[Obj]:
    return [dict(cond) for cond in conditions if cond.get("type") != type_]


def get_condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in status.get("conditions") or ():
        if cond.get("type") == type_:
            return cond  # type: ignore[no-any-return]
    return None


def role_statuses(rolesets: Sequence[RoleSetView], update_revision: str) -> list[Obj]:
    """Per role, summed over the StormService's RoleSets, in pods: a RoleSet counts a grouped
    role in instances, so those counts are multiplied by the role's podGroupSize.
    The updated counts come only from RoleSets of the update revision whose status is current:
    an old RoleSet's pods are "updated" only to its own, outdated spec (the reference summed spec
    replicas here)."""
    sums: dict[str, Obj] = {}
    for rs in rolesets:
        counts_updated = rs.revision == update_revision and status_is_fresh(rs.obj)
        group_sizes = {
            r.get("name"): max(1, int(r.get("podGroupSize") or 1))
            for r in (rs.obj.get("spec") or {}).get("roles") or ()
        }
        for role in (rs.obj.get("status") or {}).get("roles") or ():
            name = role.get("name")
            if not name:
                continue
            size = group_sizes.get(name, 1)
            acc = sums.setdefault(
                name, {"name": name, **dict.fromkeys(ROLE_COUNT_FIELDS + ROLE_UPDATED_FIELDS, 0)}
            )
            for f in ROLE_COUNT_FIELDS:
                acc[f] += int(role.get(f) or 0) * size
            if counts_updated:
                for f in ROLE_UPDATED_FIELDS:
                    acc[f] += int(role.get(f) or 0) * size
    return [sums[name] for name in sorted(sums)]


@dataclass(frozen=True, slots=True)
class Counts:
    replicas: int
    ready: int
    current: int
    updated: int
    updated_ready: int


def count(rolesets: Sequence[RoleSetView], current_revision: str, update_revision: str) -> Counts:
    return Counts(
        replicas=len(rolesets),
        ready=sum(1 for r in rolesets if r.ready),
        current=sum(1 for r in rolesets if r.revision == current_revision),
        updated=sum(1 for r in rolesets if r.revision == update_revision and r.updated and not r.terminating),
        updated_ready=sum(1 for r in rolesets if r.revision == update_revision and r.updated_ready),
    )


def partition_held(rolesets: Sequence[RoleSetView], current_revision: str, update_revision: str) -> list[str]:
    """`RoleSet <name>: <why>` for each RoleSet whose rollout rests at a role's partition, when
    that is all that keeps the rollout from completing; else []."""
    if current_revision != update_revision:
        return []
    waiting = [r for r in rolesets if not (r.updated or r.terminating)]
    if not waiting or any(r.partition_held is None or r.revision != update_revision for r in waiting):
        return []
    return sorted(f"RoleSet {r.name}: {r.partition_held}" for r in waiting)


def advance_current_revision(rolesets: Sequence[RoleSetView], current: str, update: str) -> str:
    """`currentRevision` becomes `updateRevision` once no RoleSet of another revision remains
    (terminating ones included: their pods still run the old template)."""
    return update if all(r.revision == update for r in rolesets) else current


def compute_status(
    storm_service: Mapping[str, Any],
    rolesets: Sequence[RoleSetView],
    *,
    current_revision: str,
    update_revision: str,
    collision_count: int,
    failure: Failure | None = None,
    rejected_template: str | None = None,
    now: str | None = None,
) -> Obj:
    """`rejected_template`: the API server's message when it refuses pods of the update
    revision's templates (nothing of it is rolled out until the template changes)."""
    now = now or now_rfc3339()
    meta = storm_service["metadata"]
    spec = storm_service.get("spec") or {}
    old = storm_service.get("status") or {}
    want = budget_for(spec).replicas
    paused = bool(spec.get("paused"))
    n = count(rolesets, current_revision, update_revision)

    # Spec: ready RoleSets >= replicas, updated = total = replicas, current = update revision.
    ready = (
        n.ready >= want and n.updated == want and n.replicas == want and current_revision == update_revision
    )
    rolling = current_revision != update_revision or any(
        r.revision != update_revision or not (r.updated or r.terminating) for r in rolesets
    )
    scaling = n.replicas != want
    if ready:
        reason, message = REASON_READY, f"{n.ready} of {want} RoleSets ready"
    elif rolling:
        reason, message = (
            REASON_ROLLOUT,
            f"{n.updated} of {want} RoleSets updated to revision {update_revision}",
        )
    elif scaling:
        reason, message = REASON_SCALING, f"{n.replicas} RoleSets, {want} desired"
    else:
        reason, message = REASON_NOT_READY, f"{n.ready} of {want} RoleSets ready"

    conditions: list[Obj] = list(old.get("conditions") or ())
    conditions = set_condition(
        conditions, c.CONDITION_READY, "True" if ready else "False", reason, message, now
    )
    # Only RoleSets of the update revision: older ones are replaced, not rolled, by this controller.
    stalled = sorted(
        f"RoleSet {r.name}: {r.stalled}" for r in rolesets if r.stalled and r.revision == update_revision
    )
    # Deployment convention, the same as on RoleSets: True while rolling and once complete;
    # False only when the rollout cannot go on; Unknown while paused (nothing is expected to
    # move, and that is not a failure).
    if ready:
        progressing = ("True", REASON_COMPLETE, message)
    elif rejected_template is not None:
        progressing = (
            "False",
            c.REASON_ROLLOUT_BLOCKED,
            f"revision {update_revision} is not rolled out: the API server rejects its pods",
        )
    elif paused:
        progressing = ("Unknown", REASON_PAUSED, f"paused: {message}")
    elif stalled:
        # A RoleSet's own rollout cannot go on without the user; say which and why.
        progressing = ("False", REASON_ROLESET_STALLED, f"{message}; " + "; ".join(stalled))
    elif held := partition_held(rolesets, current_revision, update_revision):
        # Not complete and not stalled (no progress deadline applies): the user lowers a partition.
        progressing = ("True", c.REASON_PARTITION_HELD, "; ".join(held))
    else:
        progressing = ("True", reason, message)
    conditions = set_condition(conditions, c.CONDITION_PROGRESSING, *progressing, now)
    rejected = sorted(
        f"RoleSet {r.name}: {r.rejected_template}" for r in rolesets if r.rejected_template is not None
    )
    if rejected_template is not None:
        rejected.insert(0, f"revision {update_revision}: {rejected_template}")
    if failure is None and rejected:
        # Pods of a template the API server refuses: the RoleSets replace nothing until it changes.
        failure = Failure(c.REASON_INVALID_POD_TEMPLATE, "; ".join(rejected))
    if failure is None:
        conditions = remove_condition(conditions, c.CONDITION_REPLICA_FAILURE)
    else:
        conditions = set_condition(
            conditions, c.CONDITION_REPLICA_FAILURE, "True", failure.reason, failure.message, now
        )
    waiting = waiting_for_dependencies(rolesets)
    if waiting is None:
        conditions = remove_condition(conditions, c.CONDITION_WAITING_FOR_DEPENDENCIES)
    else:
        conditions = set_condition(conditions, c.CONDITION_WAITING_FOR_DEPENDENCIES, *waiting, now)

    return {
        "observedGeneration": int(meta.get("generation") or 0),
        "replicas": n.replicas,
        "readyReplicas": n.ready,
        "notReadyReplicas": n.replicas - n.ready,
        "currentReplicas": n.current,
        "updatedReplicas": n.updated,
        "updatedReadyReplicas": n.updated_ready,
        "currentRevision": current_revision,
        "updateRevision": update_revision,
        "collisionCount": collision_count,
        "scalingTargetSelector": scaling_target_selector(meta["name"]),
        "conditions": conditions,
        "roleStatuses": role_statuses(rolesets, update_revision),
    }


def status_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> Obj | None:
    """Merge patch for the status subresource, or None when nothing changed. Keys of `old` that
    `new` lacks (written by another version) are removed."""
    old = old or {}
    if dict(old) == dict(new):
        return None
    body: Obj = dict.fromkeys(old.keys() - new.keys())
    body.update(new)
    return {"status": body}


#: Status fields a StatusBatcher may hold back: per-role pod counts (the RoleSet-level counts,
#: revisions and conditions are written at once).
BATCHED_FIELDS = frozenset({"roleStatuses"})


def counts_only(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether `new` differs from the stored status only in the per-role pod counts (and
    condition messages): a change the runtime's StatusBatcher may hold back for a moment."""
    if not old:
        return False
    keys = (old.keys() | new.keys()) - BATCHED_FIELDS - {"conditions"}
    return all(old.get(k) == new.get(k) for k in keys) and condition_states(old) == condition_states(new)
