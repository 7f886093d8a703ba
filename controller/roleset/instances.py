"""Pure views over a role's pods: pods grouped into instances.

An instance is what a role's `replicas` counts: one pod for `podGroupSize == 1`, a group of
`podGroupSize` pods otherwise. Stateful roles and grouped roles are *slotted*: instance i lives
in slot i. Stateless roles hold interchangeable instances.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from controller.roleset import labels as L


@dataclass(frozen=True, slots=True)
class PodInfo:
    name: str
    uid: str
    hash: str
    ready: bool
    phase: str
    terminating: bool
    created: str
    index: int | None
    has_index: bool
    group: str | None
    member: int | None
    group_size: int
    inplace_target: str | None = None

    @property
    def terminated(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def active(self) -> bool:
        return not self.terminated and not self.terminating


def is_pod_ready(pod: Mapping[str, Any]) -> bool:
    for cond in pod.get("status", {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def pod_info(pod: Mapping[str, Any]) -> PodInfo:
    md = L.meta(pod)
    lbl = L.labels_of(pod)
    ann = L.annotations_of(pod)
    raw_index = ann.get(L.ROLE_REPLICA_INDEX_ANNOTATION, lbl.get(L.ROLE_REPLICA_INDEX_LABEL))
    group = lbl.get(L.PODSET_NAME_LABEL) or None
    size = L.parse_index(ann.get(L.POD_GROUP_SIZE_ANNOTATION)) if group else 1
    member = L.parse_index(lbl.get(L.POD_GROUP_INDEX_LABEL)) if group else None
    return PodInfo(
        name=str(md.get("name", "")),
        uid=str(md.get("uid", "")),
        hash=lbl.get(L.ROLE_TEMPLATE_HASH_LABEL, ""),
        ready=is_pod_ready(pod),
        phase=str(pod.get("status", {}).get("phase") or "Pending"),
        terminating=md.get("deletionTimestamp") is not None,
        created=str(md.get("creationTimestamp") or ""),
        index=L.parse_index(raw_index),
        has_index=raw_index is not None,
        group=group,
        member=member,
        # 0: not readable from the pod; build_view derives it from the group and the role.
        group_size=size if size is not None else 0,
        inplace_target=ann.get(L.INPLACE_TARGET_HASH_ANNOTATION) or None,
    )


class PodInfoCache:
    """`pod_info` per pod version, per RoleSet: a pass reads every pod of its RoleSet, and most
    passes come from one pod's change, so most pods are read as they were in the last pass."""

    def __init__(self) -> None:
        self._by_owner: dict[str, dict[str, tuple[str, PodInfo]]] = {}

    def refresh(self, owner: str, pods: Iterable[Mapping[str, Any]]) -> dict[str, PodInfo]:
        """uid -> PodInfo of `pods`, the owner's pods now; what it held for others is dropped."""
        previous = self._by_owner.get(owner) or {}
        current: dict[str, tuple[str, PodInfo]] = {}
        for pod in pods:
            md = L.meta(pod)
            uid = md.get("uid")
            if not uid:
                continue
            version = str(md.get("resourceVersion") or "")
            cached = previous.get(uid)
            current[uid] = (
                cached
                if cached is not None and cached[0] == version and version
                else (
                    version,
                    pod_info(pod),
                )
            )
        self._by_owner[owner] = current
        return {uid: entry[1] for uid, entry in current.items()}

    def forget(self, owner: str) -> None:
        self._by_owner.pop(owner, None)


@dataclass(frozen=True, slots=True)
class Instance:
    """Active pods of one instance. `key` is the pod name, or the group name."""

    key: str
    index: int | None
    size: int
    hash: str
    pods: tuple[PodInfo, ...]
    inplace_target: str | None = None

    @property
    def ready(self) -> bool:
        return len(self.pods) == self.size and all(p.ready for p in self.pods) and self.inplace_target is None

    @property
    def created(self) -> str:
        return min((p.created for p in self.pods), default="")

    @property
    def complete(self) -> bool:
        return len(self.pods) == self.size

    def updated(self, target_hash: str, group_size: int) -> bool:
        """Runs the current template: hash and size match, and no in-place update is in flight
        (an in-flight pod is not updated until it completes, whatever its labels say)."""
        return self.hash == target_hash and self.size == group_size and self.inplace_target is None


