from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from controller.runtime import metrics
from controller.runtime.client import Obj
from controller.runtime.errors import NotFound, ServerError
from controller.runtime.events import EventRecorder
from controller.runtime.fake import FakeClient
from controller.runtime.ratelimit import FakeClock
from controller.runtime.resources import EVENTS, NODES, ROLESETS

ROLESET: Obj = {
    "apiVersion": "orchestration.aibrix.ai/v1alpha1",
    "kind": "RoleSet",
    "metadata": {"name": "rs-a", "namespace": "ns", "uid": "uid-rs-a", "resourceVersion": "42"},
}


class Wall:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Env:
    def __init__(self) -> None:
        self.client = FakeClient()
        self.clock = FakeClock()
        self.wall = Wall()
        self.recorder = EventRecorder(
            self.client, "stormservice-controller", clock=self.clock, wall_clock=self.wall, host="node-1"
        )

    def events(self) -> list[Obj]:
        return self.client.objects(EVENTS, "ns")

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.wall.advance(seconds)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    await e.recorder.start()
    yield e
    await e.recorder.stop()


async def test_writes_a_core_v1_event(env: Env) -> None:
    env.recorder.event(ROLESET, "Normal", "CreatedPod", "created pod rs-a-prefill-0")
    await env.recorder.flush()
    (event,) = env.events()
    assert event["metadata"]["name"].startswith("rs-a.")
    assert event["involvedObject"] == {
        "apiVersion": "orchestration.aibrix.ai/v1alpha1",
        "kind": "RoleSet",
        "namespace": "ns",
        "name": "rs-a",
        "uid": "uid-rs-a",
        "resourceVersion": "42",
    }
    assert (event["type"], event["reason"], event["message"], event["count"]) == (
        "Normal",
        "CreatedPod",
        "created pod rs-a-prefill-0",
        1,
    )
    assert event["source"] == {"component": "stormservice-controller", "host": "node-1"}
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-03-01T12:00:00Z"


async def test_repeats_within_the_window_patch_the_count(env: Env) -> None:
    env.recorder.event(ROLESET, "Warning", "FailedCreate", "quota exceeded")
    await env.recorder.flush()
    env.advance(30)
    env.recorder.event(ROLESET, "Warning", "FailedCreate", "quota exceeded")
    await env.recorder.flush()
    (event,) = env.events()
    assert event["count"] == 2
    assert event["firstTimestamp"] == "2026-03-01T12:00:00Z"
    assert event["lastTimestamp"] == "2026-03-01T12:00:30Z"
    assert [a.verb for a in env.client.writes()] == ["create", "patch"]


async def test_different_messages_or_objects_are_different_events(env: Env) -> None:
    env.recorder.event(ROLESET, "Warning", "FailedCreate", "quota exceeded")
    env.recorder.event(ROLESET, "Warning", "FailedCreate", "image pull")
    env.recorder.event(
        {**ROLESET, "metadata": {**ROLESET["metadata"], "uid": "uid-2"}},
        "Warning",
        "FailedCreate",
        "image pull",
    )
    await env.recorder.flush()
    assert len(env.events()) == 3


async def test_repeats_after_the_window_create_a_new_event(env: Env) -> None:
    env.recorder.event(ROLESET, "Normal", "Scaled", "scaled to 3")
    await env.recorder.flush()
    env.advance(601)
    env.recorder.event(ROLESET, "Normal", "Scaled", "scaled to 3")
    await env.recorder.flush()
    assert sorted(e["count"] for e in env.events()) == [1, 1]


async def test_an_expired_event_is_created_again(env: Env) -> None:
    env.recorder.event(ROLESET, "Normal", "Scaled", "scaled to 3")
    await env.recorder.flush()
    (first,) = env.events()
    await env.client.delete(EVENTS, "ns", first["metadata"]["name"])  # the server's event TTL
    env.recorder.event(ROLESET, "Normal", "Scaled", "scaled to 3")
    await env.recorder.flush()
    (second,) = env.events()
    assert second["metadata"]["name"] != first["metadata"]["name"]
    assert second["count"] == 1


