"""The StormService's WaitingForDependencies condition, from what its RoleSets report."""

from __future__ import annotations

import dataclasses
from typing import Any

from apis.v1alpha1 import constants as c
from controller.stormservice.status import compute_status
from controller.stormservice.view import RoleSetView
from tests.unit.stormservice.helpers import rs

T0 = "2024-01-01T00:00:00Z"


def waiting(view: RoleSetView, reason: str, message: str, status: str = "True") -> RoleSetView:
    cond = {
        "type": c.CONDITION_WAITING_FOR_DEPENDENCIES,
        "status": status,
        "reason": reason,
        "message": message,
    }
    return dataclasses.replace(view, obj={"status": {"conditions": [cond]}})


def storm_status(*views: RoleSetView, old: dict[str, Any] | None = None) -> dict[str, Any]:
    storm = {"metadata": {"name": "llm", "namespace": "ns", "generation": 1}, "spec": {"replicas": 2}}
    storm["status"] = old or {}
    return compute_status(
        storm, list(views), current_revision="new", update_revision="new", collision_count=0, now=T0
    )


def condition(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((x for x in status["conditions"] if x["type"] == c.CONDITION_WAITING_FOR_DEPENDENCIES), None)


def test_absent_when_no_roleset_waits() -> None:
    assert condition(storm_status(rs("a"), rs("b"))) is None


def test_names_each_waiting_roleset_and_prefers_the_cycle_reason() -> None:
    st = storm_status(
        waiting(rs("b"), c.REASON_DEPENDENCIES_NOT_READY, 'role "router" waits for "prefill" (1/2 ready)'),
        waiting(rs("a"), c.REASON_DEPENDENCY_CYCLE, 'roles "x", "y" are on a dependency cycle'),
        waiting(rs("gone", terminating=True), c.REASON_DEPENDENCIES_NOT_READY, "old"),
    )
    assert condition(st) == {
        "type": c.CONDITION_WAITING_FOR_DEPENDENCIES,
        "status": "True",
        "reason": c.REASON_DEPENDENCY_CYCLE,
        "message": 'RoleSet a: roles "x", "y" are on a dependency cycle; '
        'RoleSet b: role "router" waits for "prefill" (1/2 ready)',
        "lastTransitionTime": T0,
    }


def test_cleared_once_the_rolesets_stop_waiting() -> None:
    before = storm_status(waiting(rs("a"), c.REASON_DEPENDENCIES_NOT_READY, "router waits"), rs("b"))
    assert condition(before) is not None
    after = storm_status(rs("a"), rs("b"), old=before)
    assert condition(after) is None
