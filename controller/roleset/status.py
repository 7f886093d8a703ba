"""RoleSet status from what the sync observed: per-role counts and conditions.

`Ready` is always present. `lastTransitionTime` moves only when a condition's status flips.
The caller writes the status only when `status_changed` says it differs from the stored one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.roleset import dependencies as deps
from controller.roleset import labels as L
from controller.roleset.scale import Progress
from controller.runtime.statusbatch import condition_states

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RoleCounts:
    name: str
    replicas: int  # spec
    progress: Progress


@dataclass(frozen=True, slots=True)
class CondSpec:
    type: str
    status: str
    reason: str
    message: str = ""


@dataclass(slots=True)
class Observations:
    """What a pass saw besides pod counts."""

    failures: list[tuple[str, str]] = field(default_factory=list)  # (reason, message)
    stuck: list[str] = field(default_factory=list)  # pods whose in-place update missed its deadline
    blocked: list[str] = field(default_factory=list)  # "role: why" for rollouts that cannot go on
    # "role X: message" for roles whose template the API server rejects as a pod.
    rejected_templates: list[str] = field(default_factory=list)
    pod_group: CondSpec | None = None
    topology_missing: list[str] | None = None  # None: no topology policy
    acted: bool = False  # the pass created, deleted or patched something
    # role -> message, for roles whose rollout went as far as their partition lets it.
    held: dict[str, str] = field(default_factory=dict)
    dependencies: deps.Decision = field(default_factory=deps.Decision)  # roles held for dependsOn
    # "role R: group G ..." for groups held by their role's restartBudget (recovery.py).
    exhausted: list[str] = field(default_factory=list)
    # Writes this pass carried out: uids of pods deleted (or found gone) and (role, group,
    # member) of members created into existing groups. A recovery counts against its group's
    # restartBudget only once all its writes are done.
    deleted: set[str] = field(default_factory=set)
    joined: set[tuple[str, str, int | None]] = field(default_factory=set)


def role_status(rc: RoleCounts) -> Obj:
    p = rc.progress
    return {
        "name": rc.name,
        "replicas": p.live,
        "readyReplicas": p.ready,
        "notReadyReplicas": p.live - p.ready,
        "updatedReplicas": p.updated,
        "updatedReadyReplicas": p.updated_ready,
    }


def _short_list(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def conditions_for(roles: Sequence[RoleCounts], obs: Observations) -> list[CondSpec]:
    not_ready = [
        f"{r.name} ({r.progress.ready}/{r.replicas})" for r in roles if r.progress.ready < r.replicas
    ]
    conds = [
        CondSpec(L.COND_READY, "False", "RolesNotReady", "not ready: " + ", ".join(not_ready))
        if not_ready
        else CondSpec(L.COND_READY, "True", "AllRolesReady", "every role has its ready replicas")
    ]
    rolling = [
        r.name
        for r in roles
        if (r.progress.outdated > 0 or r.progress.updated < r.replicas) and r.name not in obs.held
    ]
    scaling = [r.name for r in roles if r.progress.live != r.replicas]
    if obs.stuck:
        conds.append(
            CondSpec(
                L.COND_PROGRESSING,
                "False",
                L.REASON_INPLACE_STUCK,
                "in-place update not complete within the deadline: " + _short_list(obs.stuck),
            )
        )
    elif obs.blocked or obs.rejected_templates:
        why = [*obs.blocked, *(f"{r} (pods of this template are refused)" for r in obs.rejected_templates)]
        conds.append(CondSpec(L.COND_PROGRESSING, "False", L.REASON_ROLLOUT_BLOCKED, "; ".join(why)))
    elif rolling:
        conds.append(
            CondSpec(L.COND_PROGRESSING, "True", "RollingUpdate", "updating roles: " + ", ".join(rolling))
        )
    elif obs.held:
        # Not complete, and not stalled either: the user lowers the partition to go on.
        conds.append(
            CondSpec(
                L.COND_PROGRESSING,
                "True",
                L.REASON_PARTITION_HELD,
                "; ".join(obs.held[name] for name in sorted(obs.held)),
            )
        )
    elif scaling:
        conds.append(CondSpec(L.COND_PROGRESSING, "True", "Scaling", "scaling roles: " + ", ".join(scaling)))
    elif not_ready:
        conds.append(
            CondSpec(L.COND_PROGRESSING, "True", "WaitingForReady", "waiting for pods to become ready")
        )
    else:
        conds.append(
            CondSpec(L.COND_PROGRESSING, "True", L.REASON_ROLLOUT_COMPLETE, "every role is updated and ready")
        )
    if obs.rejected_templates:
        # The cause that needs the user comes first: nothing changes until the template does.
        conds.append(
            CondSpec(
                L.COND_REPLICA_FAILURE,
                "True",
                L.REASON_INVALID_POD_TEMPLATE,
                "the API server rejects pods of the template: " + "; ".join(obs.rejected_templates),
            )
        )
    elif obs.failures:
        reason, message = obs.failures[0]
        more = f" (and {len(obs.failures) - 1} more failures)" if len(obs.failures) > 1 else ""
        conds.append(CondSpec(L.COND_REPLICA_FAILURE, "True", reason, message + more))
    elif obs.exhausted:
        conds.append(
            CondSpec(
                L.COND_REPLICA_FAILURE,
                "True",
                L.REASON_GROUP_RESTART_BUDGET_EXHAUSTED,
                "; ".join(obs.exhausted),
            )
        )
    if (waiting := deps.condition(obs.dependencies)) is not None:
        conds.append(CondSpec(deps.COND_WAITING_FOR_DEPENDENCIES, *waiting))
    if obs.pod_group is not None:
        conds.append(obs.pod_group)
    if obs.topology_missing is not None:
        if obs.topology_missing:
            conds.append(
                CondSpec(
                    L.COND_TOPOLOGY_POLICY_APPLIED,
                    "False",
                    "PodsLackAffinity",
                    f"{len(obs.topology_missing)} pods created before the topology policy (or before it "
                    f"changed) lack its affinity term (they are not recreated for it): "
                    f"{_short_list(obs.topology_missing)}",
                )
            )
        else:
            conds.append(
                CondSpec(
                    L.COND_TOPOLOGY_POLICY_APPLIED, "True", "AllPodsHaveAffinity", "every pod has the term"
                )
            )
    return conds


def merge_conditions(old: Sequence[Mapping[str, Any]], new: Sequence[CondSpec], now: str) -> list[Obj]:
    """New conditions, keeping each one's lastTransitionTime while its status is unchanged."""
    old_by_type = {c.get("type"): c for c in old}
    out: list[Obj] = []
    for c in new:
        prev = old_by_type.get(c.type)
        ltt = prev.get("lastTransitionTime") if prev is not None and prev.get("status") == c.status else None
        cond: Obj = {"type": c.type, "status": c.status, "reason": c.reason}
        if c.message:
            cond["message"] = c.message
        cond["lastTransitionTime"] = ltt or now
        out.append(cond)
    return out


