"""A role's updateStrategy.partition: which instances a rollout updates, which it keeps, and when
the role counts as held (table-driven over the pure functions and plan_role)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from controller.roleset import partition
from controller.roleset.instances import PodInfo, RoleParams, build_view
from controller.roleset.rollout import RoleRollout, plan_gates
from controller.roleset.scale import Gate, classify, plan_role, progress
from controller.roleset.status import Observations, RoleCounts, conditions_for
from tests.unit.roleset.factories import group, info, params


def aged(n: int, *, hash_: str = "old", ready: bool = True, stateful: bool = False) -> list[PodInfo]:
    """Pods p0 (oldest) .. p<n-1> (newest); stateful ones in slots 0..n-1."""
    return [
        info(
            f"rs-worker-{hash_}-{i}" if stateful else f"p{i}",
            hash_=hash_,
            ready=ready,
            created=f"2024-01-01T00:00:{i:02d}Z",
            index=i if stateful else None,
        )
        for i in range(n)
    ]


@dataclass
class Case:
    id: str
    role: RoleParams
    pods: list[PodInfo]
    partition: int
    inplace: bool = False
    max_updated: int | None = None
    deleted: list[str] = field(default_factory=list)
    created: int = 0
    patched: list[str] = field(default_factory=list)  # updated in place


CASES = [
    Case(
        "stateless: the newest outdated goes first",
        params(4, unavailable=1),
        aged(4),
        partition=2,
        deleted=["p3"],
        created=1,
    ),
    Case(
        "stateless: two updated, two kept: nothing more",
        params(4, unavailable=1),
        [*aged(2), info("n0"), info("n1")],
        partition=2,
    ),
    Case(
        "stateless: a not-ready outdated one is updated before a ready one",
        params(4, unavailable=1),
        [*aged(3), info("p9", hash_="old", ready=False, created="2023-01-01T00:00:00Z")],
        partition=3,
        deleted=["p9"],
        created=1,
    ),
    Case(
        "stateless: partition >= replicas holds every instance",
        params(4, unavailable=2),
        aged(4),
        partition=7,
    ),
    Case(
        "stateless: partition 0 rolls as without it",
        params(4, unavailable=2),
        aged(4),
        partition=0,
        deleted=["p2", "p3"],
        created=2,
    ),
    Case(
        "stateless in place: the two newest are patched, within maxUnavailable 3",
        params(4, unavailable=3),
        aged(4),
        partition=2,
        inplace=True,
        patched=["p2", "p3"],
    ),
    Case(
        "stateless: the Interleave cap and the partition, the lower wins",
        params(4, unavailable=4),
        aged(4),
        partition=1,
        max_updated=2,
        deleted=["p2", "p3"],
        created=2,
    ),
    Case(
        "stateful: from the highest ordinal down to the partition",
        params(4, stateful=True, unavailable=4),
        aged(4, stateful=True),
        partition=2,
        deleted=["rs-worker-old-2", "rs-worker-old-3"],
        created=2,
    ),
    Case(
        "stateful: ordinals below the partition are kept even when not ready",
        params(4, stateful=True, unavailable=1),
        [
            info("rs-worker-old-0", hash_="old", index=0, ready=False),
            info("rs-worker-old-1", hash_="old", index=1),
            info("rs-worker-new-2", index=2),
            info("rs-worker-new-3", index=3),
        ],
        partition=2,
    ),
    Case(
        "stateful in place: ordinals 3 and 2",
        params(4, stateful=True, unavailable=2),
        aged(4, stateful=True),
        partition=2,
        inplace=True,
        patched=["rs-worker-old-2", "rs-worker-old-3"],
    ),
    Case(
        "grouped: group 2 is recreated, groups 0 and 1 kept",
        params(3, group_size=2, unavailable=3),
        group(0, 2, hash_="old") + group(1, 2, hash_="old") + group(2, 2, hash_="old"),
        partition=2,
        deleted=["rs-worker-old-2-0", "rs-worker-old-2-1"],
        created=2,  # two members of one group
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_plan_respects_the_partition(case: Case) -> None:
    view = build_view(case.role, case.pods)
    eligible = frozenset(i.key for i in view.instances) if case.inplace else frozenset()
    gate = Gate(max_updated=case.max_updated, partition=case.partition)
    plan = plan_role(case.role, view, gate, inplace=case.inplace, inplace_eligible=eligible)
    assert sorted(d.pod.name for d in plan.deletes) == case.deleted
    assert len(plan.creates) == case.created
    assert sorted(i.key for i in plan.inplace) == case.patched


def _walk(role: RoleParams, pods: list[PodInfo], cut: int, *, inplace: bool = False) -> list[PodInfo]:
    """Apply plans until nothing changes (new pods become ready the next round)."""
    made = 0
    for _ in range(40):
        view = build_view(role, pods)
        eligible = frozenset(i.key for i in view.instances) if inplace else frozenset()
        plan = plan_role(role, view, Gate(partition=cut), inplace=inplace, inplace_eligible=eligible)
        if not (plan.creates or plan.deletes or plan.inplace) and all(p.ready for p in pods):
            return pods
        gone = {d.pod.name for d in plan.deletes}
        patched = {p.name for i in plan.inplace for p in i.pods}
        pods = [
            replace(p, hash=role.target_hash) if p.name in patched else p for p in pods if p.name not in gone
        ]
        for cr in plan.creates:
            made += 1
            name = f"rs-worker-{role.target_hash}-{cr.index}" if cr.index is not None else f"new{made}"
            pods.append(info(name, index=cr.index, ready=False, hash_=role.target_hash))
        pods = [replace(p, ready=True) for p in pods]
    raise AssertionError(f"did not settle: {pods}")


@pytest.mark.parametrize("inplace", [False, True], ids=["recreate", "in place"])
@pytest.mark.parametrize("cut", [0, 1, 2, 4, 5])
@pytest.mark.parametrize(
    "role",
    [params(4, unavailable=1), params(4, surge=1, unavailable=0), params(4, stateful=True, unavailable=1)],
    ids=["stateless", "stateless surge", "stateful"],
)
def test_a_rollout_settles_with_exactly_the_partition_kept(role: RoleParams, cut: int, inplace: bool) -> None:
    start = aged(4, stateful=role.stateful)
    end = build_view(role, _walk(role, start, cut, inplace=inplace))
    old = [i for i in end.instances if classify(role, i) == "outdated"]
    assert len(end.instances) == 4
    assert len(old) == min(cut, 4)
    if role.stateful:
        assert sorted(i.index for i in old if i.index is not None) == list(range(min(cut, 4)))
    elif old:
        # The oldest ones are kept.
        assert sorted(p.name for i in old for p in i.pods) == [f"p{i}" for i in range(min(cut, 4))]
    h = partition.hold(role, old, cut)
    p = progress(role, end)
    assert (h.kept, h.pending) == (min(cut, 4), 0)
    assert partition.held(h, 4, p.live, p.updated_ready) == (cut > 0)


@pytest.mark.parametrize(
    ("role", "indexes", "cut", "expected"),
    [
        (params(4), [None, None, None], 2, (2, 1)),
        (params(4), [None], 2, (1, 0)),
        (params(4), [None, None], 0, (0, 2)),
        (params(4, stateful=True), [0, 1, 3], 2, (2, 1)),
        (params(4, stateful=True), [2, 3], 2, (0, 2)),
        (params(4, stateful=True), [0, 3], 9, (2, 0)),
    ],
)
def test_hold_splits_outdated_instances(
    role: RoleParams, indexes: list[int | None], cut: int, expected: tuple[int, int]
) -> None:
    pods = [info(f"x{n}", hash_="old", index=i) for n, i in enumerate(indexes)]
    outdated = build_view(role, pods).instances
    h = partition.hold(role, outdated, cut)
    assert (h.kept, h.pending) == expected


@pytest.mark.parametrize(
    ("kept", "pending", "live", "updated_ready", "expected"),
    [
        (2, 0, 4, 2, True),
        (0, 0, 4, 4, False),  # done, not held
        (2, 1, 4, 1, False),  # more to update
        (2, 0, 4, 1, False),  # an updated one is not ready yet
        (2, 0, 3, 1, False),  # short of an instance
    ],
)
def test_held(kept: int, pending: int, live: int, updated_ready: int, expected: bool) -> None:
    assert partition.held(partition.Hold(kept, pending), 4, live, updated_ready) is expected


def test_a_held_role_lets_the_next_role_roll_under_sequential() -> None:
    roles = [
        RoleRollout("prefill", 0, 1, 4, 0, 1, updated_ready=2, done=True),  # held at partition 2
        RoleRollout("decode", 1, 2, 4, 0, 1, updated_ready=0, done=False),
    ]
    assert plan_gates("Sequential", roles)["decode"].allowed


def test_progressing_says_partition_held_and_ready_stays_true() -> None:
    role = params(6)
    pods = aged(2) + [info(f"n{i}") for i in range(4)]
    counts = [RoleCounts("decode", 6, progress(role, build_view(role, pods)))]
    h = partition.Hold(kept=2, pending=0)
    obs = Observations(held={"decode": partition.held_message("decode", h, 6)})
    conds = {c.type: c for c in conditions_for(counts, obs)}
    assert conds["Progressing"].status == "True"
    assert conds["Progressing"].reason == "PartitionHeld"
    assert (
        conds["Progressing"].message == "role decode: 2 of 6 instances kept on the old revision by partition"
    )
    assert conds["Ready"].status == "True"
    # Without the hold the same counts read as a rollout under way.
    assert conditions_for(counts, Observations())[1].reason == "RollingUpdate"
