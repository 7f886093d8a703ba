from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from controller.runtime.client import Obj
from controller.runtime.errors import Conflict, ServerError
from controller.runtime.fake import FakeClient
from controller.runtime.leaderelection import LeaderElector, micro_time
from controller.runtime.metrics import sample_value
from controller.runtime.ratelimit import FakeClock
from controller.runtime.resources import LEASES, Resource

# Upper bounds only: a loaded machine (the CI box shares its cores with a Go build) can be slow.
PATIENCE = 30

NS, NAME = "kube-system", "stormservice-controller"
WALL = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def elector(client: FakeClient, identity: str, clock: Callable[[], float], **kw: float) -> LeaderElector:
    return LeaderElector(client, NS, NAME, identity, clock=clock, wall_clock=lambda: WALL, **kw)


def lease(client: FakeClient) -> Obj:
    obj = client.get_object(LEASES, NS, NAME)
    assert obj is not None
    return obj


def seed_lease(client: FakeClient, holder: str | None, *, duration: int = 15, transitions: int = 3) -> None:
    client.seed(
        LEASES,
        {
            "metadata": {"name": NAME, "namespace": NS},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": duration,
                "acquireTime": "2020-01-01T00:00:00.000000Z",
                "renewTime": "2020-01-01T00:00:00.000000Z",
                "leaseTransitions": transitions,
            },
        },
    )


async def renew_as(client: FakeClient, holder: str) -> None:
    """Another candidate renews: the record changes."""
    obj = lease(client)
    obj["spec"]["renewTime"] = micro_time(datetime.now(UTC))
    obj["spec"]["holderIdentity"] = holder
    await client.replace(LEASES, NS, NAME, obj)


def test_micro_time() -> None:
    assert micro_time(WALL) == "2026-01-02T03:04:05.678901Z"


async def test_creates_the_lease_when_there_is_none() -> None:
    client, clock = FakeClient(), FakeClock()
    le = elector(client, "me", clock)
    assert await le.try_acquire_or_renew()
    assert lease(client)["spec"] == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-01-02T03:04:05.678901Z",
        "renewTime": "2026-01-02T03:04:05.678901Z",
        "leaseTransitions": 0,
    }
    assert le.leader == "me"


async def test_waits_out_a_held_lease_on_its_own_clock() -> None:
    client, clock = FakeClient(), FakeClock()
    seed_lease(client, "other")
    le = elector(client, "me", clock)
    assert not await le.try_acquire_or_renew()
    assert le.leader == "other"
    clock.advance(14.9)
    assert not await le.try_acquire_or_renew()
    clock.advance(0.2)
    assert await le.try_acquire_or_renew()
    spec = lease(client)["spec"]
    assert spec["holderIdentity"] == "me"
    assert spec["leaseTransitions"] == 4
    assert spec["acquireTime"] == spec["renewTime"] == micro_time(WALL)


async def test_a_renewing_holder_keeps_the_lease() -> None:
    client, clock = FakeClient(), FakeClock()
    seed_lease(client, "other")
    le = elector(client, "me", clock)
    assert not await le.try_acquire_or_renew()
    for _ in range(5):
        clock.advance(10)
        await renew_as(client, "other")
        assert not await le.try_acquire_or_renew()  # the change restarts our wait
    clock.advance(15.1)
    assert await le.try_acquire_or_renew()


async def test_the_record_duration_is_respected() -> None:
    client, clock = FakeClient(), FakeClock()
    seed_lease(client, "other", duration=60)
    le = elector(client, "me", clock)
    assert not await le.try_acquire_or_renew()
    clock.advance(30)
    assert not await le.try_acquire_or_renew()
    clock.advance(31)
    assert await le.try_acquire_or_renew()


@pytest.mark.parametrize("holder", ["", None])
async def test_an_empty_holder_is_taken_at_once(holder: str | None) -> None:
    client, clock = FakeClient(), FakeClock()
    seed_lease(client, holder)
    le = elector(client, "me", clock)
    assert await le.try_acquire_or_renew()
    assert lease(client)["spec"]["leaseTransitions"] == 4


