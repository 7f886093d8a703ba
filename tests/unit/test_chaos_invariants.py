"""The chaos suite's invariant checker (tests/chaos/invariants.py) on hand-written event sequences:
each case is a sequence of watch events and the violations it must (or must not) produce, so the
monitor is known to be able to fail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.chaos.invariants import (
    INPLACE_TARGET_ANNOTATION,
    PODSET_LABEL,
    REPLICA_INDEX,
    ROLESET_INDEX_ANNOTATION,
    InvariantChecker,
    fenceposts,
    role_budget,
    storm_budget,
)

Obj = dict[str, Any]
NS = "ns"


def storm(replicas: int = 3, *, surge: Any = 1, unavailable: Any = 1, gen: int = 1, observed: int = 1) -> Obj:
    return {
        "metadata": {"name": "s", "namespace": NS, "generation": gen},
        "spec": {
            "replicas": replicas,
            "updateStrategy": {"type": "RollingUpdate", "maxSurge": surge, "maxUnavailable": unavailable},
        },
        "status": {"observedGeneration": observed},
    }


def roleset(
    name: str,
    *,
    ready: bool = True,
    index: int = 0,
    replicas: int = 2,
    surge: Any = 0,
    unavailable: Any = 1,
    group: int = 1,
    deleting: bool = False,
) -> Obj:
    meta: Obj = {
        "name": name,
        "namespace": NS,
        "uid": f"uid-{name}",
        "generation": 1,
        "labels": {"storm-service-name": "s"},
        "annotations": {ROLESET_INDEX_ANNOTATION: str(index)},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {
            "roles": [
                {
                    "name": "w",
                    "replicas": replicas,
                    "podGroupSize": group,
                    "updateStrategy": {"maxSurge": surge, "maxUnavailable": unavailable},
                }
            ]
        },
        "status": {
            "observedGeneration": 1,
            "roles": [{"name": "w", "readyReplicas": replicas if ready else 0}],
        },
    }


def pod(
    name: str,
    *,
    rs: str = "a",
    ready: bool = True,
    index: int | None = None,
    group: str | None = None,
    member: int | None = None,
    template: str = "h1",
    deleting: bool = False,
    inplace: bool = False,
) -> Obj:
    labels = {"role-name": "w", "role-template-hash": template, "storm-service-name": "s"}
    annotations: dict[str, str] = {}
    if index is not None:
        annotations[REPLICA_INDEX] = str(index)
    if group is not None:
        labels[PODSET_LABEL] = group
        labels["stormservice.orchestration.aibrix.ai/pod-group-index"] = str(member)
    if inplace:
        annotations[INPLACE_TARGET_ANNOTATION] = "h2"
    meta: Obj = {
        "name": name,
        "namespace": NS,
        "uid": f"uid-{name}",
        "labels": labels,
        "annotations": annotations,
        "ownerReferences": [{"controller": True, "uid": f"uid-{rs}", "kind": "RoleSet", "name": rs}],
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


Event = tuple[str, str, Obj] | tuple[str, str, Obj, float]  # kind, type, object[, when]


def at(when: float, event: Event) -> Event:
    return (event[0], event[1], event[2], when)


def ss(o: Obj, t: str = "MODIFIED") -> Event:
    return ("StormService", t, o)


def rs(o: Obj, t: str = "ADDED") -> Event:
    return ("RoleSet", t, o)


def p(o: Obj, t: str = "ADDED") -> Event:
    return ("Pod", t, o)


@dataclass
class Case:
    name: str
    events: list[Event]
    expect: list[str]  # the invariants violated, in order
    excuse: Callable[[InvariantChecker], None] | None = None


THREE_READY = [
    ss(storm(), "ADDED"),
    rs(roleset("a", index=0)),
    rs(roleset("b", index=1)),
    rs(roleset("c", index=2)),
]
TWO_PODS = [rs(roleset("a")), p(pod("p0")), p(pod("p1"))]

CASES = [
    Case(
        "a rolling update within surge and availability",
        [
            *THREE_READY,
            ss(storm(gen=2)),
            rs(roleset("d", index=3, ready=False)),
            rs(roleset("a", deleting=True), "MODIFIED"),
            rs(roleset("a"), "DELETED"),
            rs(roleset("d", index=3), "MODIFIED"),
        ],
        [],
    ),
    Case(
        "a RoleSet beyond replicas + maxSurge",
        [*THREE_READY, rs(roleset("d", index=3, ready=False)), rs(roleset("e", index=4, ready=False))],
        ["surge"],
    ),
    Case(
        "a ready RoleSet deleted below replicas - maxUnavailable",
        [*THREE_READY, rs(roleset("a"), "DELETED"), rs(roleset("b"), "DELETED")],
        ["availability"],
    ),
    Case(
        "not-ready RoleSets may always go",
        [
            ss(storm(), "ADDED"),
            rs(roleset("a", ready=False)),
            rs(roleset("b", ready=False, index=1)),
            rs(roleset("a", ready=False), "DELETED"),
            rs(roleset("b", ready=False, index=1), "DELETED"),
        ],
        [],
    ),
    Case(
        "a scale-down deletes ready RoleSets down to the new replicas",
        [
            *THREE_READY,
            ss(storm(replicas=1, gen=2)),
            rs(roleset("a"), "DELETED"),
            rs(roleset("b", index=1), "DELETED"),
        ],
        [],
    ),
    Case(
        "a creation for a generation not yet observed is judged by that generation too",
        [
            ss(storm(replicas=3), "ADDED"),
            rs(roleset("a")),
            rs(roleset("b", index=1)),
            ss(storm(replicas=1, gen=2, observed=1)),
            rs(roleset("c", index=2)),
        ],
        [],
    ),
    Case(
        "once the controller reported the scale-down, a creation over it is a violation",
        [
            ss(storm(replicas=3), "ADDED"),
            rs(roleset("a")),
            rs(roleset("b", index=1)),
            ss(storm(replicas=1, gen=2, observed=2)),
            rs(roleset("c", index=2)),
        ],
        ["surge"],
    ),
    Case(
        "two live RoleSets with one roleset-index",
        [ss(storm(), "ADDED"), rs(roleset("a", index=0)), rs(roleset("b", index=0))],
        ["duplicate"],
    ),
    Case(
        "two live pods for one stateful slot of one template",
        [ss(storm(), "ADDED"), rs(roleset("a", surge=1)), p(pod("p0", index=0)), p(pod("p0-bis", index=0))],
        ["duplicate"],
    ),
    Case(
        "an outdated and an updated pod in one slot: the surge pair",
        [
            ss(storm(), "ADDED"),
            rs(roleset("a", surge=1)),
            p(pod("p0", index=0)),
            p(pod("q0", index=0, template="h2")),
        ],
        [],
    ),
    Case(
        "a second member 0 in one group",
        [
            ss(storm(), "ADDED"),
            rs(roleset("a", group=2)),
            p(pod("g0", index=0, group="a-w-h1-0", member=0)),
            p(pod("g0-bis", index=0, group="a-w-h1-0", member=0)),
        ],
        ["duplicate"],
    ),
    Case(
        "pods beyond replicas + maxSurge",
        [ss(storm(), "ADDED"), *TWO_PODS, p(pod("p2"))],
        ["surge", "surge"],  # the role's instances, and the RoleSet's pods
    ),
    Case(
        "a ready pod deleted below replicas - maxUnavailable",
        [ss(storm(), "ADDED"), *TWO_PODS, p(pod("p0", deleting=True), "MODIFIED"), p(pod("p1"), "DELETED")],
        ["availability"],
    ),
    Case(
        "pods the chaos suite deletes are excused",
        [ss(storm(), "ADDED"), *TWO_PODS, p(pod("p0"), "DELETED"), p(pod("p1"), "DELETED")],
        [],
        excuse=lambda c: c.excuse_all([pod("p0"), pod("p1")], 0.0),
    ),
    Case(
        "a pod made NotReady by the chaos suite counts as ready while the controller may not know",
        [ss(storm(), "ADDED"), *TWO_PODS, p(pod("p1", ready=False), "MODIFIED"), p(pod("p0"), "DELETED")],
        [],
        excuse=lambda c: c.excuse(pod("p1"), 0.0),
    ),
    Case(
        "a pod the chaos suite deleted long ago no longer counts",
        [ss(storm(), "ADDED"), *TWO_PODS, p(pod("p1"), "DELETED"), p(pod("p0"), "DELETED")],
        ["availability"],
        excuse=lambda c: c.excuse(pod("p1"), -60.0),
    ),
    Case(
        "a RoleSet that just went not ready counts as ready: the controller may not have seen it yet",
        [
            *THREE_READY,
            at(2.0, rs(roleset("b", index=1, ready=False), "MODIFIED")),
            at(5.0, rs(roleset("a"), "DELETED")),
        ],
        [],
    ),
    Case(
        "...and no longer once the controller had time to see it",
        [
            *THREE_READY,
            at(2.0, rs(roleset("b", index=1, ready=False), "MODIFIED")),
            at(30.0, rs(roleset("a"), "DELETED")),
        ],
        ["availability"],
    ),
    Case(
        "an outdated RoleSet a fault made not ready may go: only the others get grace",
        [
            *THREE_READY,
            at(2.0, rs(roleset("a", ready=False), "MODIFIED")),
            at(3.0, rs(roleset("a", ready=False), "DELETED")),
        ],
        [],
    ),
    Case(
        "a RoleSet never ready gets no grace",
        [
            ss(storm(), "ADDED"),
            rs(roleset("a")),
            rs(roleset("b", index=1)),
            rs(roleset("c", index=2, ready=False)),
            rs(roleset("a"), "DELETED"),
        ],
        ["availability"],
    ),
    Case(
        "a pod that just went NotReady counts as ready",
        [
            ss(storm(), "ADDED"),
            *TWO_PODS,
            at(2.0, p(pod("p1", ready=False), "MODIFIED")),
            at(5.0, p(pod("p0", inplace=True), "MODIFIED")),
        ],
        [],
    ),
    Case(
        "...and no longer once the controller had time to see it",
        [
            ss(storm(), "ADDED"),
            *TWO_PODS,
            at(2.0, p(pod("p1", ready=False), "MODIFIED")),
            at(30.0, p(pod("p0", inplace=True), "MODIFIED")),
        ],
        ["availability"],
    ),
    Case(
        "two in-place updates at once with maxUnavailable 1",
        [
            ss(storm(), "ADDED"),
            *TWO_PODS,
            p(pod("p0", inplace=True), "MODIFIED"),
            p(pod("p1", inplace=True), "MODIFIED"),
        ],
        ["availability"],
    ),
    Case(
        "a member of a ready group deleted below the floor (groups count as instances)",
        [
            ss(storm(), "ADDED"),
            rs(roleset("a", group=2, replicas=1, unavailable=0, surge=1)),
            p(pod("g0", index=0, group="a-w-h1-0", member=0)),
            p(pod("g1", index=0, group="a-w-h1-0", member=1)),
            p(pod("g1", index=0, group="a-w-h1-0", member=1), "DELETED"),
        ],
        ["availability"],
    ),
    Case(
        "pods of a RoleSet being deleted are the garbage collector's",
        [
            ss(storm(replicas=1), "ADDED"),
            *TWO_PODS,
            rs(roleset("a", deleting=True), "MODIFIED"),
            p(pod("p0"), "DELETED"),
            p(pod("p1"), "DELETED"),
        ],
        [],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_checker(case: Case) -> None:
    checker = InvariantChecker(excuse_seconds=10)
    if case.excuse:
        case.excuse(checker)
    found = [v for e in case.events for v in checker.apply(e[0], e[1], e[2], now=e[3] if len(e) > 3 else 1.0)]
    assert [v.invariant for v in found] == case.expect, [str(v) for v in found]


@pytest.mark.parametrize(
    ("surge", "unavailable", "total", "expected"),
    [
        (None, None, 3, (0, 1)),
        (1, 0, 3, (1, 0)),
        ("25%", "25%", 3, (1, 0)),
        ("50%", "50%", 3, (2, 1)),
        ("10%", "10%", 3, (1, 0)),
        ("0%", "0%", 3, (0, 1)),
    ],
)
def test_fenceposts(surge: Any, unavailable: Any, total: int, expected: tuple[int, int]) -> None:
    assert fenceposts(surge, unavailable, total) == expected


def test_in_place_storm_service_has_no_surge_and_no_roleset_floor() -> None:
    budget = storm_budget([{"replicas": 2, "updateStrategy": {"type": "InPlaceUpdate"}}])
    assert (budget.max_live, budget.min_ready) == (2, 0)


def test_budgets_span_every_candidate_version() -> None:
    budget = role_budget([{"replicas": 4, "updateStrategy": {"maxSurge": 1}}, {"replicas": 2}])
    assert (budget.max_live, budget.min_ready) == (5, 1)


def versioned(obj: Obj, rv: int) -> Obj:
    obj["metadata"]["resourceVersion"] = str(rv)
    return obj


def test_a_deletion_is_judged_by_the_generation_reported_before_it_was_written() -> None:
    """The StormService watch can deliver the report of generation 3 before the RoleSet watch
    delivers a deletion the controller made while acting on generation 2 (replicas 1: one ready
    RoleSet is enough): judged by resourceVersion, that deletion is within generation 2's budget."""
    events: list[Event] = [
        ss(versioned(storm(replicas=2, gen=1, observed=1), 10), "ADDED"),
        rs(versioned(roleset("a", index=0), 11)),
        rs(versioned(roleset("b", index=1), 12)),
        ss(versioned(storm(replicas=1, unavailable=0, gen=2, observed=1), 13)),
        ss(versioned(storm(replicas=3, unavailable=0, gen=3, observed=3), 16)),
        rs(versioned(roleset("a", index=0), 14), "DELETED"),
    ]
    checker = InvariantChecker(excuse_seconds=10)
    found = [v for e in events for v in checker.apply(e[0], e[1], e[2], now=1.0)]
    assert found == [], [str(v) for v in found]
    # The same deletion written after generation 3 was reported is a violation.
    late = InvariantChecker(excuse_seconds=10)
    events[-1] = rs(versioned(roleset("a", index=0), 17), "DELETED")
    found = [v for e in events for v in late.apply(e[0], e[1], e[2], now=1.0)]
    assert [v.invariant for v in found] == ["availability"], [str(v) for v in found]
