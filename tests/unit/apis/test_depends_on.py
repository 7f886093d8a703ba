"""The model side of role dependencies (`dependsOn`): the CRD's CEL rules with its messages, and
the cycle finder shared with the RoleSet controller."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from apis.v1alpha1 import StormService
from apis.v1alpha1 import rules as r
from apis.v1alpha1.constants import MAX_ROLES
from apis.v1alpha1.types import dependency_cycle
from tests.unit.apis import cases


def with_roles(*roles: tuple[str, list[str] | None]) -> dict[str, Any]:
    obj = cases.minimal_storm_service()
    template = obj["spec"]["template"]["spec"]["roles"][0]["template"]
    obj["spec"]["template"]["spec"]["roles"] = [
        {"name": name, "template": template, **({"dependsOn": deps} if deps is not None else {})}
        for name, deps in roles
    ]
    return obj


def test_depends_on_is_read_and_absent_means_none() -> None:
    model = StormService.model_validate(
        with_roles(("prefill", None), ("decode", []), ("router", ["prefill", "decode"]))
    )
    roles = model.spec.template.spec.roles
    assert [r_.depends_on for r_ in roles] == [[], [], ["prefill", "decode"]]
    assert (
        "dependsOn"
        not in model.model_dump(mode="json", by_alias=True, exclude_none=True)["spec"]["template"]["spec"][
            "roles"
        ][0]
    )


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        ((("prefill", None), ("router", ["prefil"])), r.MSG_DEPENDS_ON_KNOWN),
        ((("router", ["router"]),), r.MSG_DEPENDS_ON_SELF),
        ((("prefill", None), ("router", ["prefill", "prefill"])), r.MSG_DEPENDS_ON_UNIQUE),
        ((("a", ["b"]), ("b", ["a"])), r.MSG_DEPENDS_ON_CYCLE),
        ((("a", ["b"]), ("b", ["c"]), ("c", ["a"]), ("d", ["a"])), r.MSG_DEPENDS_ON_CYCLE),
    ],
    ids=["unknown", "self", "duplicate", "two-cycle", "three-cycle"],
)
def test_invalid_dependencies_are_refused_with_the_crds_message(
    roles: tuple[tuple[str, list[str] | None], ...], message: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        StormService.model_validate(with_roles(*roles))


def test_a_diamond_and_the_longest_chain_are_accepted() -> None:
    StormService.model_validate(with_roles(("a", ["b", "c"]), ("b", ["d"]), ("c", ["d"]), ("d", None)))
    chain = [(f"r{i}", [f"r{i + 1}"] if i + 1 < MAX_ROLES else None) for i in range(MAX_ROLES)]
    StormService.model_validate(with_roles(*chain))


@pytest.mark.parametrize(
    ("graph", "cyclic"),
    [
        ({}, []),
        ({"router": ["prefill", "decode"], "prefill": [], "decode": []}, []),
        ({"a": ["b"], "b": ["a"], "c": []}, ["a", "b"]),
        # Roles waiting for a cycle can never start either: they are named with it.
        ({"a": ["b"], "b": ["c"], "c": ["b"], "d": []}, ["a", "b", "c"]),
        ({"a": ["a"]}, ["a"]),
        # A name that is no role is no dependency (the CRD refuses it; nothing waits for it).
        ({"a": ["gone"]}, []),
    ],
)
def test_dependency_cycle(graph: dict[str, list[str]], cyclic: list[str]) -> None:
    assert dependency_cycle(graph) == cyclic


def test_the_cel_cycle_rule_unrolls_one_round_per_possible_role() -> None:
    # A chain of MAX_ROLES roles needs MAX_ROLES rounds to be found acyclic.
    assert r.CEL_DEPENDS_ON_ACYCLIC.rule.count("transformMapEntry(n,") == MAX_ROLES


def test_the_cel_cycle_rule_is_skipped_when_no_role_depends_on_another() -> None:
    # The API server evaluates it on every write (status writes too): without a dependsOn
    # anywhere, the first operand of the || must already be true, before the unrolled rounds.
    first, _, rest = r.CEL_DEPENDS_ON_ACYCLIC.rule.partition(" || ")
    assert first == "!self.exists(r, has(r.dependsOn))"
    assert "transformMapEntry" not in first and "transformMapEntry" in rest