async def test_renewing_keeps_acquire_time_and_transitions() -> None:
    client, clock = FakeClient(), FakeClock()
    seed_lease(client, "me", transitions=7)
    le = elector(client, "me", clock)
    assert await le.try_acquire_or_renew()
    spec = lease(client)["spec"]
    assert spec["acquireTime"] == "2020-01-01T00:00:00.000000Z"
    assert spec["renewTime"] == micro_time(WALL)
    assert spec["leaseTransitions"] == 7


async def test_conflicts_and_errors_are_a_failed_attempt() -> None:
    client, clock = FakeClient(), FakeClock()
    seed_lease(client, "")
    le = elector(client, "me", clock)
    client.inject_error("update", LEASES, Conflict(409, "Conflict"))
    assert not await le.try_acquire_or_renew()
    client.inject_error("get", LEASES, ServerError(500))
    assert not await le.try_acquire_or_renew()
    assert await le.try_acquire_or_renew()


class RacingClient(FakeClient):
    """Runs `between` once, right after the first lease read returns."""

    def __init__(self) -> None:
        super().__init__()
        self.between: Callable[[], Awaitable[None]] | None = None

    async def get(self, resource: Resource, namespace: str | None, name: str) -> Obj:
        obj = await super().get(resource, namespace, name)
        between, self.between = self.between, None
        if between is not None:
            await between()
        return obj


async def test_a_stale_resource_version_conflicts() -> None:
    client, clock = RacingClient(), FakeClock()
    seed_lease(client, "")
    a, b = elector(client, "a", clock), elector(client, "b", clock)

    async def b_acquires() -> None:
        assert await b.try_acquire_or_renew()

    client.between = b_acquires  # b writes between a's read and a's update
    assert not await a.try_acquire_or_renew()
    assert lease(client)["spec"]["holderIdentity"] == "b"
    assert [x.verb for x in client.actions].count("update") == 2


def test_durations_are_validated() -> None:
    client, clock = FakeClient(), FakeClock()
    with pytest.raises(ValueError):
        elector(client, "me", clock, lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError):
        elector(client, "me", clock, renew_deadline=2, retry_period=2)
    with pytest.raises(ValueError):
        elector(client, "", clock)


# --- run(): real time, short durations -----------------------------------------------------------


def fast(client: FakeClient, identity: str, renew_deadline: float = 3.0) -> LeaderElector:
    """Quick retries; a renew deadline generous enough for a loaded test machine, except where
    a test waits for it to pass."""
    return LeaderElector(
        client, NS, NAME, identity, lease_duration=5.0, renew_deadline=renew_deadline, retry_period=0.02
    )


async def wait_until(cond: Callable[[], bool]) -> None:
    async with asyncio.timeout(PATIENCE):
        while True:
            if cond():
                return
            await asyncio.sleep(0.005)


async def test_run_leads_then_releases_on_return() -> None:
    client = FakeClient()
    le = fast(client, "me")
    events: list[str] = []

    async def lead() -> None:
        events.append("started")
        assert le.is_leader
        await wait_until(lambda: [a.verb for a in client.actions].count("update") >= 2)  # renewals

    await asyncio.wait_for(le.run(lead, lambda: events.append("stopped")), PATIENCE)
    assert events == ["started", "stopped"]
    assert not le.is_leader and not le.lost
    spec = lease(client)["spec"]
    assert spec["holderIdentity"] == "" and spec["leaseDurationSeconds"] == 1
    assert client.actions[-1].verb == "update"  # the release


async def test_run_loses_leadership_when_renewing_fails() -> None:
    client = FakeClient()
    le = fast(client, "me", renew_deadline=0.3)
    events: list[str] = []
    cancelled = asyncio.Event()

    async def lead() -> None:
        events.append("started")
        client.inject_error("*", LEASES, ServerError(503), times=1000)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await asyncio.wait_for(le.run(lead, lambda: events.append("stopped")), PATIENCE)
    assert events == ["started", "stopped"]
    assert cancelled.is_set()
    assert le.lost and not le.is_leader
    assert lease(client)["spec"]["holderIdentity"] == "me"  # not released: we could not write


async def test_run_loses_leadership_when_another_holder_appears() -> None:
    client = FakeClient()
    le = fast(client, "me")

    async def lead() -> None:
        await renew_as(client, "usurper")
        await asyncio.sleep(30)

    await asyncio.wait_for(le.run(lead, lambda: None), PATIENCE)
    assert le.lost
    assert lease(client)["spec"]["holderIdentity"] == "usurper"


