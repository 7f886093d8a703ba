"""The RoleSet gauges (stalled rollouts, broken groups): set from what a pass observes, exact,
and removed with the RoleSet."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controller.roleset.instances import build_view
from controller.runtime.metrics import REGISTRY, sample_value
from controller.runtime.resources import PODS, ROLESETS
from tests.unit.roleset.factories import info, params
from tests.unit.roleset.harness import NS, Harness, role, roleset


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    await harness.start()
    yield harness
    await harness.stop()


def broken(rs: str, role_name: str) -> float | None:
    return sample_value(
        "stormservice_roleset_broken_groups",
        {"stormservice": f"{NS}/ss", "roleset": f"{NS}/{rs}", "role": role_name},
    )


def stalled(rs: str) -> float | None:
    return sample_value(
        "stormservice_roleset_rollout_stalled", {"stormservice": f"{NS}/ss", "roleset": f"{NS}/{rs}"}
    )


def series_of(rs: str) -> list[str]:
    return [
        f"{s.name}{sorted(s.labels.items())}"
        for family in REGISTRY.collect()
        for s in family.samples
        if s.labels.get("roleset") == f"{NS}/{rs}"
    ]


async def test_a_failed_member_counts_as_a_broken_group_until_it_is_replaced(h: Harness) -> None:
    h.create(roleset("mbroken", roles=[role("worker", replicas=2, podGroupSize=2), role("single", 1)]))
    await h.converge("mbroken")
    assert broken("mbroken", "worker") == 0.0
    assert broken("mbroken", "single") is None, "a role without groups has no series"
    member = h.pods("worker")[0]
    h.client.set_status(PODS, NS, member["metadata"]["name"], {**member.get("status", {}), "phase": "Failed"})
    await h.sync("mbroken")
    assert broken("mbroken", "worker") == 1.0
    await h.converge("mbroken")
    assert broken("mbroken", "worker") == 0.0


async def test_a_blocked_rollout_is_stalled_until_unblocked_and_the_series_go_with_the_roleset(
    h: Harness,
) -> None:
    strategy = {"maxSurge": 1, "maxUnavailable": 0}
    h.create(roleset("mstall", roles=[role("worker", replicas=2, podGroupSize=2, updateStrategy=strategy)]))
    await h.converge("mstall")
    assert stalled("mstall") == 0.0
    h.update_spec(lambda s: s["roles"][0].__setitem__("podGroupSize", 3), name="mstall")
    await h.converge("mstall")
    assert stalled("mstall") == 1.0
    h.update_spec(lambda s: s["roles"][0]["updateStrategy"].__setitem__("maxUnavailable", 1), name="mstall")
    await h.converge("mstall")
    assert stalled("mstall") == 0.0
    assert series_of("mstall")
    await h.client.delete(ROLESETS, NS, "mstall")
    await h.sync("mstall")
    assert series_of("mstall") == []


@pytest.mark.parametrize(
    ("members", "failed", "expected"),
    [
        ([0, 1], [], 0),  # complete
        ([0], [], 1),  # a member missing
        ([0], [1], 1),  # a member failed
        ([], [0, 1], 1),  # every member failed
        ([0, 1, 1], [], 1),  # a duplicate member
    ],
)
def test_build_view_counts_broken_groups(members: list[int], failed: list[int], expected: int) -> None:
    pods = [
        info(f"g-0-{m}-{i}", group="g-0", member=m, index=0, size=2, created=f"2024-01-01T00:00:0{i}Z")
        for i, m in enumerate(members)
    ] + [info(f"g-0-f{m}", group="g-0", member=m, index=0, size=2, phase="Failed") for m in failed]
    assert build_view(params(replicas=1, group_size=2), pods).broken_groups == expected
