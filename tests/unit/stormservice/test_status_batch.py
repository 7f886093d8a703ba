"""StormService status writes that only move per-role pod counts are batched
(runtime.statusbatch); RoleSet counts, revisions and conditions are written at once."""

from __future__ import annotations

from typing import Any

import pytest

from controller.runtime.resources import ROLESETS, STORMSERVICES
from controller.runtime.statusbatch import StatusBatcher
from controller.stormservice.status import counts_only
from tests.unit.stormservice.harness import NS, Env, storm

pytestmark = pytest.mark.timeout(30)


def cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": "t"}


def status(ready_pods: int = 1, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "observedGeneration": 1,
        "replicas": 1,
        "readyReplicas": 0,
        "updatedReplicas": 1,
        "currentRevision": "r1",
        "updateRevision": "r1",
        "conditions": [cond("Ready", "False", "RoleSetsNotReady", "0 of 1 RoleSets ready")],
        "roleStatuses": [{"name": "w", "replicas": 3, "readyReplicas": ready_pods}],
    }
    return base | fields


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (None, status(), False),
        ({}, status(), False),
        (status(1), status(2), True),  # pods of a role became ready
        (status(1), status(1), True),  # (equal: never written anyway)
        (status(2), status(3, readyReplicas=1), False),  # a RoleSet became ready
        (status(1), status(1, observedGeneration=2), False),
        (status(1), status(1, updateRevision="r2"), False),
        (status(1), status(2, conditions=[cond("Ready", "True", "AllRoleSetsReady")]), False),
        (
            status(1),
            status(2, conditions=[cond("Ready", "False", "RoleSetsNotReady", "another message")]),
            True,
        ),
        (
            status(1),
            status(
                1,
                conditions=[
                    cond("Ready", "False", "RoleSetsNotReady", "0 of 1 RoleSets ready"),
                    cond("ReplicaFailure", "True", "FailedCreate"),
                ],
            ),
            False,
        ),
    ],
)
def test_counts_only(old: dict[str, Any] | None, new: dict[str, Any], expected: bool) -> None:
    assert counts_only(old, new) is expected


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def status_writes(env: Env) -> int:
    return sum(1 for a in env.client.writes() if a.resource == "stormservices/status")


def report_ready_pods(env: Env, rs: dict[str, Any], ready: int) -> None:
    roles = [
        {
            "name": r["name"],
            "replicas": int(r.get("replicas", 1)),
            "readyReplicas": min(ready, int(r.get("replicas", 1))),
            "notReadyReplicas": int(r.get("replicas", 1)) - min(ready, int(r.get("replicas", 1))),
            "updatedReplicas": int(r.get("replicas", 1)),
            "updatedReadyReplicas": min(ready, int(r.get("replicas", 1))),
        }
        for r in rs["spec"]["roles"]
    ]
    status = {"observedGeneration": rs["metadata"]["generation"], "roles": roles}
    env.client.set_status(ROLESETS, NS, rs["metadata"]["name"], status)


async def test_role_counts_are_reported_once_per_period_and_ready_at_once() -> None:
    async with Env() as env:
        clock = Clock()
        env.ctrl.syncer.status_batch = StatusBatcher(1.0, clock=clock)
        env.seed(STORMSERVICES, storm(replicas=1))
        await env.sync()
        await env.sync()
        (rs,) = env.rolesets()
        report_ready_pods(env, rs, 0)  # its first status: the RoleSet counts as updated
        await env.sync()
        before = status_writes(env)
        report_ready_pods(env, rs, 1)
        clock.now += 0.2
        assert await env.sync() == pytest.approx(0.8)
        assert status_writes(env) == before, "per-role pod counts only: held back"
        clock.now += 0.8
        await env.sync()
        assert status_writes(env) == before + 1
        assert all(r["readyReplicas"] == 1 for r in env.status()["roleStatuses"])
        env.all_ready()  # the RoleSet becomes ready: written at once
        clock.now += 0.1
        await env.sync()
        assert status_writes(env) == before + 2
        ready = env.condition("Ready")
        assert ready is not None and ready["status"] == "True"
