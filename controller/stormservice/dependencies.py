"""The StormService's WaitingForDependencies condition: what its RoleSets report about roles
whose first pods wait for the roles they depend on (roleset/dependencies.py decides that)."""

from __future__ import annotations

from collections.abc import Sequence

from apis.v1alpha1 import constants as c
from controller.stormservice.view import RoleSetView


def waiting_for_dependencies(rolesets: Sequence[RoleSetView]) -> tuple[str, str, str] | None:
    """(status, reason, message) naming each RoleSet that waits; None (absent) when none does.
    A cycle anywhere is the reason, as it needs the user; terminating RoleSets are left out."""
    reasons: list[str] = []
    messages: list[str] = []
    for rs in sorted(rolesets, key=lambda r: r.name):
        if rs.terminating:
            continue
        for cond in (rs.obj.get("status") or {}).get("conditions") or ():
            if cond.get("type") == c.CONDITION_WAITING_FOR_DEPENDENCIES and cond.get("status") == "True":
                reasons.append(str(cond.get("reason") or c.REASON_DEPENDENCIES_NOT_READY))
                messages.append(f"RoleSet {rs.name}: {cond.get('message') or ''}")
    if not messages:
        return None
    reason = c.REASON_DEPENDENCY_CYCLE if c.REASON_DEPENDENCY_CYCLE in reasons else reasons[0]
    return "True", reason, "; ".join(messages)
