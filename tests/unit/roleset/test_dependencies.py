"""Role dependencies: which roles may create their first pods, and the condition that says why
the others wait (controller/roleset/dependencies.py)."""

from __future__ import annotations

import pytest

from controller.roleset.dependencies import (
    REASON_DEPENDENCIES_NOT_READY,
    REASON_DEPENDENCY_CYCLE,
    Decision,
    RoleState,
    Unmet,
    condition,
    decide,
)


def rs(name: str, *deps: str, n: int = 2, ready: int = 0, started: bool = False) -> RoleState:
    return RoleState(name=name, depends_on=deps, replicas=n, ready=ready, started=started)


# (roles, waiting {role: [unmet dependency names]}, released roles, cyclic roles)
CASES = {
    "no dependencies": ([rs("prefill"), rs("decode")], {}, [], []),
    "router waits for both": (
        [rs("prefill", ready=1), rs("decode", ready=2), rs("router", "prefill", "decode")],
        {"router": ["prefill"]},
        [],
        [],
    ),
    "router released when both are ready": (
        [rs("prefill", ready=2), rs("decode", ready=3), rs("router", "prefill", "decode")],
        {},
        ["router"],
        [],
    ),
    "chain: only the next link is released": (
        [rs("a", ready=2), rs("b", "a"), rs("c", "b")],
        {"c": ["b"]},
        ["b"],
        [],
    ),
    "diamond": (
        [rs("top", "left", "right"), rs("left", "base"), rs("right", "base"), rs("base", ready=2)],
        {"top": ["left", "right"]},
        ["left", "right"],
        [],
    ),
    # Counts are instances: a grouped dependency of 2 instances of 4 pods is ready at 2.
    "grouped dependency counted in instances": (
        [rs("prefill", n=2, ready=2), rs("router", "prefill")],
        {},
        ["router"],
        [],
    ),
    "a dependency with replicas 0 is ready": (
        [rs("prefill", n=0), rs("router", "prefill")],
        {},
        ["router"],
        [],
    ),
    "a started role is never held": (
        [rs("prefill", ready=0), rs("router", "prefill", started=True)],
        {},
        [],
        [],
    ),
    "a role removed from the spec is no dependency": (
        [rs("decode", ready=2), rs("router", "prefill", "decode")],
        {},
        ["router"],
        [],
    ),
    "a role that depends only on a removed role is free": ([rs("router", "prefill")], {}, [], []),
    "cycle: its roles and those waiting for it are held": (
        [rs("a", "b"), rs("b", "a"), rs("c", "a"), rs("d", ready=2), rs("e", "d")],
        {},
        ["e"],
        ["a", "b", "c"],
    ),
    "cycle of started roles holds nothing": (
        [rs("a", "b", started=True), rs("b", "a", started=True)],
        {},
        [],
        [],
    ),
}


@pytest.mark.parametrize(("roles", "waiting", "released", "cyclic"), CASES.values(), ids=CASES.keys())
def test_decide(
    roles: list[RoleState], waiting: dict[str, list[str]], released: list[str], cyclic: list[str]
) -> None:
    d = decide(roles)
    assert {role: [u.role for u in unmet] for role, unmet in d.waiting.items()} == waiting
    assert sorted(d.released) == released
    assert list(d.cyclic) == cyclic
    for role in roles:
        assert d.holds(role.name) == (role.name in waiting or role.name in cyclic)


def test_condition_names_each_waiting_role_and_its_counts() -> None:
    d = decide([rs("prefill", n=4, ready=2), rs("decode", n=4, ready=0), rs("router", "prefill", "decode")])
    assert d.waiting["router"] == (Unmet("prefill", 2, 4), Unmet("decode", 0, 4))
    assert condition(d) == (
        "True",
        REASON_DEPENDENCIES_NOT_READY,
        'role "router" waits for "prefill" (2/4 ready), "decode" (0/4 ready)',
    )


def test_condition_puts_a_cycle_first() -> None:
    d = decide([rs("a", "b"), rs("b", "a"), rs("c"), rs("d", "c")])
    status, reason, message = condition(d) or ("", "", "")
    assert (status, reason) == ("True", REASON_DEPENDENCY_CYCLE)
    assert message.startswith('roles "a", "b" are on a dependency cycle')
    assert message.endswith('role "d" waits for "c" (0/2 ready)')


def test_no_condition_when_nothing_waits() -> None:
    assert condition(Decision()) is None
    assert condition(decide([rs("prefill", ready=2), rs("router", "prefill")])) is None
