"""RollingUpdate decisions, table-driven, and a simulated rollout that checks the bounds at every step."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.stormservice.plan import plan_pass
from controller.stormservice.rolling import plan_rolling_update
from controller.stormservice.scale import Budget
from controller.stormservice.view import RoleSetView
from tests.unit.stormservice.helpers import names, rs

CASES: list[Any] = [
    # id, rolesets, budget, (create, deleted names)
    (
        "surge0-unavail1-deletes-one",
        [rs("o1", "old", created=1), rs("o2", "old", created=2), rs("o3", "old", created=3)],
        Budget(3, 0, 1),
        (0, ["o3"]),
    ),
    (
        "surge1-unavail0-creates-one",
        [rs("o1", "old"), rs("o2", "old"), rs("o3", "old")],
        Budget(3, 1, 0),
        (1, []),
    ),
    (
        "waits-for-new-to-be-ready",
        [rs("o1", "old"), rs("o2", "old"), rs("n1", ready=False)],
        Budget(3, 0, 1),
        (0, []),
    ),
    (
        "new-ready-next-old-goes",
        [rs("o1", "old", created=1), rs("o2", "old", created=2), rs("n1")],
        Budget(3, 0, 1),
        (0, ["o2"]),
    ),
    (
        "not-ready-old-goes-free",
        [rs("o1", "old"), rs("o2", "old", ready=False), rs("o3", "old")],
        Budget(3, 0, 1),
        (0, ["o2"]),
    ),
    (
        "all-not-ready-old-go",
        [rs("o1", "old", ready=False), rs("o2", "old", ready=False)],
        Budget(2, 0, 1),
        (0, ["o1", "o2"]),
    ),
    ("surge2", [rs("o1", "old"), rs("o2", "old"), rs("o3", "old")], Budget(3, 2, 0), (2, [])),
    (
        "quarter-of-four-both",
        [
            rs("o1", "old", created=1),
            rs("o2", "old", created=2),
            rs("o3", "old", created=3),
            rs("o4", "old", created=4),
        ],
        Budget(4, 1, 1),
        (1, ["o4"]),
    ),
    ("done", [rs("n1"), rs("n2")], Budget(2, 1, 1), (0, [])),
    (
        "terminating-count-toward-surge",
        [rs("o1", "old"), rs("o2", "old"), rs("t", "old", terminating=True)],
        Budget(3, 1, 0),
        (1, []),
    ),
    (
        "terminating-fill-surge",
        [rs("o1", "old"), rs("o2", "old"), rs("o3", "old"), rs("t", "old", terminating=True)],
        Budget(3, 1, 0),
        (0, []),
    ),
    (
        "updated-count-limits-creation",
        [rs("o1", "old"), rs("n1", ready=False), rs("n2", ready=False)],
        Budget(3, 2, 0),
        (1, []),
    ),
    (
        "several-old-revisions",
        [rs("a", "rev1", created=1), rs("b", "rev2", created=2), rs("n", ready=True, created=3)],
        Budget(3, 0, 1),
        (0, ["b"]),
    ),
]


@pytest.mark.parametrize(("rolesets", "budget", "expected"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_plan_rolling_update(rolesets: list[Any], budget: Budget, expected: tuple[int, list[str]]) -> None:
    plan = plan_rolling_update(rolesets, budget, "new")
    assert (plan.create_updated, names(plan.delete)) == expected
    assert plan.create_current == 0
    assert all(r.revision != "new" for r in plan.delete)


def test_plan_pass_phases() -> None:
    budget = Budget(2, 0, 1)
    assert plan_pass([rs("a", "old")], budget, "new", paused=False, strategy="RollingUpdate").phase == "scale"
    p = plan_pass([rs("a", "old"), rs("b", "old")], budget, "new", paused=False, strategy="RollingUpdate")
    assert p.phase == "rollout"
    assert (
        plan_pass(
            [rs("a", "old"), rs("b", "old")], budget, "new", paused=True, strategy="RollingUpdate"
        ).phase
        == "none"
    )
    p = plan_pass(
        [rs("b", "old"), rs("a", "old"), rs("c")],
        Budget(3, 0, 3),
        "new",
        paused=False,
        strategy="InPlaceUpdate",
    )
    assert (p.phase, names(p.rewrite)) == ("rollout", ["a", "b"])
    assert (
        plan_pass([rs("a"), rs("b")], budget, "new", paused=False, strategy="InPlaceUpdate").phase == "none"
    )
    assert (
        plan_pass([rs("a", "old"), rs("b")], budget, "new", paused=True, strategy="InPlaceUpdate").phase
        == "none"
    )


# --- simulation ------------------------------------------------------------------------------------------


def _simulate(replicas: int, surge: int, unavailable: int, events: list[int]) -> list[RoleSetView]:
    """Run passes of `plan_pass` against a toy cluster until the rollout from "old" to "new" is
    over. Between passes, the event stream decides what the world does: a not-ready RoleSet
    becomes ready, or a terminating one goes away. Asserts the bounds at every step."""
    budget = Budget(replicas, surge, unavailable)
    counter = itertools.count()
    world = [rs(f"o{i}", "old", created=-i) for i in range(replicas)]
    ev = iter(events)
    for _step in range(400):
        plan = plan_pass(world, budget, "new", paused=False, strategy="RollingUpdate")
        doomed = {r.name for r in plan.changes.delete}
        world = [
            RoleSetView(
                r.name, r.revision, ready=False, updated_ready=False, terminating=True, created=r.created
            )
            if r.name in doomed
            else r
            for r in world
        ]
        for _ in range(plan.changes.create_updated):
            n = next(counter)
            world.append(rs(f"n{n}", "new", ready=False, created=n))
        assert plan.changes.create_current == 0
        assert len(world) <= budget.max_total, f"{len(world)} RoleSets > {budget.max_total}"
        ready = sum(1 for r in world if r.ready)
        assert ready >= budget.min_available, f"{ready} ready < {budget.min_available}"
        if (
            all(r.revision == "new" and r.ready and not r.terminating for r in world)
            and len(world) == replicas
        ):
            return world
        # The world moves: one event per step; with no event left, everything settles.
        pick = next(ev, None)
        pending = [i for i, r in enumerate(world) if r.terminating or not r.ready]
        if not pending:
            continue
        i = pending[(pick or 0) % len(pending)]
        r = world[i]
        if r.terminating:
            del world[i]
        else:
            world[i] = rs(r.name, r.revision, ready=True, created=r.created)
    raise AssertionError(f"rollout did not finish: {world}")


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable"),
    [(1, 0, 1), (1, 1, 0), (3, 0, 1), (3, 1, 0), (3, 1, 1), (4, 2, 2), (5, 0, 5), (5, 5, 0), (0, 0, 0)],
)
def test_simulated_rollout_table(replicas: int, surge: int, unavailable: int) -> None:
    world = _simulate(replicas, surge, unavailable, [])
    assert sorted(r.revision for r in world) == ["new"] * replicas


@settings(max_examples=150, deadline=None)
@given(
    replicas=st.integers(0, 6),
    surge=st.integers(0, 3),
    unavailable=st.integers(0, 3),
    events=st.lists(st.integers(0, 50), max_size=60),
)
def test_simulated_rollout_bounds(replicas: int, surge: int, unavailable: int, events: list[int]) -> None:
    if surge == 0 and unavailable == 0:
        unavailable = 1  # the fencepost rule; (0, 0) never reaches plan_pass
    _simulate(replicas, surge, min(unavailable, replicas), events)
