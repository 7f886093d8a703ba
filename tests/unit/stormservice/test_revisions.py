"""Revision data, selection (reuse / rollback / create), history truncation, per-role revisions."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controller.runtime.revision import hash_revision_data, sort_revisions
from controller.stormservice.labels import RoleRevision
from controller.stormservice.revisions import (
    choose_current_revision,
    choose_update_revision,
    history_to_delete,
    revision_data,
    revision_template,
    role_revisions,
    template_of,
    with_unversioned_fields,
)


def role(name: str, image: str, replicas: int | None = 1, **extra: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "name": name,
        "template": {"spec": {"containers": [{"name": "c", "image": image}]}},
        **extra,
    }
    if replicas is not None:
        r["replicas"] = replicas
    return r


def template(*roles: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"labels": labels or {"app": "x"}}, "spec": {"roles": list(roles)}}


def cr(name: str, number: int, tmpl: dict[str, Any], created: str = "2024-01-01T00:00:00Z") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "revision": number,
        "data": revision_data(tmpl),
    }


# --- data ------------------------------------------------------------------------------------------


def test_revision_data_layout_and_replicas_excluded() -> None:
    t = template(role("prefill", "a", 3), role("decode", "b", 2))
    original = copy.deepcopy(t)
    data = revision_data(t)
    assert t == original  # not mutated
    assert data == {
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "x"}},
                "spec": {"roles": [role("prefill", "a", None), role("decode", "b", None)]},
                "$patch": "replace",
            }
        }
    }


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        pytest.param(template(role("p", "a", 1)), template(role("p", "a", 7)), True, id="replicas-only-same"),
        pytest.param(
            template(role("p", "a", 1)), template(role("p", "a", None)), True, id="replicas-absent-same"
        ),
        pytest.param(template(role("p", "a")), template(role("p", "b")), False, id="image-differs"),
        pytest.param(
            template(role("p", "a")), template(role("p", "a"), labels={"app": "y"}), False, id="labels"
        ),
        pytest.param(
            template(role("p", "a")),
            template(role("p", "a", podGroupSize=2)),
            False,
            id="pod-group-size-differs",
        ),
        pytest.param(
            template(role("p", "a"), role("d", "b")),
            template(role("d", "b"), role("p", "a")),
            False,
            id="order",
        ),
    ],
)
def test_revision_data_equality(a: dict[str, Any], b: dict[str, Any], same: bool) -> None:
    assert (revision_data(a) == revision_data(b)) is same


def test_template_of_round_trip_and_with_unversioned_fields() -> None:
    t = template(role("prefill", "a", 3), role("decode", "b", 2), role("router", "c", 5))
    restored = template_of(cr("x-1", 1, t))
    assert restored == revision_template(t)
    desired = template(role("prefill", "zzz", 4), role("decode", "b", 1))
    filled = with_unversioned_fields(restored, desired, fallback={"router": 2})
    assert [r["replicas"] for r in filled["spec"]["roles"]] == [4, 1, 2]
    assert filled["spec"]["roles"][0]["template"] == t["spec"]["roles"][0]["template"]  # template kept
    assert [r["replicas"] for r in with_unversioned_fields(restored, template())["spec"]["roles"]] == [
        1,
        1,
        1,
    ]


# --- selection -------------------------------------------------------------------------------------

T1 = template(role("p", "v1"))
T2 = template(role("p", "v2"))
T3 = template(role("p", "v3"))


@pytest.mark.parametrize(
    ("history", "want", "action", "name", "number"),
    [
        pytest.param([], T1, "create", None, 1, id="first"),
        pytest.param([cr("a", 1, T1)], T1, "reuse", "a", 1, id="unchanged"),
        pytest.param(
            [cr("a", 1, T1)], template(role("p", "v1", 9)), "reuse", "a", 1, id="replicas-only-change"
        ),
        pytest.param([cr("a", 1, T1)], T2, "create", None, 2, id="new-template"),
        pytest.param([cr("a", 1, T1), cr("b", 2, T2)], T1, "rollback", "a", 3, id="rollback-renumbers"),
        pytest.param([cr("b", 2, T2), cr("a", 1, T1)], T2, "reuse", "b", 2, id="input-order-irrelevant"),
        pytest.param(
            [cr("a", 1, T1), cr("b", 2, T2), cr("c", 3, T3)], T2, "rollback", "b", 4, id="rollback-to-middle"
        ),
        pytest.param([cr("a", 5, T1), cr("b", 7, T2)], T3, "create", None, 8, id="numbers-need-not-be-dense"),
        pytest.param(
            # two revisions with equal data (a collision-free duplicate left by an old release):
            # the newest one is the one to use
            [cr("a", 1, T1), cr("a2", 3, T1), cr("b", 2, T2)],
            T1,
            "reuse",
            "a2",
            3,
            id="duplicate-data-newest-wins",
        ),
    ],
)
def test_choose_update_revision(
    history: list[dict[str, Any]], want: dict[str, Any], action: str, name: str | None, number: int
) -> None:
    choice = choose_update_revision(sort_revisions(history), revision_data(want))
    assert choice.action == action
    assert choice.number == number
    assert (choice.revision["metadata"]["name"] if choice.revision else None) == name


def test_choose_current_revision() -> None:
    a, b = cr("a", 1, T1), cr("b", 2, T2)
    assert choose_current_revision([a, b], "a", b) is a
    assert choose_current_revision([a, b], None, b) is b
    assert choose_current_revision([a, b], "gone", b) is b


@pytest.mark.parametrize(
    ("numbers", "live", "limit", "deleted"),
    [
        ([1, 2, 3], {"r3"}, 10, []),
        ([1, 2, 3, 4], {"r4"}, 2, ["r1"]),
        ([1, 2, 3, 4], {"r4"}, 0, ["r1", "r2", "r3"]),
        ([1, 2, 3, 4], {"r1", "r4"}, 1, ["r2"]),  # a RoleSet still uses r1: kept, not counted
        ([1, 2, 3, 4, 5], {"r2", "r5"}, 1, ["r1", "r3"]),
        ([1], {"r1"}, 0, []),
        ([1, 2], set(), -1, ["r1", "r2"]),  # negative limit acts as 0
    ],
)
def test_history_to_delete(numbers: list[int], live: set[str], limit: int, deleted: list[str]) -> None:
    revisions = [cr(f"r{n}", n, T1) for n in numbers]
    assert [r["metadata"]["name"] for r in history_to_delete(revisions, live, limit)] == deleted


# --- per-role revisions --------------------------------------------------------------------------------


def test_role_revisions_walk_back_while_unchanged() -> None:
    r1 = cr("ss-1", 1, template(role("prefill", "p1"), role("decode", "d1")))
    r2 = cr("ss-2", 2, template(role("prefill", "p2"), role("decode", "d1")))
    r3 = cr("ss-3", 3, template(role("prefill", "p2"), role("decode", "d2"), role("router", "r1")))
    assert role_revisions([r1, r2], r2) == {
        "prefill": RoleRevision(2, "ss-2"),
        "decode": RoleRevision(1, "ss-1"),
    }
    assert role_revisions([r1, r2, r3], r3) == {
        "prefill": RoleRevision(2, "ss-2"),
        "decode": RoleRevision(3, "ss-3"),
        "router": RoleRevision(3, "ss-3"),
    }
    assert role_revisions([], r1) == {"prefill": RoleRevision(1, "ss-1"), "decode": RoleRevision(1, "ss-1")}


def test_role_revisions_after_rollback() -> None:
    # ss-1 (p1, d1) -> ss-2 (p2, d1) -> rollback to ss-1, renumbered 3
    r1 = cr("ss-1", 3, template(role("prefill", "p1"), role("decode", "d1")))
    r2 = cr("ss-2", 2, template(role("prefill", "p2"), role("decode", "d1")))
    assert role_revisions([r1, r2], r1) == {
        "prefill": RoleRevision(3, "ss-1"),
        "decode": RoleRevision(2, "ss-2"),
    }


def test_role_revisions_ignore_role_replicas() -> None:
    r1 = cr("ss-1", 1, template(role("prefill", "p1", 1)))
    r2 = cr("ss-2", 2, template(role("prefill", "p1", 5), labels={"app": "other"}))
    assert role_revisions([r1, r2], r2) == {"prefill": RoleRevision(1, "ss-1")}


def test_role_revisions_of_an_older_target_ignore_newer_history() -> None:
    # paused with ss-1 current: RoleSets created for ss-1 must not see ss-2
    r1 = cr("ss-1", 1, template(role("prefill", "p1"), role("decode", "d1")))
    r2 = cr("ss-2", 2, template(role("prefill", "p2"), role("decode", "d1")))
    assert role_revisions([r1, r2], r1) == {
        "prefill": RoleRevision(1, "ss-1"),
        "decode": RoleRevision(1, "ss-1"),
    }


# --- golden hash ---------------------------------------------------------------------------------

GOLDEN_TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"app": "llm"}, "annotations": {"team": "infra"}},
    "spec": {
        "updateStrategy": "Sequential",
        "roles": [
            {
                "name": "prefill",
                "replicas": 2,
                "podGroupSize": 1,
                "stateful": False,
                "template": {
                    "spec": {"containers": [{"name": "engine", "image": "vllm/vllm-openai:v0.9.0"}]}
                },
            },
            {
                "name": "decode",
                "replicas": 1,
                "podGroupSize": 2,
                "stateful": True,
                "template": {
                    "spec": {"containers": [{"name": "engine", "image": "vllm/vllm-openai:v0.9.0"}]}
                },
            },
        ],
    },
}


def test_revision_hash_is_pinned() -> None:
    """A compatibility promise: the same template must name the same revision in every release,
    or an upgraded controller would see a new revision and replace every RoleSet. If this fails,
    the revision data or the hash changed: that needs a migration, not a new golden value."""
    data = revision_data(GOLDEN_TEMPLATE)
    assert hash_revision_data(data, 0) == "965d6f994"
    assert hash_revision_data(data, 1) == "97db4c5bf"
    scaled = copy.deepcopy(GOLDEN_TEMPLATE)
    scaled["spec"]["roles"][0]["replicas"] = 8  # role replicas are not part of a revision
    assert hash_revision_data(revision_data(scaled), 0) == "965d6f994"


def test_depends_on_is_not_versioned_and_comes_back_from_the_storm_service() -> None:
    plain = template(role("prefill", "a"), role("router", "a"))
    ordered = template(role("prefill", "a"), role("router", "a", dependsOn=["prefill"]))
    assert revision_data(plain) == revision_data(ordered)
    assert hash_revision_data(revision_data(plain), None) == hash_revision_data(revision_data(ordered), None)
    # A RoleSet of an older revision, created now, orders its roles as the StormService does
    # today, without names the revision has no role for.
    older = template_of(cr("r1", 1, template(role("router", "a"))))
    desired = template(role("decode", "b"), role("router", "b", dependsOn=["decode", "prefill"]))
    assert with_unversioned_fields(older, desired)["spec"]["roles"][0].get("dependsOn") is None
    older = template_of(cr("r1", 1, plain))
    got = with_unversioned_fields(older, desired)["spec"]["roles"]
    assert got[1]["dependsOn"] == ["prefill"] and "dependsOn" not in got[0]


def strategy_role(name: str, image: str, strategy: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    r = role(name, image, **extra)
    if strategy is not None:
        r["updateStrategy"] = strategy
    return r


# (case, the revision's role, the StormService's role, the role made from the revision)
UNVERSIONED: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    (
        "service and scaling from the StormService",
        role("p", "v1"),
        role("p", "v2", 4, scaling="External", service={"type": "Headless"}),
        role("p", "v1", 4, scaling="External", service={"type": "Headless"}),
    ),
    (
        "partition into a strategy the revision has",
        strategy_role("p", "v1", {"type": "InPlaceUpdate"}),
        strategy_role("p", "v2", {"type": "InPlaceUpdate", "partition": 2}),
        strategy_role("p", "v1", {"type": "InPlaceUpdate", "partition": 2}),
    ),
    (
        "partition where the revision has no strategy",
        role("p", "v1"),
        strategy_role("p", "v2", {"partition": 1}),
        strategy_role("p", "v1", {"partition": 1}),
    ),
    (
        "no partition in the StormService: none",
        strategy_role("p", "v1", {"type": "RollingUpdate", "partition": 3}),
        strategy_role("p", "v2", {"type": "RollingUpdate"}),
        strategy_role("p", "v1", {"type": "RollingUpdate"}),
    ),
    (
        "policies the StormService no longer has go",
        role("p", "v1", recoveryGracePeriodSeconds=30),
        role("p", "v2", restartBudget={"maxRestarts": 1, "windowSeconds": 60}),
        role("p", "v1", restartBudget={"maxRestarts": 1, "windowSeconds": 60}),
    ),
    (
        "dependsOn keeps only roles the revision has",
        role("p", "v1"),
        role("p", "v2", dependsOn=["gone", "q"]),
        role("p", "v1", dependsOn=["q"]),
    ),
    (
        "dependsOn on roles the revision lacks only: none",
        role("p", "v1"),
        role("p", "v2", dependsOn=["gone"]),
        role("p", "v1"),
    ),
]


@pytest.mark.parametrize(
    ("revision_role", "desired_role", "want"), [u[1:] for u in UNVERSIONED], ids=[u[0] for u in UNVERSIONED]
)
def test_a_template_from_a_revision_takes_every_unversioned_field_from_the_storm_service(
    revision_role: dict[str, Any], desired_role: dict[str, Any], want: dict[str, Any]
) -> None:
    q = role("q", "v1")
    got = with_unversioned_fields(template(revision_role, q), template(desired_role, q))
    assert got == template(want, q)
    # A role the StormService no longer has keeps what it has, replicas from the fallback.
    kept = with_unversioned_fields(template(revision_role, q), template(q), fallback={"p": 7})
    assert kept["spec"]["roles"][0] == {**revision_role, "replicas": 7}
