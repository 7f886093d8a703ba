"""Recovery policy fields of a role: no revision, carried to RoleSets in place."""

from __future__ import annotations

from typing import Any

import pytest

from controller.runtime.resources import ROLESETS, STORMSERVICES
from controller.stormservice.revisions import revision_data, with_unversioned_fields
from controller.stormservice.rolepolicy import role_policy_patch
from tests.unit.stormservice.harness import Env, storm

pytestmark = pytest.mark.timeout(30)

BUDGET = {"maxRestarts": 3, "windowSeconds": 600}


def role(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "replicas": 1,
        "podGroupSize": 2,
        "template": {"spec": {"containers": [{"name": "c", "image": "img:1"}]}},
        **extra,
    }


def template(*roles: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "x"}}, "spec": {"roles": list(roles)}}


def test_the_fields_make_no_revision() -> None:
    plain = template(role("decode"))
    policed = template(role("decode", recoveryGracePeriodSeconds=30, restartBudget=BUDGET))
    assert revision_data(policed) == revision_data(plain)


def test_a_template_from_a_revision_takes_the_policies_of_the_stormservice() -> None:
    desired = template(role("decode", recoveryGracePeriodSeconds=30), role("prefill"))
    from_revision = template(role("decode", restartBudget=BUDGET), role("prefill", restartBudget=BUDGET))
    out = with_unversioned_fields(from_revision, desired)
    assert out == template(role("decode", recoveryGracePeriodSeconds=30), role("prefill"))


# (case, RoleSet roles, StormService roles, patch)
PATCHES: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]] = [
    ("nothing differs", [role("a", restartBudget=BUDGET)], [role("a", restartBudget=BUDGET)], []),
    ("neither has them", [role("a")], [role("a")], []),
    (
        "set",
        [role("a"), role("b")],
        [role("a"), role("b", recoveryGracePeriodSeconds=30)],
        [
            {"op": "test", "path": "/spec/roles/1/name", "value": "b"},
            {"op": "add", "path": "/spec/roles/1/recoveryGracePeriodSeconds", "value": 30},
        ],
    ),
    (
        "changed and removed",
        [role("a", recoveryGracePeriodSeconds=30, restartBudget=BUDGET)],
        [role("a", restartBudget={"maxRestarts": 5, "windowSeconds": 600})],
        [
            {"op": "test", "path": "/spec/roles/0/name", "value": "a"},
            {"op": "remove", "path": "/spec/roles/0/recoveryGracePeriodSeconds"},
            {
                "op": "add",
                "path": "/spec/roles/0/restartBudget",
                "value": {"maxRestarts": 5, "windowSeconds": 600},
            },
        ],
    ),
    ("a role the StormService lacks is left alone", [role("gone", restartBudget=BUDGET)], [role("a")], []),
]


@pytest.mark.parametrize(("have", "want", "patch"), [c[1:] for c in PATCHES], ids=[c[0] for c in PATCHES])
def test_role_policy_patch(
    have: list[dict[str, Any]], want: list[dict[str, Any]], patch: list[dict[str, Any]]
) -> None:
    assert role_policy_patch({"spec": {"roles": have}}, template(*want)) == patch


async def test_a_policy_change_is_patched_into_the_rolesets_without_a_revision() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, storm(replicas=2, prefill=2))
        for _ in range(10):
            await env.sync()
            env.all_ready()
        before = {rs["metadata"]["uid"] for rs in env.rolesets()}
        revisions = {r["metadata"]["name"] for r in env.revisions()}
        assert len(before) == 2

        def set_budget(spec: dict[str, Any]) -> None:
            spec["template"]["spec"]["roles"][0]["restartBudget"] = BUDGET

        await env.edit(set_budget)
        await env.sync()
        assert {r["metadata"]["name"] for r in env.revisions()} == revisions
        assert {rs["metadata"]["uid"] for rs in env.rolesets()} == before
        for rs in env.rolesets():
            assert rs["spec"]["roles"][0]["restartBudget"] == BUDGET
        patches = [r for r in env.client.requests if r.verb == "patch" and r.resource == ROLESETS]
        assert patches and all(r.options["patch_type"] == "json" for r in patches)