async def test_a_hot_loop_is_merged_and_then_spam_filtered(env: Env) -> None:
    for _ in range(30):
        env.recorder.event(ROLESET, "Warning", "FailedSync", "boom")
    await env.recorder.flush()
    (event,) = env.events()
    assert event["count"] == 25  # the burst, merged into one write
    assert env.recorder.dropped == 5
    assert len(env.client.writes()) == 1
    other = {**ROLESET, "metadata": {**ROLESET["metadata"], "name": "rs-b", "uid": "uid-rs-b"}}
    env.recorder.event(other, "Warning", "FailedSync", "boom")  # other objects have their own bucket
    env.advance(300)  # one token back for rs-a
    env.recorder.event(ROLESET, "Warning", "FailedSync", "boom")
    env.recorder.event(ROLESET, "Warning", "FailedSync", "boom")
    await env.recorder.flush()
    counts = {e["involvedObject"]["name"]: e["count"] for e in env.events()}
    assert counts == {"rs-a": 26, "rs-b": 1}


async def test_write_errors_are_logged_not_raised(env: Env) -> None:
    env.client.inject_error("create", EVENTS, ServerError(500))
    env.recorder.event(ROLESET, "Normal", "A", "first")
    await env.recorder.flush()
    env.recorder.event(ROLESET, "Normal", "B", "second")
    await env.recorder.flush()
    assert [e["reason"] for e in env.events()] == ["B"]


async def test_patch_errors_other_than_not_found_are_dropped(env: Env) -> None:
    env.recorder.event(ROLESET, "Normal", "A", "x")
    await env.recorder.flush()
    env.client.inject_error("patch", EVENTS, ServerError(500))
    env.recorder.event(ROLESET, "Normal", "A", "x")
    await env.recorder.flush()
    env.recorder.event(ROLESET, "Normal", "A", "x")
    await env.recorder.flush()
    (event,) = env.events()
    assert event["count"] == 2  # the failed patch's occurrence is lost, not double counted


async def test_missing_kind_comes_from_the_resource_and_cluster_scoped_objects_go_to_default(
    env: Env,
) -> None:
    listed = {"metadata": ROLESET["metadata"]}  # list items carry no kind/apiVersion
    env.recorder.event(listed, "Normal", "A", "x", resource=ROLESETS)
    env.recorder.event({"metadata": {"name": "node-1", "uid": "uid-n"}}, "Warning", "B", "y", resource=NODES)
    await env.recorder.flush()
    (event,) = env.events()
    assert event["involvedObject"]["kind"] == "RoleSet"
    (node_event,) = env.client.objects(EVENTS, "default")
    assert node_event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Node",
        "name": "node-1",
        "uid": "uid-n",
    }


async def test_long_messages_are_truncated(env: Env) -> None:
    env.recorder.event(ROLESET, "Normal", "A", "x" * 5000)
    await env.recorder.flush()
    (event,) = env.events()
    assert len(event["message"]) == 1024 and event["message"].endswith("...")


async def test_stop_flushes_and_later_events_are_dropped() -> None:
    e = Env()
    e.recorder.event(ROLESET, "Normal", "Queued", "before start")
    await e.recorder.start()
    await e.recorder.stop()
    assert [ev["reason"] for ev in e.events()] == ["Queued"]
    e.recorder.event(ROLESET, "Normal", "Late", "after stop")
    assert e.recorder.dropped == 1
    await asyncio.sleep(0)
    assert len(e.events()) == 1


async def test_a_full_queue_drops_instead_of_blocking() -> None:
    client = FakeClient()
    recorder = EventRecorder(client, "c", max_queue=2)
    for i in range(5):
        recorder.event(ROLESET, "Normal", "R", f"m{i}")
    assert recorder.dropped == 3


async def test_event_never_raises() -> None:
    recorder = EventRecorder(FakeClient(), "c")
    recorder.event({"metadata": None}, "Normal", "R", "m")
    recorder.event("not an object", "Normal", "R", "m")  # type: ignore[arg-type]


async def test_events_metric(env: Env) -> None:
    before = (
        metrics.sample_value("stormservice_events_total", {"type": "Warning", "reason": "MetricCheck"}) or 0
    )
    for _ in range(3):
        env.recorder.event(ROLESET, "Warning", "MetricCheck", "m")
    after = metrics.sample_value("stormservice_events_total", {"type": "Warning", "reason": "MetricCheck"})
    assert after == before + 3


async def test_not_found_on_create_is_only_logged(env: Env) -> None:
    env.client.inject_error("create", EVENTS, NotFound(404))  # e.g. the namespace is being deleted
    env.recorder.event(ROLESET, "Normal", "A", "x")
    await env.recorder.flush()
    assert env.events() == []
