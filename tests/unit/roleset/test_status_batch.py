"""RoleSet status writes that only move pod counts are batched (runtime.statusbatch); the rest
is written at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from controller.roleset.status import counts_only
from controller.roleset.sync import SyncConfig
from controller.runtime.statusbatch import StatusBatcher
from tests.unit.roleset.harness import Harness, role, roleset


def cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": "t"}


def status(gen: int = 1, ready: int = 1, *conds: dict[str, Any]) -> dict[str, Any]:
    return {
        "observedGeneration": gen,
        "roles": [{"name": "w", "replicas": 3, "readyReplicas": ready}],
        "conditions": list(conds)
        or [
            cond("Ready", "False", "RolesNotReady", f"not ready: w ({ready}/3)"),
            cond("Progressing", "True", "WaitingForReady"),
        ],
    }


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (None, status(), False),  # the first status
        ({}, status(), False),
        (status(ready=1), status(ready=2), True),  # a count and the message quoting it
        (status(gen=1), status(gen=2), False),  # a new generation observed
        (
            status(2, 2),
            status(
                1,
                3,
                cond("Ready", "True", "AllRolesReady"),
                cond("Progressing", "True", "RolloutComplete"),
            ),
            False,
        ),
        (  # Ready flips
            status(ready=2),
            status(
                3, 3, cond("Ready", "True", "AllRolesReady"), cond("Progressing", "True", "WaitingForReady")
            ),
            False,
        ),
        (  # a reason changes
            status(ready=2),
            status(1, 2, cond("Ready", "False", "RolesNotReady"), cond("Progressing", "True", "Scaling")),
            False,
        ),
        (  # a condition appears
            status(ready=2),
            status(
                1,
                2,
                cond("Ready", "False", "RolesNotReady", "not ready: w (2/3)"),
                cond("Progressing", "True", "WaitingForReady"),
                cond("ReplicaFailure", "True", "FailedCreate", "quota"),
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


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness(SyncConfig(status_batch_seconds=1.0))
    await harness.start()
    yield harness
    await harness.stop()


def status_writes(h: Harness) -> int:
    return sum(1 for a in h.client.writes() if a.resource == "rolesets/status")


async def test_pods_becoming_ready_are_reported_once_per_period(h: Harness) -> None:
    clock = Clock()
    h.ctrl.syncer.status_batch = StatusBatcher(1.0, clock=clock)
    h.create(roleset(roles=[role("worker", replicas=3)]))
    await h.sync()
    await h.sync()  # the pods are observed: a new condition reason, written at once
    before = status_writes(h)
    first, second, third = h.pods()
    h.set_ready(first)
    clock.now += 0.3
    wait = await h.sync()
    assert status_writes(h) == before, "one more ready pod only: held back"
    assert wait == pytest.approx(0.7)
    h.set_ready(second)
    clock.now += 0.4
    assert await h.sync() == pytest.approx(0.3)
    assert status_writes(h) == before
    clock.now += 0.3
    assert await h.sync() is None
    assert status_writes(h) == before + 1
    worker = h.get()["status"]["roles"][0]
    assert worker["readyReplicas"] == 2, "the latest counts, in one write"
    # The last pod flips Ready: written at once, though a write was just made.
    h.set_ready(third)
    clock.now += 0.1
    await h.sync()
    assert status_writes(h) == before + 2
    ready = h.condition("Ready")
    assert ready is not None and ready["status"] == "True"
