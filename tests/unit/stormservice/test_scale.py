"""Table-driven tests of the scaling decisions: budgets, proportional split, deletion order."""

from __future__ import annotations

from typing import Any

import pytest

from controller.stormservice.scale import (
    Budget,
    budget_for,
    deletion_order,
    pick_deletions,
    plan_scale,
    proportional_split,
    role_replica_patch,
)
from tests.unit.stormservice.helpers import names, rs

# --- budget ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"replicas": 4}, Budget(4, 0, 1), id="defaults-are-aibrix-zero-zero-then-fencepost"),
        pytest.param({}, Budget(1, 0, 1), id="replicas-default-1"),
        pytest.param({"replicas": None}, Budget(1, 0, 1), id="replicas-null-default-1"),
        pytest.param(
            {"replicas": 4, "updateStrategy": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            Budget(4, 1, 1),
            id="percent-25-of-4",
        ),
        pytest.param(
            {"replicas": 3, "updateStrategy": {"maxSurge": "50%", "maxUnavailable": "50%"}},
            Budget(3, 2, 1),
            id="surge-rounds-up-unavailable-down",
        ),
        pytest.param(
            {"replicas": 3, "updateStrategy": {"maxSurge": "10%", "maxUnavailable": "10%"}},
            Budget(3, 1, 0),
            id="small-percent-surge-ceil-1",
        ),
        pytest.param(
            {"replicas": 3, "updateStrategy": {"maxSurge": 0, "maxUnavailable": "10%"}},
            Budget(3, 0, 1),
            id="both-zero-unavailable-becomes-1",
        ),
        pytest.param(
            {"replicas": 2, "updateStrategy": {"maxSurge": 1, "maxUnavailable": 5}},
            Budget(2, 1, 2),
            id="unavailable-clipped-to-replicas",
        ),
        pytest.param({"replicas": 0}, Budget(0, 0, 0), id="zero-replicas"),
        pytest.param(
            {"replicas": 5, "updateStrategy": {"type": "InPlaceUpdate", "maxSurge": 2}},
            Budget(5, 0, 5),
            id="inplace-no-surge-no-floor",
        ),
        pytest.param(
            {"replicas": 5, "updateStrategy": {"type": "RollingUpdate", "maxSurge": 2, "maxUnavailable": 0}},
            Budget(5, 2, 0),
            id="rolling-explicit-ints",
        ),
    ],
)
def test_budget_for(spec: dict[str, Any], expected: Budget) -> None:
    assert budget_for(spec) == expected


def test_budget_bounds() -> None:
    b = Budget(5, 2, 1)
    assert (b.max_total, b.min_available) == (7, 4)
    assert Budget(1, 0, 3).min_available == 0


# --- proportional split (paused scaling) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("desired", "current", "updated", "expected"),
    [
        (5, 0, 0, (0, 5)),  # nothing yet: the update revision
        (4, 2, 2, (2, 2)),  # already there
        (6, 2, 2, (3, 3)),
        (5, 2, 2, (3, 2)),  # 2.5 -> 3 (half away from zero), updated takes the remainder
        (3, 2, 2, (2, 1)),  # 1.5 -> 2
        (1, 1, 1, (1, 0)),  # 0.5 -> 1
        (3, 1, 2, (1, 2)),
        (1, 1, 2, (0, 1)),  # 0.33 -> 0
        (2, 1, 2, (1, 1)),  # 0.67 -> 1
        (10, 1, 3, (3, 7)),  # 2.5 -> 3
        (7, 1, 3, (2, 5)),  # 1.75 -> 2
        (0, 3, 3, (0, 0)),
        (9, 3, 0, (9, 0)),  # rollout not started: all current
        (9, 0, 3, (0, 9)),
        (100, 1, 2, (33, 67)),
        (50, 1, 3, (13, 37)),  # 12.5 -> 13
    ],
)
def test_proportional_split(desired: int, current: int, updated: int, expected: tuple[int, int]) -> None:
    got = proportional_split(desired, current, updated)
    assert got == expected
    assert sum(got) == desired


