"""RollingUpdate: replace outdated RoleSets within the surge and unavailability budgets.

One pass deletes outdated RoleSets (not-ready first) while the ready RoleSets stay at or above
`replicas - maxUnavailable`, and creates updated RoleSets while the total (terminating RoleSets
included) stays within `replicas + maxSurge`. The room for creation is measured before this
pass's deletions: a deleted RoleSet keeps its pods until the garbage collector removes them, and
the cache only learns about the deletion later, so counting it as gone now would overshoot.
"""

from __future__ import annotations

from collections.abc import Sequence

from controller.stormservice.scale import Budget, ScalePlan, deletion_order, live, pick_deletions
from controller.stormservice.view import RoleSetView


def plan_rolling_update(rolesets: Sequence[RoleSetView], budget: Budget, update_revision: str) -> ScalePlan:
    alive = live(rolesets)
    outdated = [r for r in alive if r.revision != update_revision]
    n_updated = len(alive) - len(outdated)
    ready_now = sum(1 for r in alive if r.ready)
    delete = pick_deletions(
        deletion_order(outdated, update_revision), len(outdated), ready_now, budget.min_available
    )
    create = max(0, min(budget.max_total - len(rolesets), budget.replicas - n_updated))
    return ScalePlan(create_updated=create, delete=tuple(delete))
