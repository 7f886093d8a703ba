"""Cross-role rollout planning: Sequential, Parallel, Interleave."""

from __future__ import annotations

import pytest

from controller.roleset.rollout import RoleRollout, interleave_step, plan_gates, sequential_order
from controller.roleset.scale import Gate


def rr(
    name: str,
    pos: int,
    order: int | None = None,
    *,
    n: int = 2,
    s: int = 0,
    u: int = 1,
    ur: int = 0,
    done: bool = False,
) -> RoleRollout:
    return RoleRollout(
        name=name,
        position=pos,
        upgrade_order=order,
        replicas=n,
        surge=s,
        unavailable=u,
        updated_ready=ur,
        done=done,
    )


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        ([rr("a", 0), rr("b", 1)], ["a", "b"]),
        ([rr("a", 0, 2), rr("b", 1, 1)], ["b", "a"]),
        ([rr("a", 0), rr("b", 1, 5), rr("c", 2, 1)], ["c", "b", "a"]),  # unset rolls last
        ([rr("a", 0, 1), rr("b", 1, 1), rr("c", 2, 1)], ["a", "b", "c"]),  # ties in list order
        ([rr("x", 0, 3), rr("y", 1), rr("z", 2, 3), rr("w", 3, 2)], ["w", "x", "z", "y"]),
    ],
)
def test_sequential_order(roles: list[RoleRollout], expected: list[str]) -> None:
    assert [r.name for r in sequential_order(roles)] == expected


@pytest.mark.parametrize(
    ("roles", "allowed"),
    [
        ([rr("a", 0), rr("b", 1)], {"a": True, "b": False}),
        ([rr("a", 0, done=True), rr("b", 1), rr("c", 2)], {"a": True, "b": True, "c": False}),
        ([rr("a", 0, 2), rr("b", 1, 1)], {"a": False, "b": True}),
        ([rr("a", 0, 2), rr("b", 1, 1, done=True)], {"a": True, "b": True}),
        ([rr("a", 0, done=True), rr("b", 1, done=True)], {"a": True, "b": True}),
        # A later role that is done does not unblock what comes after an unfinished one.
        ([rr("a", 0, 1), rr("b", 1, 2, done=True), rr("c", 2, 3)], {"a": True, "b": False, "c": False}),
    ],
)
def test_sequential_gates(roles: list[RoleRollout], allowed: dict[str, bool]) -> None:
    gates = plan_gates("Sequential", roles)
    assert {k: g.allowed for k, g in gates.items()} == allowed
    assert all(g.max_updated is None for g in gates.values())


def test_default_strategy_is_sequential() -> None:
    assert plan_gates(None, [rr("a", 0), rr("b", 1)])["b"] == Gate(allowed=False)


def test_parallel_allows_everything() -> None:
    gates = plan_gates("Parallel", [rr("a", 0), rr("b", 1, 1)])
    assert gates == {"a": Gate(), "b": Gate()}


@pytest.mark.parametrize(
    ("roles", "step", "caps"),
    [
        # Fresh rollout: step 1, each role may update its step length.
        ([rr("a", 0, n=4), rr("b", 1, n=2)], 1, {"a": 1, "b": 1}),
        # a finished step 1, b not yet: a waits at 1.
        ([rr("a", 0, n=4, ur=1), rr("b", 1, n=2)], 1, {"a": 1, "b": 1}),
        # both finished step 1: step 2.
        ([rr("a", 0, n=4, ur=1), rr("b", 1, n=2, ur=1)], 2, {"a": 2, "b": 2}),
        # step length is max(1, surge + unavailable) per role.
        ([rr("a", 0, n=6, s=1, u=1), rr("b", 1, n=3, s=0, u=1)], 1, {"a": 2, "b": 1}),
        ([rr("a", 0, n=6, s=1, u=1, ur=2), rr("b", 1, n=3, ur=1)], 2, {"a": 4, "b": 2}),
        # a role that is done no longer holds the others back, and keeps its full count.
        ([rr("a", 0, n=4, ur=2), rr("b", 1, n=2, ur=2, done=True)], 3, {"a": 3, "b": 2}),
        # cap never exceeds replicas.
        ([rr("a", 0, n=3, s=2, u=2), rr("b", 1, n=8, ur=3)], 1, {"a": 3, "b": 1}),  # b is ahead: it waits
        ([rr("a", 0, done=True), rr("b", 1, done=True)], 0, {"a": 2, "b": 2}),
    ],
)
def test_interleave(roles: list[RoleRollout], step: int, caps: dict[str, int]) -> None:
    assert interleave_step(roles) == step
    gates = plan_gates("Interleave", roles)
    assert {k: g.max_updated for k, g in gates.items()} == caps
    assert all(g.allowed for g in gates.values())
