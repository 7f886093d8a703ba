"""What the StormService controller reads from one cached RoleSet, computed once per sync.

Cached objects are slim dicts; the decision functions (scale, rolling, status) only need a handful
of facts about each RoleSet, so they get this flat view instead of the whole object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from apis.v1alpha1 import constants as c
from controller.runtime.timestamps import parse_time
from controller.stormservice import labels

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RoleSetView:
    name: str
    revision: str
    ready: bool = True
    # Every role runs the RoleSet's current spec (counted by the RoleSet controller).
    updated: bool = True
    updated_ready: bool = True
    terminating: bool = False
    created: float = 0.0  # creationTimestamp, epoch seconds
    index: int | None = None
    uid: str = ""
    # "<reason>: <message>" when the RoleSet reports a rollout that cannot go on by itself.
    stalled: str | None = None
    # The RoleSet's message when the API server rejects pods of one of its templates.
    rejected_template: str | None = None
    # The RoleSet's message when its rollout went as far as a role's partition lets it.
    partition_held: str | None = None
    obj: Obj = field(default_factory=dict, compare=False, repr=False)


def parse_timestamp(value: str | None) -> float:
    """Seconds since the epoch; 0.0 when absent (or not a time)."""
    t = parse_time(value)
    return 0.0 if t is None else t.timestamp()


def role_replicas(role: Mapping[str, Any]) -> int:
    """A role's desired instances; the CRD defaults an absent value to 1."""
    value = role.get("replicas")
    return 1 if value is None else int(value)


def status_is_fresh(obj: Mapping[str, Any]) -> bool:
    """The RoleSet controller has seen the RoleSet's latest spec. A stale status could report
    a RoleSet ready for replicas or a template it has not rolled yet."""
    meta = obj.get("metadata", {})
    status = obj.get("status") or {}
    return int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)


def _role_counts(obj: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    """(desired replicas, status entry) for every role of the spec; the entry is {} when the
    RoleSet controller has not reported the role yet."""
    status = obj.get("status") or {}
    by_name = {r.get("name"): r for r in status.get("roles") or []}
    return [
        (role_replicas(role), by_name.get(role.get("name")) or {})
        for role in (obj.get("spec") or {}).get("roles") or []
    ]


def view_of(obj: Obj) -> RoleSetView:
    meta = obj.get("metadata", {})
    terminating = bool(meta.get("deletionTimestamp"))
    fresh = status_is_fresh(obj)
    counts = _role_counts(obj)
    ready = fresh and not terminating and all(int(s.get("readyReplicas") or 0) >= want for want, s in counts)
    updated = fresh and all(int(s.get("updatedReplicas") or 0) >= want for want, s in counts)
    updated_ready = (
        ready and updated and all(int(s.get("updatedReadyReplicas") or 0) >= want for want, s in counts)
    )
    return RoleSetView(
        name=str(meta.get("name", "")),
        revision=labels.roleset_revision(obj),
        ready=ready,
        updated=updated,
        updated_ready=updated_ready,
        terminating=terminating,
        created=parse_timestamp(meta.get("creationTimestamp")),
        index=labels.roleset_index(obj),
        uid=str(meta.get("uid", "")),
        stalled=_stalled(obj) if fresh and not terminating else None,
        rejected_template=_rejected_template(obj) if fresh and not terminating else None,
        partition_held=_partition_held(obj) if fresh and not terminating else None,
        obj=obj,
    )


_STALLED_REASONS = (c.REASON_ROLLOUT_BLOCKED, c.REASON_IN_PLACE_UPDATE_STUCK)


def _reported(
    obj: Mapping[str, Any], type_: str, status: str, reasons: tuple[str, ...]
) -> Mapping[str, Any] | None:
    """The RoleSet's condition `type_` when it has `status` and one of `reasons`."""
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == type_ and cond.get("status") == status and cond.get("reason") in reasons:
            return dict(cond)
    return None


def _stalled(obj: Mapping[str, Any]) -> str | None:
    cond = _reported(obj, c.CONDITION_PROGRESSING, "False", _STALLED_REASONS)
    return None if cond is None else f"{cond['reason']}: {cond.get('message') or ''}"


def _rejected_template(obj: Mapping[str, Any]) -> str | None:
    cond = _reported(obj, c.CONDITION_REPLICA_FAILURE, "True", (c.REASON_INVALID_POD_TEMPLATE,))
    return None if cond is None else str(cond.get("message") or "")


def _partition_held(obj: Mapping[str, Any]) -> str | None:
    cond = _reported(obj, c.CONDITION_PROGRESSING, "True", (c.REASON_PARTITION_HELD,))
    return None if cond is None else str(cond.get("message") or "")
