"""Pure scaling decisions: how many RoleSets to create, which to delete.

Counts are in RoleSets. `total` counts every owned RoleSet, terminating ones included: a RoleSet
being deleted still holds its pods (and their GPUs) until the garbage collector is done, so it
uses surge room. Readiness never counts a terminating RoleSet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from apis.v1alpha1.defaults import DEFAULT_STORM_SERVICE_REPLICAS
from apis.v1alpha1.intstr import resolve_fenceposts, round_half_away_from_zero
from controller.stormservice.view import RoleSetView, role_replicas

IN_PLACE_UPDATE = "InPlaceUpdate"


@dataclass(frozen=True, slots=True)
class Budget:
    """The RoleSet bounds of one StormService: at most `replicas + max_surge` in total, at least
    `replicas - max_unavailable` ready while RoleSets are being replaced."""

    replicas: int
    max_surge: int = 0
    max_unavailable: int = 0

    @property
    def max_total(self) -> int:
        return self.replicas + self.max_surge

    @property
    def min_available(self) -> int:
        return max(0, self.replicas - self.max_unavailable)


@dataclass(frozen=True, slots=True)
class ScalePlan:
    """Creations from the update revision, creations from the current revision (paused
    proportional scaling only), and the RoleSets to delete, in deletion order."""

    create_updated: int = 0
    create_current: int = 0
    delete: tuple[RoleSetView, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.create_updated or self.create_current or self.delete)


def budget_for(spec: Mapping[str, Any]) -> Budget:
    """The StormService's budget. RollingUpdate resolves maxSurge/maxUnavailable against
    `replicas`; InPlaceUpdate never surges and, like the reference, has no availability floor
    when scaling (the RoleSet controller bounds unavailability inside each RoleSet)."""
    value = spec.get("replicas")
    replicas = DEFAULT_STORM_SERVICE_REPLICAS if value is None else int(value)
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type") == IN_PLACE_UPDATE:
        return Budget(replicas, 0, replicas)
    surge, unavailable = resolve_fenceposts(
        strategy.get("maxSurge"), strategy.get("maxUnavailable"), replicas
    )
    return Budget(replicas, surge, min(unavailable, replicas))


def live(rolesets: Sequence[RoleSetView]) -> list[RoleSetView]:
    return [r for r in rolesets if not r.terminating]


def proportional_split(desired: int, current: int, updated: int) -> tuple[int, int]:
    """Split `desired` RoleSets between the current and updated revisions keeping their present
    proportion (used while paused, so that scaling does not advance or revert a rollout). The
    current side is rounded half away from zero; the updated side takes the remainder."""
    total = current + updated
    if total == 0:
        return 0, desired
    if current + updated == desired:
        return current, updated
    want_current = round_half_away_from_zero(Fraction(current * desired, total))
    return want_current, desired - want_current


def deletion_order(rolesets: Iterable[RoleSetView], update_revision: str) -> list[RoleSetView]:
    """Old revision first, then not ready, then newest (the name breaks ties, for determinism)."""
    return sorted(rolesets, key=lambda r: (r.revision == update_revision, r.ready, -r.created, r.name))


def pick_deletions(
    candidates: Sequence[RoleSetView], count: int, ready_now: int, min_available: int
) -> list[RoleSetView]:
    """Up to `count` candidates, in the order given, skipping any ready one whose deletion would
    take the ready RoleSets below `min_available`."""
    picked: list[RoleSetView] = []
    ready = ready_now
    for r in candidates:
        if len(picked) >= count:
            break
        if r.ready:
            if ready <= min_available:
                continue
            ready -= 1
        picked.append(r)
    return picked


def plan_scale(
    rolesets: Sequence[RoleSetView], budget: Budget, update_revision: str, *, paused: bool
) -> ScalePlan:
    """Bring the number of live RoleSets toward `budget.replicas`.

    Not paused: missing RoleSets come from the update revision, within `replicas + maxSurge` in
    total. Excess RoleSets leave from the old revisions first; an updated RoleSet leaves only when
    updated ones alone exceed `replicas` (otherwise scaling down would delete the RoleSet a
    rolling update just created, and the rollout would never finish).

    Paused: both sides keep their proportion (see `proportional_split`), so scaling neither
    advances nor reverts the paused rollout.

    Deletions never take ready RoleSets below `replicas - maxUnavailable`; the plan may
    therefore leave the count off target, and a later pass (after RoleSets become ready)
    finishes the job.
    """
    alive = live(rolesets)
    diff = len(alive) - budget.replicas
    if diff == 0:
        return ScalePlan()
    updated = [r for r in alive if r.revision == update_revision]
    outdated = [r for r in alive if r.revision != update_revision]
    room = max(0, budget.max_total - len(rolesets))
    if diff < 0:
        if not paused:
            return ScalePlan(create_updated=min(-diff, room))
        want_current, want_updated = proportional_split(budget.replicas, len(outdated), len(updated))
        add_updated = min(max(0, want_updated - len(updated)), room)
        add_current = min(max(0, want_current - len(outdated)), room - add_updated)
        return ScalePlan(create_updated=add_updated, create_current=add_current)

    ready_now = sum(1 for r in alive if r.ready)
    if paused:
        want_current, want_updated = proportional_split(budget.replicas, len(outdated), len(updated))
        excess = [
            *deletion_order(outdated, update_revision)[: max(0, len(outdated) - want_current)],
            *deletion_order(updated, update_revision)[: max(0, len(updated) - want_updated)],
        ]
        candidates = deletion_order(excess, update_revision)
    else:
        extra_updated = max(0, len(updated) - budget.replicas)
        candidates = [
            *deletion_order(outdated, update_revision),
            *deletion_order(updated, update_revision)[:extra_updated],
        ]
    return ScalePlan(delete=tuple(pick_deletions(candidates, diff, ready_now, budget.min_available)))


def role_replica_patch(
    roleset: Mapping[str, Any], desired_template: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """JSON patch setting each role of `roleset` to the replicas the StormService template asks
    for (matched by role name); [] when nothing differs. Each write is guarded by a `test` of the
    role's name at that position, so a concurrent reordering of roles fails the patch instead of
    scaling the wrong role. Applied to RoleSets of every revision: a replicas-only change is
    scaling, which the RoleSet controller carries out without touching the other pods."""
    wanted = {
        r.get("name"): role_replicas(r) for r in ((desired_template.get("spec") or {}).get("roles") or ())
    }
    ops: list[dict[str, Any]] = []
    for i, role in enumerate((roleset.get("spec") or {}).get("roles") or ()):
        name = role.get("name")
        if name in wanted and role_replicas(role) != wanted[name]:
            ops.append({"op": "test", "path": f"/spec/roles/{i}/name", "value": name})
            ops.append({"op": "add", "path": f"/spec/roles/{i}/replicas", "value": wanted[name]})
    return ops