@dataclass(frozen=True, slots=True)
class RoleParams:
    """The spec of one role as the decision functions need it."""

    name: str
    replicas: int
    group_size: int
    stateful: bool
    target_hash: str
    surge: int
    unavailable: int
    recreate_group: bool = False  # recoveryPolicy Recreate

    @property
    def slotted(self) -> bool:
        return self.stateful or self.group_size > 1


@dataclass(slots=True)
class RoleView:
    """A role's pods sorted into instances and into what must go whatever happens next."""

    instances: list[Instance] = field(default_factory=list)
    # Pods to delete before anything else, with a reason each.
    cleanup: list[tuple[PodInfo, str]] = field(default_factory=list)
    # Missing members of otherwise good groups: (group key, index, member).
    missing_members: list[tuple[Instance, int]] = field(default_factory=list)
    terminating: int = 0
    # (index, member) slots whose fixed pod name is still held by a pod on its way out: a
    # successor with the same name can only be created once it is gone.
    taken: set[tuple[int, int | None]] = field(default_factory=set)
    # Slotted roles only: instances whose slot cannot be told (single pods that never had an
    # index, left from when the role was stateless or adopted; a group whose index is neither on
    # its pods nor in its name). Outdated instances without a slot, replaced within the budget.
    unslotted: list[Instance] = field(default_factory=list)
    # Slotted roles only: instances in a slot at or beyond `replicas` (scale-down), deleted
    # within the unavailable budget when ready.
    surplus: list[Instance] = field(default_factory=list)
    # Groups with a member missing, failed or bad (wrong size, index or duplicate member), and
    # groups whose members all failed: what `stormservice_roleset_broken_groups` reports.
    broken_groups: int = 0


def _instance_of(pods: Sequence[PodInfo], key: str, index: int | None, size: int) -> Instance:
    hashes = {p.hash for p in pods}
    targets = {p.inplace_target for p in pods if p.inplace_target}
    return Instance(
        key=key,
        index=index,
        size=size,
        hash=hashes.pop() if len(hashes) == 1 else "",
        pods=tuple(sorted(pods, key=lambda p: (p.member if p.member is not None else -1, p.name))),
        inplace_target=min(targets) if targets else None,
    )


def _name_index(name: str) -> int | None:
    """The trailing `-<n>` of a pod or group name (`<rs>-<role>-<hash>-<i>[-<k>]`)."""
    _, _, tail = name.rpartition("-")
    return L.parse_index(tail)


def _derive_group(role: RoleParams, key: str, members: Sequence[PodInfo]) -> list[PodInfo]:
    """Fill in what a group's pods lack (an annotation or label removed by hand or by another
    tool, or never written by the controller that made them) from the rest of the group, its
    name and the role, so that losing metadata never reads as a broken group."""
    sizes = sorted({p.group_size for p in members if p.group_size >= 1})
    indexes = sorted({p.index for p in members if p.index is not None})
    index = indexes[0] if len(indexes) == 1 else None
    if not indexes:
        index = _name_index(key)
    out: list[PodInfo] = []
    for p in members:
        member = p.member
        if member is None and index is not None:
            # `<group-ish head>-<i>-<k>`: the member follows the group's index in the name.
            head, _, tail = p.name.rpartition("-")
            if _name_index(head) == index:
                member = L.parse_index(tail)
        out.append(replace(p, member=member, index=p.index if p.index is not None else index))
    known = [p.member for p in out if p.member is not None]
    if len(sizes) == 1:
        size = sizes[0]
    elif sizes:
        return out  # members disagree: left as they are, the odd ones are bad members
    elif all(m < role.group_size for m in known):
        # Lost on every member: the role's size, unless the members say otherwise. (A group of
        # an earlier podGroupSize that lost it everywhere cannot be told from a broken group.)
        size = role.group_size
    else:
        size = max(known) + 1
    return [p if p.group_size >= 1 else replace(p, group_size=size) for p in out]


@dataclass(frozen=True, slots=True)
class GroupHolds:
    """What `recovery.plan_recovery` decided for a role's groups: groups left as they are
    (`hold`: no member deleted or created), and members whose grace ended (`fail`: pod uids,
    handled as Failed pods are)."""

    hold: frozenset[str] = frozenset()
    fail: frozenset[str] = frozenset()


