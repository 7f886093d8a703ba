"""Properties of the per-role planner over generated pod sets.

The pods are generated from a ground truth (instances: slot, group size, template, members,
readiness), then some of their metadata is lost as it is in clusters (a size annotation, an index
label or annotation, a member label removed by hand or never written). Whatever the planner
decides, one promise holds: it never deletes a ready instance when that would leave the role
with fewer than `replicas - maxUnavailable` available ones (or fewer than it had, when it had
fewer), except when the role itself is removed, which the planner never sees.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.roleset.instances import PodInfo, RoleParams, build_view
from controller.roleset.scale import Gate, plan_role
from tests.unit.roleset.factories import info


@dataclass(frozen=True)
class Truth:
    """One instance as it really is."""

    key: str
    slot: int | None
    pods: tuple[PodInfo, ...]
    size: int

    @property
    def ready(self) -> bool:
        live = [p for p in self.pods if p.active]
        return len(live) == self.size and all(p.ready for p in live)


@st.composite
def roles(draw: st.DrawFn) -> RoleParams:
    replicas = draw(st.integers(0, 4))
    group_size = draw(st.sampled_from([1, 1, 2, 3]))
    surge = draw(st.integers(0, 2))
    unavailable = draw(st.integers(0, 2))
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return RoleParams(
        name="worker",
        replicas=replicas,
        group_size=group_size,
        stateful=draw(st.booleans()),
        target_hash="new",
        surge=surge,
        unavailable=min(unavailable, max(replicas, 1)),
        recreate_group=draw(st.booleans()),
    )


@st.composite
def instances(draw: st.DrawFn, role: RoleParams) -> list[Truth]:
    out: list[Truth] = []
    used: set[tuple[str, int]] = set()
    for n in range(draw(st.integers(0, role.replicas + 3))):
        hash_ = draw(st.sampled_from(["new", "old"]))
        size = draw(st.sampled_from([role.group_size, role.group_size, 1, 2, 3]))
        slotted = role.slotted and draw(st.integers(0, 9)) > 0  # now and then a pod from a stateless past
        slot = draw(st.integers(0, role.replicas + 1)) if slotted or size > 1 else None
        if slot is not None and (hash_, slot) in used:
            continue  # one instance per template and slot: names carry both
        if slot is not None:
            used.add((hash_, slot))
        created = f"2024-01-{1 + draw(st.integers(0, 20)):02d}T00:00:00Z"
        pods: list[PodInfo] = []
        if size > 1:
            key = f"rs-worker-{hash_}-{slot}"
            for m in range(size):
                if draw(st.integers(0, 9)) == 0:
                    continue  # a member is missing
                pods.append(
                    info(
                        f"{key}-{m}",
                        hash_=hash_,
                        index=slot,
                        group=key,
                        member=m,
                        size=size,
                        created=created,
                        ready=draw(st.booleans()) or draw(st.booleans()),
                        phase=draw(st.sampled_from(["Running"] * 8 + ["Failed", "Pending"])),
                        deleting=draw(st.integers(0, 19)) == 0,
                    )
                )
        else:
            key = f"rs-worker-{hash_}-{slot}" if slot is not None else f"rs-worker-s{n}"
            pods.append(
                info(
                    key,
                    hash_=hash_,
                    index=slot,
                    created=created,
                    ready=draw(st.booleans()) or draw(st.booleans()),
                    phase=draw(st.sampled_from(["Running"] * 8 + ["Failed", "Pending"])),
                    deleting=draw(st.integers(0, 19)) == 0,
                )
            )
        lost = []
        for p in pods:
            if p.group is not None:
                if draw(st.integers(0, 3)) == 0:
                    p = replace(p, group_size=0)  # size annotation removed
                if draw(st.integers(0, 5)) == 0:
                    p = replace(p, index=None, has_index=False)  # index label and annotation removed
                if draw(st.integers(0, 5)) == 0:
                    p = replace(p, member=None)  # member label removed
            lost.append(p)
        if size != role.group_size and lost and all(p.group_size == 0 for p in lost if p.group):
            # A group of an earlier podGroupSize that lost its size everywhere cannot be told
            # from a broken group of the current size; such a loss is not generated.
            lost[0] = replace(lost[0], group_size=size)
        out.append(Truth(key, slot, tuple(lost), size))
    return out


def available(role: RoleParams, truths: list[Truth], gone: set[str]) -> int:
    """Available instances: a slot counts once, whatever serves it; interchangeable instances
    each count."""
    slots: set[int] = set()
    loose = 0
    for t in truths:
        remaining = [p for p in t.pods if p.name not in gone]
        if not Truth(t.key, t.slot, tuple(remaining), t.size).ready:
            continue
        if role.slotted and t.slot is not None:
            slots.add(t.slot)
        else:
            loose += 1
    return len(slots) + loose


@settings(max_examples=3000, deadline=None)
@given(data=st.data())
def test_deletions_never_take_the_role_below_its_unavailable_budget(data: st.DataObject) -> None:
    role = data.draw(roles())
    truths = data.draw(instances(role))
    gate = Gate(
        allowed=data.draw(st.booleans()),
        max_updated=data.draw(st.one_of(st.none(), st.integers(0, role.replicas))),
    )
    inplace = data.draw(st.booleans())
    pods = [p for t in truths for p in t.pods]
    view = build_view(role, pods)
    eligible = frozenset(i.key for i in view.instances if inplace and data.draw(st.booleans()))
    plan = plan_role(role, view, gate, inplace=inplace, inplace_eligible=eligible)

    before = available(role, truths, set())
    after = available(role, truths, {d.pod.name for d in plan.deletes})
    floor = min(before, role.replicas - role.unavailable)
    assert after >= floor, (
        f"{before} available -> {after} after deleting "
        f"{sorted((d.pod.name, d.reason) for d in plan.deletes)}; floor {floor}"
    )


@settings(max_examples=1000, deadline=None)
@given(data=st.data())
def test_lost_metadata_changes_no_decision(data: st.DataObject) -> None:
    """The same pods with and without the metadata that can be derived: the same plan."""
    role = data.draw(roles())
    truths = data.draw(instances(role))
    pods = [p for t in truths for p in t.pods]
    whole = [_restored(p, t) for t in truths for p in t.pods]
    if any(p.member is None for p in whole if p.group):
        return
    gate = Gate(allowed=data.draw(st.booleans()))
    a = plan_role(role, build_view(role, pods), gate)
    b = plan_role(role, build_view(role, whole), gate)
    assert sorted((d.pod.name, d.reason) for d in a.deletes) == sorted(
        (d.pod.name, d.reason) for d in b.deletes
    )
    assert sorted((c.index or -1, c.member or -1) for c in a.creates) == sorted(
        (c.index or -1, c.member or -1) for c in b.creates
    )


def _restored(p: PodInfo, t: Truth) -> PodInfo:
    if p.group is None:
        return p
    member = p.member if p.member is not None else int(p.name.rsplit("-", 1)[1])
    return replace(p, group_size=t.size, index=t.slot, has_index=t.slot is not None, member=member)