# --- deletion order ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rolesets", "expected"),
    [
        pytest.param(
            [rs("n1", "new", created=1), rs("o1", "old", created=2)],
            ["o1", "n1"],
            id="old-revision-first-even-if-newer",
        ),
        pytest.param(
            [rs("a", created=1), rs("b", created=2, ready=False), rs("c", created=3)],
            ["b", "c", "a"],
            id="not-ready-then-newest",
        ),
        pytest.param(
            [rs("o-ready", "old", created=1), rs("n-unready", "new", ready=False, created=2)],
            ["o-ready", "n-unready"],
            id="revision-outranks-readiness",
        ),
        pytest.param(
            [
                rs("o2", "old2", created=5),
                rs("o1", "old1", created=1, ready=False),
                rs("n", "new", ready=False),
            ],
            ["o1", "o2", "n"],
            id="any-old-revision-counts-as-old",
        ),
        pytest.param(
            [rs("b", created=1), rs("a", created=1)],
            ["a", "b"],
            id="name-breaks-ties",
        ),
    ],
)
def test_deletion_order(rolesets: list[Any], expected: list[str]) -> None:
    assert names(deletion_order(rolesets, "new")) == expected


@pytest.mark.parametrize(
    ("ready_flags", "count", "ready_now", "min_available", "expected"),
    [
        ([True, True, True], 3, 3, 1, [0, 1]),
        ([False, True, True], 3, 2, 1, [0, 1]),
        ([True, False, True], 2, 2, 2, [1]),  # ready ones skipped, the not-ready one still goes
        ([True, True], 5, 2, 0, [0, 1]),
        ([True, True], 0, 2, 0, []),
        ([False, False], 1, 0, 3, [0]),  # not-ready deletions never lower availability
    ],
)
def test_pick_deletions(
    ready_flags: list[bool], count: int, ready_now: int, min_available: int, expected: list[int]
) -> None:
    candidates = [rs(str(i), ready=r) for i, r in enumerate(ready_flags)]
    assert names(pick_deletions(candidates, count, ready_now, min_available)) == [str(i) for i in expected]


# --- plan_scale --------------------------------------------------------------------------------------