async def test_cancelling_run_while_waiting_calls_nothing() -> None:
    client = FakeClient()
    seed_lease(client, "other", duration=60)
    le = fast(client, "me")
    events: list[str] = []

    async def lead() -> None:
        events.append("started")

    task = asyncio.create_task(le.run(lead, lambda: events.append("stopped")))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events == []
    assert lease(client)["spec"]["holderIdentity"] == "other"


async def test_cancelling_run_while_leading_releases() -> None:
    client = FakeClient()
    le = fast(client, "me")
    started = asyncio.Event()
    events: list[str] = []

    async def lead() -> None:
        started.set()
        await asyncio.sleep(30)

    task = asyncio.create_task(le.run(lead, lambda: events.append("stopped")))
    await asyncio.wait_for(started.wait(), PATIENCE)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events == ["stopped"]
    assert lease(client)["spec"]["holderIdentity"] == ""


async def test_a_failing_leader_callback_releases_and_raises() -> None:
    client = FakeClient()
    le = fast(client, "me")

    async def lead() -> None:
        raise RuntimeError("informers failed")

    with pytest.raises(RuntimeError, match="informers failed"):
        await asyncio.wait_for(le.run(lead, lambda: None), PATIENCE)
    assert lease(client)["spec"]["holderIdentity"] == ""


async def test_standby_takes_over_after_release() -> None:
    client = FakeClient()
    first = fast(client, "first")
    second = fast(client, "second")
    order: list[str] = []
    release_first = asyncio.Event()

    async def lead_first() -> None:
        order.append("first")
        await release_first.wait()

    async def lead_second() -> None:
        order.append("second")
        assert not first.is_leader

    t1 = asyncio.create_task(first.run(lead_first, lambda: None))
    await wait_until(lambda: first.is_leader)
    t2 = asyncio.create_task(second.run(lead_second, lambda: None))
    await asyncio.sleep(0.1)
    assert order == ["first"] and not second.is_leader
    release_first.set()
    await asyncio.wait_for(asyncio.gather(t1, t2), PATIENCE)
    assert order == ["first", "second"]
    assert lease(client)["spec"]["leaseTransitions"] == 1


async def test_healthy() -> None:
    client, clock = FakeClient(), FakeClock()
    le = elector(client, "me", clock)
    assert le.healthy()
    assert await le.try_acquire_or_renew()
    le._leading = True
    clock.advance(15 + 20)
    assert le.healthy()
    clock.advance(1)
    assert not le.healthy()


def master_status(name: str) -> float | None:
    return sample_value("leader_election_master_status", {"name": name})


async def test_master_status_is_1_only_while_leading_and_0_on_the_standby() -> None:
    client = FakeClient()
    seed_lease(client, "other", duration=60)
    LeaderElector(client, NS, "status-standby", "me")
    assert master_status("status-standby") == 0.0  # a standby reports itself from the start

    le = LeaderElector(
        FakeClient(), NS, "status-leader", "me", lease_duration=5.0, renew_deadline=3.0, retry_period=0.02
    )
    seen: list[float | None] = []

    async def lead() -> None:
        seen.append(master_status("status-leader"))

    await asyncio.wait_for(le.run(lead, lambda: seen.append(master_status("status-leader"))), PATIENCE)
    assert seen == [1.0, 0.0]
    assert master_status("status-leader") == 0.0


async def test_master_status_drops_to_0_when_leadership_is_lost() -> None:
    client = FakeClient()
    le = LeaderElector(
        client, NS, "status-lost", "me", lease_duration=5.0, renew_deadline=3.0, retry_period=0.02
    )

    async def lead() -> None:
        assert master_status("status-lost") == 1.0
        await renew_as_named(client, "status-lost", "usurper")
        await asyncio.sleep(30)

    await asyncio.wait_for(le.run(lead, lambda: None), PATIENCE)
    assert le.lost
    assert master_status("status-lost") == 0.0


async def renew_as_named(client: FakeClient, name: str, holder: str) -> None:
    obj = client.get_object(LEASES, NS, name)
    assert obj is not None
    obj["spec"]["renewTime"] = micro_time(datetime.now(UTC))
    obj["spec"]["holderIdentity"] = holder
    await client.replace(LEASES, NS, name, obj)
