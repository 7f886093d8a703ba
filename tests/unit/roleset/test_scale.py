"""Table-driven tests of the per-role decisions: what to create, what to delete, in which order."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from controller.roleset.instances import PodInfo, RoleParams, build_view
from controller.roleset.scale import Gate, RolePlan, plan_role, progress
from tests.unit.roleset.factories import group, info, params


def summary(plan: RolePlan) -> dict[str, object]:
    return {
        "create": sorted(
            ((c.index if c.index is not None else -1), (c.member if c.member is not None else -1), c.reason)
            for c in plan.creates
        ),
        "delete": sorted((d.pod.name, d.reason) for d in plan.deletes),
        "inplace": sorted(i.key for i in plan.inplace),
        "fallback": sorted(i.key for i in plan.fallback),
        "scaled": plan.scaled,
        "blocked": plan.blocked is not None,
    }


@dataclass
class Case:
    id: str
    role: RoleParams
    pods: list[PodInfo]
    gate: Gate = field(default_factory=Gate)
    inplace: bool = False
    eligible: frozenset[str] = frozenset()
    create: list[tuple[int, int, str]] = field(default_factory=list)
    delete: list[tuple[str, str]] = field(default_factory=list)
    inplace_keys: list[str] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)
    scaled: bool = False
    blocked: bool = False


def c(*names_reasons: tuple[str, str]) -> list[tuple[str, str]]:
    return sorted(names_reasons)


STATELESS = [
    Case("empty role creates replicas", params(3), [], create=[(-1, -1, "scale-up")] * 3, scaled=True),
    Case("steady state does nothing", params(2), [info("a"), info("b")]),
    Case(
        "zero replicas deletes everything",
        params(0, unavailable=0),
        [info("a"), info("b", ready=False)],
        delete=c(("a", "scale-down"), ("b", "scale-down")),
        scaled=True,
    ),
    Case(
        "terminated pods are deleted and replaced",
        params(2),
        [info("a"), info("b", phase="Failed"), info("c", phase="Succeeded")],
        delete=c(("b", "terminated"), ("c", "terminated")),
        create=[(-1, -1, "scale-up")],
        scaled=True,
    ),
    Case(
        "terminating pods are neither counted nor deleted",
        params(2),
        [info("a"), info("b", deleting=True)],
        create=[(-1, -1, "scale-up")],
        scaled=True,
    ),
    Case(
        "scale down: outdated first, then not-ready, then newest",
        params(2, unavailable=2),
        [
            info("new-old-ts", created="2024-01-01T00:00:00Z"),
            info("new-young", created="2024-01-03T00:00:00Z"),
            info("new-notready", ready=False),
            info("outdated", hash_="old"),
        ],
        delete=c(("outdated", "scale-down"), ("new-notready", "scale-down")),
        scaled=True,
    ),
    Case(
        "scale down newest first among equals",
        params(1, unavailable=1),
        [
            info("a", created="2024-01-01T00:00:00Z"),
            info("b", created="2024-01-02T00:00:00Z"),
            info("c", created="2024-01-03T00:00:00Z"),
        ],
        delete=c(("b", "scale-down"), ("c", "scale-down")),
        scaled=True,
    ),
    Case(
        "scale down never takes ready below replicas - maxUnavailable",
        params(3, unavailable=0, surge=1),
        [
            info("r1"),
            info("r2"),
            info("nr", ready=False),
            info("r3"),
            info("r4", created="2024-02-01T00:00:00Z"),
        ],
        # ready=4, floor=3: one ready may go (the newest), and the not-ready one.
        delete=c(("nr", "scale-down"), ("r4", "scale-down")),
        scaled=True,
    ),
    Case(
        "scale down skips ready when at the floor but still removes not-ready",
        params(2, unavailable=0, surge=1),
        [info("r1"), info("r2"), info("nr1", ready=False), info("nr2", ready=False)],
        delete=c(("nr1", "scale-down"), ("nr2", "scale-down")),
        scaled=True,
    ),
    # Rollout, Recreate strategy.
    Case(
        "rollout surge 0 unavailable 1: one at a time",
        params(3, surge=0, unavailable=1),
        [info("o1", hash_="old"), info("o2", hash_="old"), info("o3", hash_="old")],
        delete=c(("o3", "rollout")),
        create=[(-1, -1, "rollout")],
    ),
    Case(
        "rollout waits while a new pod is not ready",
        params(3, surge=0, unavailable=1),
        [info("o1", hash_="old"), info("o2", hash_="old"), info("n1", ready=False)],
    ),
    Case(
        "rollout surge 1 unavailable 0 creates first",
        params(3, surge=1, unavailable=0),
        [info("o1", hash_="old"), info("o2", hash_="old"), info("o3", hash_="old")],
        create=[(-1, -1, "rollout")],
    ),
    Case(
        "rollout surge 1: surge pod ready -> delete one old",
        params(3, surge=1, unavailable=0),
        [
            info("o1", hash_="old", created="2024-01-01T00:00:00Z"),
            info("o2", hash_="old", created="2024-01-02T00:00:00Z"),
            info("o3", hash_="old", created="2024-01-01T00:00:00Z"),
            info("n1", created="2024-01-05T00:00:00Z"),
        ],
        delete=c(("o2", "rollout")),
        create=[(-1, -1, "rollout")],
    ),
    Case(
        "rollout surge pod not ready: nothing more",
        params(3, surge=1, unavailable=0),
        [info("o1", hash_="old"), info("o2", hash_="old"), info("o3", hash_="old"), info("n1", ready=False)],
    ),
    Case(
        "rollout deletes not-ready outdated pods without budget",
        params(3, surge=0, unavailable=1),
        [info("o1", hash_="old", ready=False), info("o2", hash_="old", ready=False), info("o3", hash_="old")],
        # The one ready pod stays: ready (1) is already below replicas - maxUnavailable (2).
        delete=c(("o1", "rollout"), ("o2", "rollout")),
        create=[(-1, -1, "rollout")] * 2,
    ),
    Case(
        "rollout gated off does nothing",
        params(3),
        [info("o1", hash_="old"), info("o2", hash_="old"), info("o3", hash_="old")],
        gate=Gate(allowed=False),
    ),
    Case(
        "gated off role still scales up with the new template",
        params(3),
        [info("o1", hash_="old")],
        gate=Gate(allowed=False),
        create=[(-1, -1, "scale-up")] * 2,
        scaled=True,
    ),
    Case(
        "interleave cap limits the updated count",
        params(4, surge=0, unavailable=2),
        [info("o1", hash_="old"), info("o2", hash_="old"), info("o3", hash_="old"), info("n1")],
        gate=Gate(max_updated=2),
        delete=c(("o3", "rollout")),
        create=[(-1, -1, "rollout")],
    ),
    Case(
        "interleave cap reached: wait",
        params(4, surge=0, unavailable=2),
        [info("o1", hash_="old"), info("o2", hash_="old"), info("n1"), info("n2")],
        gate=Gate(max_updated=2),
    ),
    Case(
        "percent-like big budgets roll many at once",
        params(4, surge=2, unavailable=2),
        [info(f"o{i}", hash_="old") for i in range(4)],
        # Ties in age: the later name goes first.
        delete=c(("o2", "rollout"), ("o3", "rollout")),
        create=[(-1, -1, "rollout")] * 4,
    ),
    Case(
        "surge pods are not scaled away while rolling",
        params(2, surge=1, unavailable=0),
        [info("o1", hash_="old"), info("o2", hash_="old"), info("n1", ready=False)],
    ),
    # In place.
    Case(
        "in-place: eligible pods are patched within maxUnavailable",
        params(3, surge=0, unavailable=1),
        [
            info("o1", hash_="old"),
            info("o2", hash_="old"),
            info("o3", hash_="old", created="2024-01-09T00:00:00Z"),
        ],
        inplace=True,
        eligible=frozenset({"o1", "o2", "o3"}),
        inplace_keys=["o3"],
    ),
    Case(
        "in-place: in-flight pod holds the budget",
        params(3, surge=0, unavailable=1),
        [info("o1", hash_="old"), info("o2", hash_="old"), info("o3", hash_="old", target="new")],
        inplace=True,
        eligible=frozenset({"o1", "o2"}),
    ),
    Case(
        "in-place: ineligible pod falls back to recreate",
        params(3, surge=0, unavailable=1),
        [
            info("o1", hash_="old"),
            info("o2", hash_="old"),
            info("o3", hash_="old", created="2024-01-09T00:00:00Z"),
        ],
        inplace=True,
        eligible=frozenset({"o1", "o2"}),
        delete=c(("o3", "rollout")),
        fallback=["o3"],
        create=[(-1, -1, "rollout")],
    ),
    Case(
        "in-place: reverted template re-patches an in-flight pod",
        params(1, surge=0, unavailable=1, hash_="old"),
        [info("p", hash_="old", target="new")],
        inplace=True,
        eligible=frozenset({"p"}),
        inplace_keys=["p"],
    ),
    Case(
        "in-place with maxUnavailable 0 surges instead",
        params(2, surge=1, unavailable=0),
        [info("o1", hash_="old"), info("o2", hash_="old")],
        inplace=True,
        eligible=frozenset({"o1", "o2"}),
        create=[(-1, -1, "rollout")],
    ),
]


STATEFUL = [
    Case(
        "stateful: empty slots are filled by index",
        params(3, stateful=True),
        [info("p0", index=0)],
        create=[(1, -1, "missing"), (2, -1, "missing")],
        scaled=True,
    ),
    Case(
        "stateful: unreadable and out-of-range indexes go as a scale-down",
        params(2, stateful=True),
        [
            info("p0", index=0),
            info("p1", index=1),
            info("bad", index="x"),
            info("none"),
            info("far", index=5),
            info("lead", index="01"),
        ],
        # "none" has no index at all (a pod from when the role was stateless), "bad" and "lead"
        # one that does not parse and a name that does not tell: unslotted instances, here
        # excess ones; "far" is beyond the slots. All go within the budget (two ready remain).
        delete=c(
            ("bad", "scale-down"), ("none", "scale-down"), ("far", "scale-down"), ("lead", "scale-down")
        ),
        scaled=True,
    ),
    Case(
        "stateful: an unreadable index is read from the stable name",
        params(2, stateful=True),
        [info("p0", index=0), info("rs-worker-new-1", index="x")],
    ),
    Case(
        "stateful: scale-down keeps a ready pod beyond the slots while the slots are not ready",
        params(2, stateful=True, unavailable=1),
        [
            info("p0", index=0, ready=False),
            info("p1", index=1, ready=False),
            info("p2", index=2),
            info("p3", index=3),
            info("p4", index=4, ready=False),
        ],
        delete=c(("p4", "scale-down"), ("p3", "scale-down")),
    ),
    Case(
        "stateful: rollout replaces the highest index first",
        params(3, stateful=True, surge=0, unavailable=1),
        [info(f"p{i}", index=i, hash_="old") for i in range(3)],
        delete=c(("p2", "rollout")),
        create=[(2, -1, "rollout")],
    ),
    Case(
        "stateful: not-ready outdated slots go first, without budget",
        params(3, stateful=True, surge=0, unavailable=1),
        [
            info("p0", index=0, hash_="old", ready=False),
            info("p1", index=1, hash_="old"),
            info("p2", index=2, hash_="old"),
        ],
        # p0 already uses the whole unavailable budget, so p2 waits.
        delete=c(("p0", "rollout")),
        create=[(0, -1, "rollout")],
    ),
    Case(
        "stateful: surge keeps the old pod until the new one is ready",
        params(2, stateful=True, surge=1, unavailable=0),
        [info("p0", index=0, hash_="old"), info("p1", index=1, hash_="old")],
        create=[(1, -1, "rollout-surge")],
    ),
    Case(
        "stateful: surge pair, new not ready: keep both",
        params(2, stateful=True, surge=1, unavailable=0),
        [
            info("p0", index=0, hash_="old"),
            info("p1", index=1, hash_="old"),
            info("n1", index=1, ready=False),
        ],
    ),
    Case(
        "stateful: surge pair, new ready: old one goes",
        params(2, stateful=True, surge=1, unavailable=0),
        [info("p0", index=0, hash_="old"), info("p1", index=1, hash_="old"), info("n1", index=1)],
        delete=c(("p1", "superseded")),
        create=[(0, -1, "rollout-surge")],
    ),
    Case(
        "stateful: duplicate updated pods keep the oldest",
        params(1, stateful=True),
        [
            info("a", index=0, created="2024-01-01T00:00:00Z"),
            info("b", index=0, created="2024-01-02T00:00:00Z"),
        ],
        delete=c(("b", "superseded")),
    ),
    Case(
        "stateful: scale down removes the high slots",
        params(1, stateful=True),
        [info("p0", index=0), info("p1", index=1), info("p2", index=2)],
        delete=c(("p1", "scale-down"), ("p2", "scale-down")),
    ),
    Case(
        "stateful: in-place",
        params(2, stateful=True, surge=0, unavailable=1),
        [info("p0", index=0, hash_="old"), info("p1", index=1, hash_="old")],
        inplace=True,
        eligible=frozenset({"p0", "p1"}),
        inplace_keys=["p1"],
    ),
    Case(
        "stateful: in-place waits for budget rather than recreating",
        params(2, stateful=True, surge=1, unavailable=1),
        [info("p0", index=0, hash_="old"), info("p1", index=1, hash_="old", target="new")],
        inplace=True,
        eligible=frozenset({"p0"}),
    ),
]


GROUPED = [
    Case(
        "grouped: an empty role creates whole groups",
        params(2, group_size=3),
        [],
        create=sorted([(i, m, "missing") for i in range(2) for m in range(3)]),
        scaled=True,
    ),
    Case("grouped: complete ready groups: nothing", params(2, group_size=2), group(0, 2) + group(1, 2)),
    Case(
        "grouped: a missing member of an updated group is replaced (ReplaceUnhealthy)",
        params(1, group_size=3),
        group(0, 3, members=[0, 2]),
        create=[(0, 1, "missing-member")],
    ),
    Case(
        "grouped: a failed member is deleted, replaced once gone",
        params(1, group_size=2),
        group(0, 2, members=[0]) + group(0, 2, members=[1], phase="Failed"),
        delete=c(("rs-worker-new-0-1", "terminated")),
    ),
    Case(
        "grouped: Recreate policy deletes the whole group on a failed member",
        params(1, group_size=2, recreate=True),
        group(0, 2, members=[0]) + group(0, 2, members=[1], phase="Failed"),
        # The successor group has the same names: it is created once these are gone.
        delete=c(("rs-worker-new-0-1", "terminated"), ("rs-worker-new-0-0", "group-recreate")),
        scaled=True,
    ),
    Case(
        "grouped: a terminating predecessor of another hash does not block",
        params(1, group_size=2),
        group(0, 2, hash_="old", members=[0], deleting=True),
        create=[(0, 0, "missing"), (0, 1, "missing")],
        scaled=True,
    ),
    Case(
        "grouped: ... but not while a same-named member is terminating",
        params(1, group_size=2),
        group(0, 2, members=[0], deleting=True) + group(0, 2, members=[1], phase="Failed"),
        delete=c(("rs-worker-new-0-1", "terminated")),
        scaled=True,
    ),
    Case(
        "stateful: a lost pod comes back under the same name once gone",
        params(1, stateful=True),
        [info("rs-worker-new-0", index=0, deleting=True)],
        scaled=True,
    ),
    Case(
        "grouped: Recreate policy deletes the group on a missing member",
        params(1, group_size=3, recreate=True),
        group(0, 3, members=[0, 1]),
        delete=c(("rs-worker-new-0-0", "group-recreate"), ("rs-worker-new-0-1", "group-recreate")),
        scaled=True,
    ),
    Case(
        "grouped: an incomplete outdated group is recreated as a unit",
        params(1, group_size=2),
        group(0, 2, hash_="old", members=[1]),
        delete=c(("rs-worker-old-0-1", "group-recreate")),
        create=[(0, 0, "missing"), (0, 1, "missing")],
        scaled=True,
    ),
    Case(
        "grouped: rollout replaces a group as a unit",
        params(2, group_size=2, surge=0, unavailable=1),
        group(0, 2, hash_="old") + group(1, 2, hash_="old"),
        delete=c(("rs-worker-old-1-0", "rollout"), ("rs-worker-old-1-1", "rollout")),
        create=[(1, 0, "rollout"), (1, 1, "rollout")],
    ),
    Case(
        "grouped: a group is ready only when every member is",
        params(2, group_size=2, surge=0, unavailable=1),
        group(0, 2, hash_="old")
        + group(1, 2)[:1]
        + [info("rs-worker-new-1-1", index=1, group="rs-worker-new-1", member=1, size=2, ready=False)],
    ),
    Case(
        "grouped: changing podGroupSize replaces instances",
        params(1, group_size=3, surge=0, unavailable=1),
        group(0, 2),
        delete=c(("rs-worker-new-0-0", "rollout"), ("rs-worker-new-0-1", "rollout")),
        create=sorted([(0, m, "rollout") for m in range(3)]),
    ),
    Case(
        "grouped: podGroupSize change with surge and unavailable budget uses the unavailable one",
        params(2, group_size=3, surge=1, unavailable=1),
        group(0, 2) + group(1, 2),
        delete=c(("rs-worker-new-1-0", "rollout"), ("rs-worker-new-1-1", "rollout")),
        create=sorted([(1, m, "rollout") for m in range(3)]),
    ),
    Case(
        "grouped: a template change surges a whole group under new names",
        params(2, group_size=2, surge=1, unavailable=0),
        group(0, 2, hash_="old") + group(1, 2, hash_="old"),
        create=[(1, 0, "rollout-surge"), (1, 1, "rollout-surge")],
    ),
    Case(
        "grouped: podGroupSize 2 -> 1 turns groups into single pods",
        params(1, group_size=1, stateful=True),
        group(0, 2),
        delete=c(("rs-worker-new-0-0", "rollout"), ("rs-worker-new-0-1", "rollout")),
        create=[(0, -1, "rollout")],
    ),
    Case(
        "grouped: duplicate and bad members are deleted",
        params(1, group_size=2),
        [
            *group(0, 2),
            info("dup", index=0, group="rs-worker-new-0", member=1, size=2, created="2024-03-01T00:00:00Z"),
            info("badm", index=0, group="rs-worker-new-0", member=7, size=2),
        ],
        delete=c(("dup", "duplicate-member"), ("badm", "bad-member")),
    ),
    Case(
        "grouped: out-of-range groups are deleted whole",
        params(1, group_size=2),
        group(0, 2) + group(3, 2),
        delete=c(("rs-worker-new-3-0", "scale-down"), ("rs-worker-new-3-1", "scale-down")),
    ),
    Case(
        "grouped: pods that lost their group-size annotation are still a ready group",
        params(2, group_size=4, unavailable=1),
        [replace(p, group_size=0) for p in group(0, 4) + group(1, 4)],
    ),
    Case(
        "grouped: a lost size annotation on some members is read from the others",
        params(1, group_size=4),
        [replace(p, group_size=0) if p.member else p for p in group(0, 4)],
    ),
    Case(
        "grouped: lost index and member labels are read from the group and pod names",
        params(2, group_size=2),
        [replace(p, index=None, has_index=False) for p in group(0, 2)]
        + [replace(p, member=None) for p in group(1, 2)],
    ),
    Case(
        "grouped: lost annotations of a group of another size: an outdated instance, rolled within budget",
        params(2, group_size=2, unavailable=1),
        [replace(p, group_size=0) for p in group(0, 4) + group(1, 4)],
        delete=c(*((f"rs-worker-new-1-{m}", "rollout") for m in range(4))),
        create=[(1, 0, "rollout"), (1, 1, "rollout")],
    ),
]


def unslotted(n: int, *, ready: bool = True, hash_: str = "new", prefix: str = "u") -> list[PodInfo]:
    """Pods of a role that was stateless: generated names, no index."""
    return [
        info(f"{prefix}{i}", hash_=hash_, ready=ready, created=f"2024-01-0{i + 1}T00:00:00Z")
        for i in range(n)
    ]


# Switching a role to stateful or grouped, or changing podGroupSize: instances are replaced within
# the role's budget, never all at once.
SWITCH = [
    Case(
        "to stateful: one unslotted pod goes (newest first), slot 0 is filled",
        params(3, stateful=True, surge=0, unavailable=1),
        unslotted(3),
        delete=c(("u2", "rollout")),
        create=[(0, -1, "rollout")],
    ),
    Case(
        "to stateful: waits while the new slot is not ready",
        params(3, stateful=True, surge=0, unavailable=1),
        [info("s0", index=0, ready=False), *unslotted(2)],
    ),
    Case(
        "to stateful: next step once it is ready",
        params(3, stateful=True, surge=0, unavailable=1),
        [info("s0", index=0), *unslotted(2)],
        delete=c(("u1", "rollout")),
        create=[(1, -1, "rollout")],
    ),
    Case(
        "to stateful with surge only: create first",
        params(3, stateful=True, surge=1, unavailable=0),
        unslotted(3),
        create=[(0, -1, "rollout")],
    ),
    Case(
        "to stateful with surge only: at replicas + surge, nothing until the new slot is ready",
        params(3, stateful=True, surge=1, unavailable=0),
        [info("s0", index=0, ready=False), *unslotted(3)],
    ),
    Case(
        "to stateful with surge only: then one goes and the next slot is created",
        params(3, stateful=True, surge=1, unavailable=0),
        [info("s0", index=0), *unslotted(3)],
        delete=c(("u2", "rollout")),
        create=[(1, -1, "rollout")],
    ),
    Case(
        "to stateful: a not-ready unslotted pod goes first, without budget",
        params(3, stateful=True, surge=0, unavailable=1),
        [*unslotted(2), info("sick", ready=False)],
        # Two ready = replicas - maxUnavailable: no ready one may go yet.
        delete=c(("sick", "rollout")),
        create=[(0, -1, "rollout")],
    ),
    Case(
        "to stateful: no budget (a slot not ready, maxUnavailable 1 used): nothing",
        params(3, stateful=True, surge=0, unavailable=1),
        [info("s0", index=0), info("s1", index=1, ready=False), *unslotted(1)],
    ),
    Case(
        "to grouped: a whole group replaces one pod",
        params(2, group_size=2, surge=0, unavailable=1),
        unslotted(2),
        delete=c(("u1", "rollout")),
        create=[(0, 0, "rollout"), (0, 1, "rollout")],
    ),
    Case(
        "to grouped: too few instances: the deficit is created at once",
        params(3, group_size=2, surge=0, unavailable=1),
        unslotted(1),
        create=[(0, 0, "scale-up"), (0, 1, "scale-up"), (1, 0, "scale-up"), (1, 1, "scale-up")],
        scaled=True,
    ),
    Case(
        "to stateful while scaling down: excess unslotted pods go, keeping ready >= replicas - maxUnavailable",
        params(2, stateful=True, surge=0, unavailable=1),
        unslotted(4),
        delete=c(("u3", "scale-down"), ("u2", "scale-down")),
        scaled=True,
    ),
    Case(
        "to stateful: the cross-role gate holds it",
        params(2, stateful=True, surge=0, unavailable=1),
        unslotted(2),
        gate=Gate(allowed=False),
    ),
    Case(
        "to stateful under Interleave: no more updated slots than the step allows",
        params(3, stateful=True, surge=0, unavailable=1),
        [info("s0", index=0), *unslotted(2)],
        gate=Gate(allowed=True, max_updated=1),
    ),
    Case(
        "to stateful, in-place role: recreated, reported as a fallback",
        params(2, stateful=True, surge=0, unavailable=1),
        unslotted(2),
        inplace=True,
        eligible=frozenset({"u0", "u1"}),
        delete=c(("u1", "rollout")),
        create=[(0, -1, "rollout")],
        fallback=["u1"],
    ),
    Case(
        "podGroupSize 2 -> 3: one group at a time (maxUnavailable 1)",
        params(2, group_size=3, surge=0, unavailable=1),
        group(0, 2) + group(1, 2),
        delete=c(("rs-worker-new-1-0", "rollout"), ("rs-worker-new-1-1", "rollout")),
        create=[(1, 0, "rollout"), (1, 1, "rollout"), (1, 2, "rollout")],
    ),
    Case(
        "podGroupSize 2 -> 3 with surge only: same names, cannot surge, waits and says why",
        params(2, group_size=3, surge=1, unavailable=0),
        group(0, 2) + group(1, 2),
        blocked=True,
    ),
    Case(
        "podGroupSize and template change with surge only: new names, surges",
        params(2, group_size=3, surge=1, unavailable=0),
        group(0, 2, hash_="old") + group(1, 2, hash_="old"),
        create=[(1, 0, "rollout-surge"), (1, 1, "rollout-surge"), (1, 2, "rollout-surge")],
    ),
    Case(
        "stateful -> grouped: one slot at a time",
        params(2, group_size=2, stateful=True, surge=0, unavailable=1),
        [info("s0", index=0), info("s1", index=1)],
        delete=c(("s1", "rollout")),
        create=[(1, 0, "rollout"), (1, 1, "rollout")],
    ),
]


@pytest.mark.parametrize("case", STATELESS + STATEFUL + GROUPED + SWITCH, ids=lambda c: c.id)
def test_plan_role(case: Case) -> None:
    view = build_view(case.role, case.pods)
    plan = plan_role(case.role, view, case.gate, inplace=case.inplace, inplace_eligible=case.eligible)
    assert summary(plan) == {
        "create": sorted(case.create),
        "delete": sorted(case.delete),
        "inplace": sorted(case.inplace_keys),
        "fallback": sorted(case.fallback),
        "scaled": case.scaled,
        "blocked": case.blocked,
    }


@pytest.mark.parametrize(
    ("role", "pods", "expected"),
    [
        (params(2), [info("a"), info("b", hash_="old")], (2, 2, 1, 1, 1)),
        (params(2), [info("a", ready=False), info("b", target="new", hash_="old")], (2, 0, 2, 0, 0)),
        (params(1, group_size=2), group(0, 2), (1, 1, 1, 1, 0)),
        (params(1, group_size=2), group(0, 2, members=[0]), (1, 0, 1, 0, 0)),
        # An instance beyond the slots is live (and ready) until the scale-down removes it.
        (params(2, stateful=True), [info("a", index=0), info("z", index=9)], (2, 2, 1, 1, 0)),
        # Unslotted pods are live and outdated, even with the current hash.
        (params(2, stateful=True), [info("a", index=0), info("u")], (2, 2, 1, 1, 1)),
        (params(1, group_size=2), [info("u", ready=False)], (1, 0, 0, 0, 1)),
    ],
)
def test_progress(role: RoleParams, pods: list[PodInfo], expected: tuple[int, int, int, int, int]) -> None:
    p = progress(role, build_view(role, pods))
    assert (p.live, p.ready, p.updated, p.updated_ready, p.outdated) == expected


def test_progress_done() -> None:
    role = params(2)
    assert progress(role, build_view(role, [info("a"), info("b")])).done(2)
    assert not progress(role, build_view(role, [info("a"), info("b", ready=False)])).done(2)
    assert not progress(role, build_view(role, [info("a"), info("b"), info("c")])).done(2)


def _walk(role: RoleParams, pods: list[PodInfo], rounds: int = 40) -> tuple[int, int, list[PodInfo]]:
    """Apply plans the way the cluster would (deletions at once, new pods not ready until the
    next round). Returns the fewest ready and the most live instances seen, and the end state."""
    min_ready, max_live = progress(role, build_view(role, pods)).ready, 0
    made = 0
    for _ in range(rounds):
        plan = plan_role(role, build_view(role, pods), Gate())
        if not plan.creates and not plan.deletes and all(p.ready for p in pods):
            return min_ready, max_live, pods
        gone = {d.pod.name for d in plan.deletes}
        pods = [p for p in pods if p.name not in gone]
        for cr in plan.creates:
            made += 1
            if cr.member is not None:
                key = f"rs-worker-{role.target_hash}-{cr.index}"
                pods.append(
                    info(
                        f"{key}-{cr.member}",
                        index=cr.index,
                        group=key,
                        member=cr.member,
                        size=role.group_size,
                        ready=False,
                        hash_=role.target_hash,
                    )
                )
            elif cr.index is not None:
                pods.append(info(f"rs-worker-{role.target_hash}-{cr.index}", index=cr.index, ready=False))
            else:
                pods.append(info(f"new{made}", ready=False))
        p = progress(role, build_view(role, pods))
        min_ready, max_live = min(min_ready, p.ready), max(max_live, p.live)
        pods = [replace(x, ready=True) for x in pods]
    raise AssertionError(f"did not finish: {pods}")


@pytest.mark.parametrize(
    ("role", "pods"),
    [
        (params(3, stateful=True, surge=0, unavailable=1), unslotted(3)),
        (params(4, stateful=True, surge=1, unavailable=0), unslotted(4)),
        (params(4, stateful=True, surge=1, unavailable=2), unslotted(4)),
        (params(3, group_size=2, surge=0, unavailable=1), unslotted(3)),
        (params(2, group_size=3, surge=0, unavailable=1), group(0, 2) + group(1, 2)),
        (
            params(3, group_size=2, stateful=True, surge=0, unavailable=1),
            [info(f"s{i}", index=i) for i in range(3)],
        ),
        (params(3, stateful=True, surge=0, unavailable=1), group(0, 2) + group(1, 2) + group(2, 2)),
    ],
    ids=[
        "stateless->stateful",
        "stateless->stateful surge",
        "stateless->stateful unavailable 2",
        "stateless->grouped",
        "podGroupSize 2->3",
        "stateful->grouped",
        "grouped->stateful",
    ],
)
def test_switch_keeps_ready_within_budget(role: RoleParams, pods: list[PodInfo]) -> None:
    min_ready, max_live, end = _walk(role, pods)
    assert min_ready >= role.replicas - role.unavailable
    assert max_live <= role.replicas + role.surge
    view = build_view(role, end)
    assert not view.unslotted and not view.cleanup
    assert progress(role, view).done(role.replicas)
    assert sorted(i.index for i in view.instances if i.index is not None) == list(range(role.replicas))