CASES: list[Any] = [
    # id, rolesets, budget, paused, (create_updated, create_current, deleted names)
    ("create-all", [], Budget(3, 0, 1), False, (3, 0, [])),
    ("create-missing", [rs("a")], Budget(3, 0, 1), False, (2, 0, [])),
    ("terminating-use-surge-room", [rs("a"), rs("t", terminating=True)], Budget(3, 0, 1), False, (1, 0, [])),
    ("surge-room-lets-all", [rs("a"), rs("t", terminating=True)], Budget(3, 1, 0), False, (2, 0, [])),
    (
        "no-room-while-terminating",
        [rs("a"), rs("t1", terminating=True), rs("t2", terminating=True)],
        Budget(3, 0, 1),
        False,
        (0, 0, []),
    ),
    ("zero-replicas-nothing", [], Budget(0, 0, 0), False, (0, 0, [])),
    ("steady", [rs("a"), rs("b")], Budget(2, 0, 1), False, (0, 0, [])),
    (
        "steady-ignores-terminating",
        [rs("a"), rs("b"), rs("t", terminating=True)],
        Budget(2, 0, 1),
        False,
        (0, 0, []),
    ),
    (
        "scale-up-during-rollout-creates-updated",
        [rs("o1", "old"), rs("n1")],
        Budget(4, 1, 0),
        False,
        (2, 0, []),
    ),
    # scale down, one revision
    (
        "down-newest-first",
        [rs("a", created=1), rs("b", created=2), rs("c", created=3), rs("d", created=4)],
        Budget(2, 0, 1),
        False,
        (0, 0, ["d", "c"]),
    ),
    (
        "down-not-ready-first",
        [rs("a", created=1), rs("b", created=2, ready=False), rs("c", created=3)],
        Budget(2, 0, 1),
        False,
        (0, 0, ["b"]),
    ),
    ("down-to-zero", [rs("a"), rs("b"), rs("c")], Budget(0, 0, 0), False, (0, 0, ["a", "b", "c"])),
    (
        "down-keeps-floor",
        [
            rs("a", created=1),
            rs("b", created=2),
            rs("c", created=3, ready=False),
            rs("d", created=4, ready=False),
        ],
        Budget(1, 0, 0),
        False,
        (0, 0, ["d", "c", "b"]),
    ),
    (
        "down-floor-blocks-ready",
        [rs("a", created=1), rs("b", created=2, ready=False), rs("c", created=3, ready=False)],
        Budget(2, 0, 0),
        False,
        (0, 0, ["c"]),
    ),
    # scale down, two revisions, not paused
    (
        "down-old-revision-first",
        [rs("o1", "old", created=1), rs("o2", "old", created=2), rs("n1", created=3), rs("n2", created=4)],
        Budget(3, 0, 1),
        False,
        (0, 0, ["o2"]),
    ),
    (
        "rolling-surge-keeps-new-unready",  # the just-created updated RoleSet must not be deleted
        [rs("o1", "old"), rs("o2", "old"), rs("o3", "old"), rs("n1", ready=False)],
        Budget(3, 1, 0),
        False,
        (0, 0, []),
    ),
    (
        "rolling-surge-then-old-goes",
        [rs("o1", "old", created=1), rs("o2", "old", created=2), rs("o3", "old", created=3), rs("n1")],
        Budget(3, 1, 0),
        False,
        (0, 0, ["o3"]),
    ),
    (
        "updated-beyond-replicas-go-too",
        [
            rs("o1", "old", ready=False),
            rs("n1", created=1),
            rs("n2", created=2),
            rs("n3", created=3),
            rs("n4", created=4),
        ],
        Budget(3, 0, 1),
        False,
        (0, 0, ["o1", "n4"]),
    ),
    (
        "down-mid-rollout-old-ready-gated",
        [
            rs("o1", "old"),
            rs("o2", "old"),
            rs("n1", ready=False),
            rs("n2", ready=False),
            rs("n3", ready=False),
        ],
        Budget(3, 0, 1),
        False,
        (0, 0, []),
    ),
    # paused: proportional
    (
        "paused-up-both-sides",
        [rs("o1", "old"), rs("o2", "old"), rs("n1"), rs("n2")],
        Budget(6, 0, 1),
        True,
        (1, 1, []),
    ),
    (
        "paused-up-not-started-stays-current",
        [rs("o1", "old"), rs("o2", "old"), rs("o3", "old")],
        Budget(5, 0, 1),
        True,
        (0, 2, []),
    ),
    ("paused-up-all-updated", [rs("n1")], Budget(3, 0, 1), True, (2, 0, [])),
    ("paused-up-fresh", [], Budget(2, 0, 1), True, (2, 0, [])),
    (
        "paused-up-1-3-to-10",
        [rs("o", "old"), rs("n1"), rs("n2"), rs("n3")],
        Budget(10, 0, 1),
        True,
        (4, 2, []),
    ),
    (
        "paused-up-no-room",
        [rs("o", "old"), rs("n"), rs("t1", terminating=True), rs("t2", terminating=True)],
        Budget(4, 0, 1),
        True,
        (0, 0, []),
    ),
    (
        "paused-up-room-goes-to-updated-first",
        [rs("o", "old"), rs("n"), rs("t1", terminating=True)],
        Budget(4, 0, 1),
        True,
        (1, 0, []),
    ),
    (
        "paused-down-both-sides",
        [rs("o1", "old", created=1), rs("o2", "old", created=2), rs("n1", created=3), rs("n2", created=4)],
        Budget(2, 0, 1),
        True,
        (0, 0, ["o2", "n2"]),
    ),
    (
        "paused-down-not-ready-within-side",
        [
            rs("o1", "old", created=2),
            rs("o2", "old", created=1, ready=False),
            rs("n1", created=3),
            rs("n2", created=4),
        ],
        Budget(2, 0, 1),
        True,
        (0, 0, ["o2", "n2"]),
    ),
    (
        "paused-down-1-3-to-2",  # current side rounds 0.5 up to 1, so two updated go
        [rs("o", "old"), rs("n1", created=1), rs("n2", created=2), rs("n3", created=3)],
        Budget(2, 0, 1),
        True,
        (0, 0, ["n3", "n2"]),
    ),
    (
        "paused-down-floor-blocks-ready-side",  # the old side may not lose a ready one; the new side may
        [
            rs("o1", "old"),
            rs("o2", "old"),
            rs("n1", ready=False, created=1),
            rs("n2", ready=False, created=2),
        ],
        Budget(2, 0, 0),
        True,
        (0, 0, ["n2"]),
    ),
    # in-place budget: no floor
    (
        "inplace-down-no-floor",
        [rs("a", created=1), rs("b", created=2), rs("c", created=3)],
        Budget(1, 0, 1),
        False,
        (0, 0, ["c", "b"]),
    ),
]


