"""Pure per-role decisions: which instances to create, delete or update in place, in which order.

One pass over a role does, in order:
1. cleanup that never waits (terminated pods, bad indexes, broken groups), and missing members
   of good groups;
2. scaling: too few live instances -> create; too many -> delete outdated first, then not-ready,
   then newest, never taking ready instances below `replicas - maxUnavailable`;
3. when nothing was scaled and the cross-role gate allows it, one rollout step within the role's
   surge/unavailable budget (and the Interleave cap on updated instances), never past the
   role's partition (partition.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from controller.roleset import partition
from controller.roleset.instances import Instance, PodInfo, RoleParams, RoleView, slot_map


@dataclass(frozen=True, slots=True)
class CreatePod:
    index: int | None
    member: int | None
    reason: str
    # The existing group a missing member joins (its key): the member takes that group's names,
    # which carry the hash the group was created with (an in-place update keeps them).
    group: str | None = None


@dataclass(frozen=True, slots=True)
class DeletePod:
    pod: PodInfo
    reason: str


@dataclass(frozen=True, slots=True)
class Gate:
    """What the cross-role planner lets a role do this pass."""

    allowed: bool = True
    max_updated: int | None = None  # Interleave: updated instances allowed so far
    partition: int = 0  # the role's updateStrategy.partition (see partition.py)


@dataclass(slots=True)
class RolePlan:
    creates: list[CreatePod] = field(default_factory=list)
    deletes: list[DeletePod] = field(default_factory=list)
    inplace: list[Instance] = field(default_factory=list)
    # Instances replaced by delete/create although the role asked for in-place updates.
    fallback: list[Instance] = field(default_factory=list)
    scaled: bool = False
    # Why the rollout cannot go on within the role's budget (None: it can, or it is done).
    blocked: str | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    live: int
    ready: int
    updated: int  # includes in-flight in-place updates to the current template
    updated_ready: int
    outdated: int

    def done(self, replicas: int) -> bool:
        return self.live == replicas and self.updated_ready == replicas and self.outdated == 0


def classify(role: RoleParams, inst: Instance) -> str:
    """'updated', 'inflight' (in-place update to the current template under way) or 'outdated'."""
    if inst.updated(role.target_hash, role.group_size):
        return "updated"
    if inst.inplace_target == role.target_hash and inst.size == role.group_size:
        return "inflight"
    return "outdated"


def progress(role: RoleParams, view: RoleView) -> Progress:
    live = [
        i for i in view.instances if not role.slotted or (i.index is not None and i.index < role.replicas)
    ]
    kinds = [classify(role, i) for i in live]
    # Pods without a slot in a slotted role are live but outdated whatever their hash says.
    live += view.unslotted
    kinds += ["outdated"] * len(view.unslotted)
    # Instances beyond the slots are live until the scale-down removes them; they are neither
    # the role's updated instances nor ones a rollout has to replace.
    live += view.surplus
    kinds += ["surplus"] * len(view.surplus)
    return Progress(
        live=len(live),
        ready=sum(1 for i in live if i.ready),
        updated=sum(1 for k in kinds if k in ("updated", "inflight")),
        updated_ready=sum(1 for i, k in zip(live, kinds, strict=True) if k == "updated" and i.ready),
        outdated=sum(1 for k in kinds if k == "outdated"),
    )


def _delete_instance(plan: RolePlan, inst: Instance, reason: str) -> None:
    plan.deletes.extend(DeletePod(p, reason) for p in inst.pods)


def _create_instance(
    plan: RolePlan,
    role: RoleParams,
    index: int | None,
    reason: str,
    taken: set[tuple[int, int | None]] | None = None,
) -> None:
    if index is not None and taken:
        members: list[int | None] = list(range(role.group_size)) if role.group_size > 1 else [None]
        if any((index, m) in taken for m in members):
            return  # the predecessor still holds the name; its deletion event brings us back
    if role.group_size > 1:
        plan.creates.extend(CreatePod(index, m, reason) for m in range(role.group_size))
    else:
        plan.creates.append(CreatePod(index, None, reason))


def _removal_order(insts: Iterable[Instance]) -> list[Instance]:
    """Not-ready first, then newest first (ReplicaSet's deletion preference)."""
    by_newest = sorted(insts, key=lambda i: (i.created, i.key), reverse=True)
    return sorted(by_newest, key=lambda i: i.ready)


def plan_role(
    role: RoleParams,
    view: RoleView,
    gate: Gate,
    *,
    inplace: bool = False,
    inplace_eligible: frozenset[str] = frozenset(),
) -> RolePlan:
    plan = RolePlan()
    for pod, reason in view.cleanup:
        plan.deletes.append(DeletePod(pod, reason))
    for inst, member in view.missing_members:
        if inst.index is not None and (inst.index, member) not in view.taken:
            plan.creates.append(CreatePod(inst.index, member, "missing-member", group=inst.key))
    if view.surplus:
        _delete_surplus(plan, role, view)
    if role.slotted:
        _plan_slotted(plan, role, view, gate, inplace, inplace_eligible)
    else:
        _plan_stateless(plan, role, view, gate, inplace, inplace_eligible)
    return plan


def _delete_within_budget(
    plan: RolePlan, order: Sequence[Instance], excess: int, ready: int, min_ready: int
) -> None:
    """Delete up to `excess` instances in `order` for scale-down, skipping ready ones whose loss
    would take the ready count below `min_ready`."""
    for inst in order:
        if excess == 0:
            break
        if inst.ready:
            if ready - 1 < min_ready:
                continue
            ready -= 1
        _delete_instance(plan, inst, "scale-down")
        excess -= 1


def _delete_surplus(plan: RolePlan, role: RoleParams, view: RoleView) -> None:
    """Scale-down of a slotted role: instances beyond the slots go, highest index first, not-ready
    ones at once, ready ones only while the role keeps `replicas - maxUnavailable` available.
    A slot counts once, whatever serves it (a surge pair is one slot)."""
    ready_per_slot: dict[int, int] = {}
    for inst in (*view.instances, *view.surplus):
        if inst.ready and inst.index is not None:
            ready_per_slot[inst.index] = ready_per_slot.get(inst.index, 0) + 1
    available = len(ready_per_slot) + sum(1 for i in view.unslotted if i.ready)
    min_available = role.replicas - role.unavailable
    by_index = sorted(view.surplus, key=lambda i: (i.index or 0, i.key), reverse=True)
    for inst in sorted(by_index, key=lambda i: i.ready):
        if inst.ready and inst.index is not None:
            last = ready_per_slot[inst.index] == 1
            if last and available - 1 < min_available:
                continue
            ready_per_slot[inst.index] -= 1
            if last:
                available -= 1
        _delete_instance(plan, inst, "scale-down")


def _plan_stateless(
    plan: RolePlan, role: RoleParams, view: RoleView, gate: Gate, inplace: bool, eligible: frozenset[str]
) -> None:
    n = role.replicas
    live = list(view.instances)
    kinds = {i.key: classify(role, i) for i in live}
    outdated = [i for i in live if kinds[i.key] == "outdated"]
    # Outdated instances a partition keeps are not a rollout under way: no surge room for them.
    rolling = gate.allowed and len(outdated) > gate.partition
    max_live = n + (role.surge if rolling else 0)

    if len(live) > max_live:
        excess = len(live) - max_live
        ready = sum(1 for i in live if i.ready)
        min_ready = n - role.unavailable
        order = sorted(
            _removal_order(live),
            key=lambda i: kinds[i.key] != "outdated",  # stable: outdated first, keeps the rest
        )
        _delete_within_budget(plan, order, excess, ready, min_ready)
        plan.scaled = True
        return
    if len(live) < n:
        for _ in range(n - len(live)):
            _create_instance(plan, role, None, "scale-up")
        plan.scaled = True
        return
    if not rolling:
        return

    cap = n if gate.max_updated is None else min(gate.max_updated, n)
    cap = min(cap, partition.updatable_count(n, gate.partition))
    n_updated = len(live) - len(outdated)
    budget = sum(1 for i in live if i.ready) - (n - role.unavailable)
    removable = max(0, len(outdated) - (n - cap))
    n_live = len(live)
    for inst in _removal_order(outdated):
        if removable == 0:
            break
        use_inplace = inplace and inst.key in eligible
        if inst.ready:
            if budget <= 0:
                break
            budget -= 1
        # A surge instance already took the place of one the partition lets go: that one goes,
        # patching it too would leave fewer than `partition` kept once the surge is scaled away.
        surplus = gate.partition > 0 and n_updated >= cap
        if use_inplace and not surplus:
            plan.inplace.append(inst)
            n_updated += 1
        else:
            _delete_instance(plan, inst, "rollout")
            if inplace and not surplus:
                plan.fallback.append(inst)
            n_live -= 1
        removable -= 1
    # In-place roles only refill what they deleted: surge pods would outnumber the pods being
    # patched. With maxUnavailable 0 an in-place update can never start, so surge replacement
    # (as for Recreate) is the only way forward.
    surge = 0 if inplace and role.unavailable > 0 else role.surge
    create = min(cap - n_updated, n + surge - n_live)
    for _ in range(max(0, create)):
        _create_instance(plan, role, None, "rollout")


def _plan_slotted(
    plan: RolePlan, role: RoleParams, view: RoleView, gate: Gate, inplace: bool, eligible: frozenset[str]
) -> None:
    n = role.replicas
    slots = slot_map(role, view.instances)
    kept: dict[int, list[Instance]] = {}
    empty: list[int] = []
    for i, insts in slots.items():
        kept[i] = _resolve_slot(plan, role, insts) if insts else []
        if not insts:
            empty.append(i)
    if view.unslotted:
        _plan_unslotted(plan, role, view, gate, kept, empty, inplace)
        return
    for i in empty:
        _create_instance(plan, role, i, "missing", view.taken)
        plan.scaled = True
    if plan.scaled or not gate.allowed:
        return

    cap = n if gate.max_updated is None else min(gate.max_updated, n)
    n_updated = sum(1 for insts in kept.values() if any(classify(role, x) != "outdated" for x in insts))
    ready_slots = sum(1 for insts in kept.values() if any(x.ready for x in insts))
    budget = ready_slots - (n - role.unavailable)
    total = sum(len(insts) for insts in kept.values())
    candidates = [
        (i, insts[0])
        for i, insts in kept.items()
        if len(insts) == 1
        and classify(role, insts[0]) == "outdated"
        and partition.may_update_slot(i, gate.partition)
    ]
    # Not-ready first; then from the highest index down, as StatefulSets roll.
    candidates.sort(key=lambda c: (c[1].ready, -c[0]))
    for i, inst in candidates:
        if n_updated >= cap:
            break
        use_inplace = inplace and inst.key in eligible
        if not inst.ready:
            if use_inplace:
                plan.inplace.append(inst)
            else:
                _replace(plan, role, i, inst, inplace)
        elif use_inplace and budget > 0:
            budget -= 1
            plan.inplace.append(inst)
        elif use_inplace and role.unavailable > 0:
            break
        elif budget > 0:
            budget -= 1
            _replace(plan, role, i, inst, inplace)
        elif total < n + role.surge:
            if _names_collide(role, inst):
                # Same template, other podGroupSize: the successor's member names are the
                # predecessor's, so it cannot surge next to it; with no unavailable budget
                # the slot waits rather than go below replicas - maxUnavailable, and says so.
                if role.unavailable == 0:
                    plan.blocked = (
                        f"podGroupSize changed to {role.group_size}: a new group reuses its "
                        "predecessor's pod names, so it cannot surge next to it, and maxUnavailable "
                        "is 0; set maxUnavailable to 1 or more to let groups be replaced"
                    )
                break
            total += 1
            _create_instance(plan, role, i, "rollout-surge")
            if inplace:
                plan.fallback.append(inst)
        else:
            break
        n_updated += 1


def _names_collide(role: RoleParams, inst: Instance) -> bool:
    """Whether the successor of `inst` in its slot would reuse one of its pod names: names carry
    the template hash, index and member, not the group size."""
    return inst.hash == role.target_hash and inst.size > 1 and role.group_size > 1


def _plan_unslotted(
    plan: RolePlan,
    role: RoleParams,
    view: RoleView,
    gate: Gate,
    kept: dict[int, list[Instance]],
    empty: list[int],
    inplace: bool,
) -> None:
    """A slotted role that still runs pods without a slot (it was stateless; it became stateful
    or grouped): replace them with slot instances the way a stateless rollout replaces outdated
    instances. At most `replicas + maxSurge` live instances, never fewer than
    `replicas - maxUnavailable` ready ones; not-ready unslotted pods go first. Empty slots are
    filled in index order as the unslotted pods go."""
    n = role.replicas
    unslotted = view.unslotted
    occupied = [insts for insts in kept.values() if insts]
    live = len(occupied) + len(unslotted)
    ready = sum(1 for insts in occupied if any(x.ready for x in insts)) + sum(1 for u in unslotted if u.ready)
    min_ready = n - role.unavailable
    order = _removal_order(unslotted)

    if live < n:
        for i in empty[: n - live]:
            _create_instance(plan, role, i, "scale-up", view.taken)
        plan.scaled = True
        return
    max_live = n + (role.surge if gate.allowed else 0)
    if live > max_live:
        excess = live - max_live
        _delete_within_budget(plan, order, excess, ready, min_ready)
        plan.scaled = True
        return
    if not gate.allowed:
        return

    cap = n if gate.max_updated is None else min(gate.max_updated, n)
    n_updated = sum(1 for insts in occupied if any(classify(role, x) != "outdated" for x in insts))
    # Delete only what can be refilled now (the Interleave cap may allow fewer updated slots).
    removable = max(0, live - n + cap - n_updated)
    budget = ready - min_ready
    n_live = live
    for inst in order:
        if removable == 0:
            break
        if inst.ready:
            if budget <= 0:
                break
            budget -= 1
        _delete_instance(plan, inst, "rollout")
        if inplace:
            plan.fallback.append(inst)
        n_live -= 1
        removable -= 1
    create = min(cap - n_updated, n + role.surge - n_live, len(empty))
    for i in empty[: max(0, create)]:
        _create_instance(plan, role, i, "rollout", view.taken)


def _replace(plan: RolePlan, role: RoleParams, index: int, inst: Instance, inplace: bool) -> None:
    """Delete an outdated instance and create its successor in the same slot. Names carry the
    template hash, so the successor's name is free at once."""
    _delete_instance(plan, inst, "rollout")
    _create_instance(plan, role, index, "rollout")
    if inplace:
        plan.fallback.append(inst)


def _resolve_slot(plan: RolePlan, role: RoleParams, insts: list[Instance]) -> list[Instance]:
    """Keep at most one updated instance and, while it is not ready yet, one ready outdated one
    (the surge pair); delete the rest."""
    if len(insts) == 1:
        return insts
    by_age = sorted(insts, key=lambda x: (x.created, x.key))
    upd = [x for x in by_age if classify(role, x) != "outdated"]
    old = [x for x in by_age if classify(role, x) == "outdated"]
    upd_ready = [x for x in upd if x.ready]
    keep: list[Instance] = []
    if upd_ready:
        keep = [upd_ready[0]]
    else:
        if upd:
            keep.append(max(upd, key=lambda x: (len(x.pods), x.created)))
        old_ready = [x for x in old if x.ready]
        if old_ready:
            keep.append(old_ready[0])
        elif not upd and old:
            keep.append(old[0])
    for x in insts:
        if x not in keep:
            _delete_instance(plan, x, "superseded")
    return keep