def build_view(role: RoleParams, pods: Iterable[PodInfo], holds: GroupHolds | None = None) -> RoleView:
    """Group a role's pods into instances; collect pods that must be deleted regardless of the
    rollout (terminated pods, broken groups), instances beyond the slots (`surplus`) and those
    whose slot cannot be told (`unslotted`)."""
    holds = holds or GroupHolds()
    view = RoleView()
    groups: dict[str, list[PodInfo]] = {}
    group_terminating: dict[str, list[PodInfo]] = {}
    group_failed: dict[str, list[PodInfo]] = {}
    pods = list(pods)
    for p in pods:
        if p.group:
            groups.setdefault(p.group, []).append(p)
    derived = {
        p.uid or p.name: p
        for members in groups.values()
        for p in _derive_group(role, members[0].group or "", members)
    }
    pods = [derived.get(p.uid or p.name, p) for p in pods]
    groups = {}
    for p in pods:
        if p.terminating:
            view.terminating += 1
            if p.group:
                group_terminating.setdefault(p.group, []).append(p)
            continue
        if p.group and p.group in holds.hold and p.terminated:
            if p.index is not None:
                view.taken.add((p.index, p.member))  # kept: its name is not free
            continue
        if p.terminated or p.uid in holds.fail:
            if p.group:
                group_failed.setdefault(p.group, []).append(p)
            view.cleanup.append((p, "terminated" if p.terminated else "not-recovered"))
            continue
        if p.group:
            groups.setdefault(p.group, []).append(p)
            continue
        index = p.index
        if role.slotted and index is None and p.has_index:
            # An index that does not parse: the stable name still says which slot it is.
            index = _name_index(p.name)
            p = replace(p, index=index)
        if role.slotted and index is None:
            # No slot at all. Not deleted at once: that would take the whole role down when it
            # switches from stateless to stateful or grouped.
            view.unslotted.append(_instance_of([p], p.name, None, 1))
            continue
        inst = _instance_of([p], p.name, index if role.slotted else None, 1)
        if role.slotted and index is not None and index >= role.replicas:
            view.surplus.append(inst)
            continue
        view.instances.append(inst)

    failed_keys = set(group_failed)
    for key, members in sorted(groups.items()):
        size = members[0].group_size
        index = members[0].index
        keep: dict[int, PodInfo] = {}
        bad: list[tuple[PodInfo, str]] = []
        for p in sorted(members, key=lambda p: (p.created, p.name)):
            if p.group_size != size or p.index != index or p.member is None or p.member >= max(size, 1):
                bad.append((p, "bad-member"))
            elif p.member in keep:
                bad.append((p, "duplicate-member"))
            else:
                keep[p.member] = p
        inst = _instance_of(list(keep.values()), key, index, size)
        incomplete = len(keep) < size or key in failed_keys or bad
        if incomplete or size < 1:
            view.broken_groups += 1
        if size < 1:
            view.cleanup.extend((p, "bad-group") for p in members)
            continue
        view.cleanup.extend(bad)
        if role.slotted and index is None:
            # In a stateless role a group left over from a larger podGroupSize is just an
            # outdated instance, rolled like any other, as a unit; in a slotted role one whose
            # slot cannot be told is replaced the same way.
            view.unslotted.append(inst)
            continue
        if role.slotted and index is not None and index >= role.replicas:
            view.surplus.append(inst)
            continue
        if incomplete and key in holds.hold:
            view.instances.append(inst)
            continue
        if incomplete:
            reason = "group-recreate"
            outdated = not inst.updated(role.target_hash, role.group_size)
            if role.recreate_group or outdated or not keep:
                # Recreate as a unit: an outdated group is never patched with members built from
                # a different template, and a Recreate group never runs with a replaced member.
                view.cleanup.extend((p, reason) for p in keep.values())
                continue
            pending = {p.member for p in group_terminating.get(key, ())}
            pending |= {p.member for p in group_failed.get(key, ())}
            pending |= {p.member for p, _ in bad}
            for member in range(size):
                if member not in keep and member not in pending:
                    view.missing_members.append((inst, member))
        view.instances.append(inst)
    view.broken_groups += len(failed_keys - groups.keys())
    leaving = {p.name for p, _ in view.cleanup}
    for p in pods:
        if p.index is not None and p.hash == role.target_hash and (p.terminating or p.name in leaving):
            view.taken.add((p.index, p.member))
    return view


def slot_map(role: RoleParams, instances: Iterable[Instance]) -> dict[int, list[Instance]]:
    slots: dict[int, list[Instance]] = {i: [] for i in range(role.replicas)}
    for inst in instances:
        if inst.index is not None and inst.index in slots:
            slots[inst.index].append(inst)
    return slots