@pytest.mark.parametrize(
    ("rolesets", "budget", "paused", "expected"), [pytest.param(*c[1:], id=c[0]) for c in CASES]
)
def test_plan_scale(
    rolesets: list[Any], budget: Budget, paused: bool, expected: tuple[int, int, list[str]]
) -> None:
    plan = plan_scale(rolesets, budget, "new", paused=paused)
    assert (plan.create_updated, plan.create_current, names(plan.delete)) == expected
    live = [r for r in rolesets if not r.terminating]
    # Never beyond the surge bound, never below the availability floor (unless already below).
    assert len(rolesets) + plan.create_updated + plan.create_current <= max(budget.max_total, len(rolesets))
    ready_after = sum(1 for r in live if r.ready) - sum(1 for r in plan.delete if r.ready)
    assert ready_after >= min(budget.min_available, sum(1 for r in live if r.ready))


# --- role replicas, in place ----------------------------------------------------------------------------


def _roleset(*roles: tuple[str, int | None]) -> dict[str, Any]:
    return {
        "spec": {
            "roles": [{"name": n, **({} if r is None else {"replicas": r}), "template": {}} for n, r in roles]
        }
    }


@pytest.mark.parametrize(
    ("have", "want", "expected"),
    [
        pytest.param([("prefill", 2), ("decode", 1)], [("prefill", 2), ("decode", 1)], [], id="nothing"),
        pytest.param(
            [("prefill", 2), ("decode", 1)],
            [("prefill", 4), ("decode", 1)],
            [
                {"op": "test", "path": "/spec/roles/0/name", "value": "prefill"},
                {"op": "add", "path": "/spec/roles/0/replicas", "value": 4},
            ],
            id="one-role",
        ),
        pytest.param(
            [("decode", 1), ("prefill", 2)],
            [("prefill", 3), ("decode", 0)],
            [
                {"op": "test", "path": "/spec/roles/0/name", "value": "decode"},
                {"op": "add", "path": "/spec/roles/0/replicas", "value": 0},
                {"op": "test", "path": "/spec/roles/1/name", "value": "prefill"},
                {"op": "add", "path": "/spec/roles/1/replicas", "value": 3},
            ],
            id="matched-by-name-not-position",
        ),
        pytest.param([("old-role", 2)], [("prefill", 3)], [], id="role-only-in-roleset-untouched"),
        pytest.param([("prefill", None)], [("prefill", 1)], [], id="absent-means-default-1"),
        pytest.param(
            [("prefill", None)],
            [("prefill", None), ("x", 2)],
            [],
            id="both-default",
        ),
        pytest.param(
            [("prefill", 1)],
            [("prefill", None)],
            [],
            id="desired-absent-is-1",
        ),
    ],
)
def test_role_replica_patch(
    have: list[tuple[str, int | None]], want: list[tuple[str, int | None]], expected: list[dict[str, Any]]
) -> None:
    assert role_replica_patch(_roleset(*have), _roleset(*want)) == expected
