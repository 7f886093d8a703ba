"""dependsOn in the RoleSet reconcile (FakeClient, real informers): a role's first pods wait for
its dependencies; the WaitingForDependencies condition and the DependenciesReady event say so."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controller.roleset.dependencies import (
    COND_WAITING_FOR_DEPENDENCIES,
    EVENT_DEPENDENCIES_READY,
    REASON_DEPENDENCY_CYCLE,
)
from tests.unit.roleset.harness import Harness, role, roleset


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    await harness.start()
    yield harness
    await harness.stop()


def roles_of_pods(h: Harness) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in ("prefill", "decode", "router"):
        out[name] = len(h.pods(name))
    return out


async def test_router_waits_for_prefill_and_decode_then_starts(h: Harness) -> None:
    h.create(
        roleset(
            roles=[
                role("prefill", replicas=2),
                role("decode", replicas=1, podGroupSize=2),
                role("router", replicas=1, dependsOn=["prefill", "decode"]),
            ]
        )
    )
    await h.converge(ready=False)
    assert roles_of_pods(h) == {"prefill": 2, "decode": 2, "router": 0}
    cond = h.condition(COND_WAITING_FOR_DEPENDENCIES)
    assert cond is not None and cond["status"] == "True"
    assert cond["message"] == 'role "router" waits for "prefill" (0/2 ready), "decode" (0/1 ready)'

    for pod in h.pods("prefill") + h.pods("decode")[:1]:
        h.set_ready(pod)
    await h.converge(ready=False)
    assert roles_of_pods(h)["router"] == 0  # decode's one group is half ready: not an instance yet
    cond = h.condition(COND_WAITING_FOR_DEPENDENCIES)
    assert cond is not None and cond["message"] == 'role "router" waits for "decode" (0/1 ready)'

    h.mark_all_ready()
    await h.converge()
    assert roles_of_pods(h) == {"prefill": 2, "decode": 2, "router": 1}
    assert h.condition(COND_WAITING_FOR_DEPENDENCIES) is None
    assert EVENT_DEPENDENCIES_READY in h.recorder.reasons()

    # Started: losing its dependencies' readiness does not stop or hold it, nor its scale-up.
    for pod in h.pods("prefill"):
        h.set_ready(pod, ready=False)
    h.update_spec(lambda s: s["roles"][2].__setitem__("replicas", 2))
    await h.converge(ready=False)
    assert roles_of_pods(h)["router"] == 2
    assert h.condition(COND_WAITING_FOR_DEPENDENCIES) is None


async def test_without_depends_on_nothing_waits_and_no_condition_is_written(h: Harness) -> None:
    h.create(roleset(roles=[role("prefill"), role("router")]))
    await h.converge(ready=False)
    assert roles_of_pods(h)["router"] == 2
    assert h.condition(COND_WAITING_FOR_DEPENDENCIES) is None
    assert EVENT_DEPENDENCIES_READY not in h.recorder.reasons()


async def test_a_cycle_that_got_through_is_held_and_reported(h: Harness) -> None:
    # The CRD refuses cycles; the FakeClient does not, as a CRD without the rule would not.
    h.create(
        roleset(
            roles=[
                role("prefill", dependsOn=["decode"]),
                role("decode", dependsOn=["prefill"]),
                role("router"),
            ]
        )
    )
    await h.converge()
    assert roles_of_pods(h) == {"prefill": 0, "decode": 0, "router": 2}
    cond = h.condition(COND_WAITING_FOR_DEPENDENCIES)
    assert cond is not None and cond["reason"] == REASON_DEPENDENCY_CYCLE
    assert '"decode", "prefill"' in cond["message"]
