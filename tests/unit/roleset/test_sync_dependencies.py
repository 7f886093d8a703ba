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


def images(h: Harness, role_name: str) -> set[str]:
    return {p["spec"]["containers"][0]["image"] for p in h.pods(role_name)}


def router_first() -> list[dict[str, object]]:
    # Sequential rolls the router first, but the router starts only after prefill is ready.
    return [
        role("router", replicas=1, upgradeOrder=1, dependsOn=["prefill"]),
        role("prefill", replicas=2, upgradeOrder=2),
    ]


async def test_a_fix_for_a_dependency_that_never_got_ready_rolls_under_sequential(h: Harness) -> None:
    """prefill's image is broken, so the router waits; a fixed image must roll prefill, though
    Sequential orders the (waiting, podless) router before it."""
    h.create(roleset(roles=router_first(), updateStrategy="Sequential"))
    await h.converge(ready=False)
    assert roles_of_pods(h) == {"prefill": 2, "decode": 0, "router": 0}
    broken = {p["metadata"]["uid"] for p in h.pods("prefill")}

    h.update_spec(
        lambda s: s["roles"][1]["template"]["spec"]["containers"][0].__setitem__("image", "img:fixed")
    )
    for _ in range(5):
        await h.converge(ready=False)
        for pod in h.pods("prefill"):
            if pod["spec"]["containers"][0]["image"] == "img:fixed":
                h.set_ready(pod)
    assert not {p["metadata"]["uid"] for p in h.pods("prefill")} & broken
    assert images(h, "prefill") == {"img:fixed"}
    await h.converge()
    assert roles_of_pods(h) == {"prefill": 2, "decode": 0, "router": 1}


async def test_a_started_role_rolls_in_its_sequential_turn_whatever_its_dependencies(h: Harness) -> None:
    h.create(roleset(roles=router_first(), updateStrategy="Sequential"))
    await h.converge()
    assert roles_of_pods(h) == {"prefill": 2, "decode": 0, "router": 1}

    def bump(spec: dict[str, object]) -> None:
        for r in spec["roles"]:  # type: ignore[attr-defined]
            r["template"]["spec"]["containers"][0]["image"] = "img:2"

    h.update_spec(bump)
    await h.sync()
    await h.sync()
    assert "img:2" in images(h, "router") and "img:2" not in images(h, "prefill")  # router first
    await h.converge()
    assert images(h, "router") == images(h, "prefill") == {"img:2"}
    assert h.condition(COND_WAITING_FOR_DEPENDENCIES) is None