def compute_status(
    roles: Sequence[RoleCounts],
    obs: Observations,
    *,
    generation: int,
    old_status: Mapping[str, Any] | None,
    now: str,
) -> Obj:
    old_conds = (old_status or {}).get("conditions") or []
    return {
        "observedGeneration": generation,
        "roles": [role_status(r) for r in roles],
        "conditions": merge_conditions(old_conds, conditions_for(roles, obs), now),
    }


def _comparable(status: Mapping[str, Any] | None) -> Obj:
    status = dict(status or {})
    status.setdefault("observedGeneration", 0)
    status.setdefault("roles", [])
    status["conditions"] = sorted(
        (
            {k: v for k, v in c.items() if k in ("type", "status", "reason", "message", "lastTransitionTime")}
            for c in status.get("conditions") or []
        ),
        key=lambda c: str(c.get("type")),
    )
    return status


def status_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    return _comparable(old) != _comparable(new)


def condition(status: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    for c in (status or {}).get("conditions") or ():
        if c.get("type") == type_:
            return dict(c)
    return None


def counts_only(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether `new` differs from the stored status only in pod counts and the condition
    messages that quote them: a change the runtime's StatusBatcher may hold back for a moment."""
    if not old:
        return False
    a, b = _comparable(old), _comparable(new)
    return a["observedGeneration"] == b["observedGeneration"] and condition_states(a) == condition_states(b)
