"""Readiness of one RoleSet as the StormService controller sees it."""

from __future__ import annotations

from typing import Any

import pytest

from controller.stormservice.view import parse_timestamp, view_of


def roleset(
    roles: list[tuple[str, int]],
    status: list[dict[str, Any]] | None,
    *,
    generation: int = 1,
    observed: int | None = 1,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "rs",
        "uid": "u",
        "generation": generation,
        "creationTimestamp": "2024-05-01T10:00:00Z",
        "labels": {"storm-service-revision": "r1"},
        "annotations": {"stormservice.orchestration.aibrix.ai/roleset-index": "2"},
    }
    if deleting:
        meta["deletionTimestamp"] = "2024-05-01T11:00:00Z"
    st: dict[str, Any] = {"roles": status or []}
    if observed is not None:
        st["observedGeneration"] = observed
    return {"metadata": meta, "spec": {"roles": [{"name": n, "replicas": r} for n, r in roles]}, "status": st}


def counts(name: str, ready: int, updated: int, updated_ready: int) -> dict[str, Any]:
    return {
        "name": name,
        "readyReplicas": ready,
        "updatedReplicas": updated,
        "updatedReadyReplicas": updated_ready,
    }


@pytest.mark.parametrize(
    ("obj", "ready", "updated", "updated_ready"),
    [
        pytest.param(roleset([("p", 2)], [counts("p", 2, 2, 2)]), True, True, True, id="all"),
        pytest.param(roleset([("p", 2)], [counts("p", 1, 2, 1)]), False, True, False, id="one-not-ready"),
        pytest.param(roleset([("p", 2)], [counts("p", 2, 1, 1)]), True, False, False, id="old-pod-ready"),
        pytest.param(
            roleset([("p", 2), ("d", 1)], [counts("p", 2, 2, 2)]), False, False, False, id="role-unreported"
        ),
        pytest.param(roleset([("p", 0)], []), True, True, True, id="zero-replicas"),
        pytest.param(roleset([], []), True, True, True, id="no-roles"),
        pytest.param(
            roleset([("p", 2)], [counts("p", 2, 2, 2)], generation=2, observed=1),
            False,
            False,
            False,
            id="stale",
        ),
        pytest.param(
            roleset([("p", 2)], [counts("p", 2, 2, 2)], observed=None),
            False,
            False,
            False,
            id="never-observed",
        ),
        pytest.param(
            roleset([("p", 2)], [counts("p", 2, 2, 2)], deleting=True), False, True, False, id="terminating"
        ),
        pytest.param(roleset([("p", 1)], [counts("p", 3, 3, 3)]), True, True, True, id="more-than-enough"),
    ],
)
def test_view_of(obj: dict[str, Any], ready: bool, updated: bool, updated_ready: bool) -> None:
    v = view_of(obj)
    assert (v.ready, v.updated, v.updated_ready) == (ready, updated, updated_ready)
    assert (v.name, v.revision, v.index, v.uid) == ("rs", "r1", 2, "u")


def progressing(status: str, reason: str, message: str = "why") -> dict[str, Any]:
    return {"type": "Progressing", "status": status, "reason": reason, "message": message}


@pytest.mark.parametrize(
    ("condition", "generation", "deleting", "stalled"),
    [
        (progressing("False", "RolloutBlocked"), 1, False, "RolloutBlocked: why"),
        (progressing("False", "InPlaceUpdateStuck", "p-0"), 1, False, "InPlaceUpdateStuck: p-0"),
        (progressing("True", "RollingUpdate"), 1, False, None),
        (progressing("False", "SomethingElse"), 1, False, None),
        (progressing("False", "RolloutBlocked"), 2, False, None),  # about an older spec
        (progressing("False", "RolloutBlocked"), 1, True, None),  # going away anyway
        (None, 1, False, None),
    ],
)
def test_stalled(
    condition: dict[str, Any] | None, generation: int, deleting: bool, stalled: str | None
) -> None:
    obj = roleset([("p", 2)], [counts("p", 2, 1, 1)], generation=generation, deleting=deleting)
    obj["status"]["conditions"] = [condition] if condition else []
    assert view_of(obj).stalled == stalled


def test_parse_timestamp() -> None:
    assert parse_timestamp("1970-01-01T00:01:00Z") == 60.0
    assert parse_timestamp(None) == 0.0
