"""stormservice_rolesets and stormservice_rollout_duration_seconds."""

from __future__ import annotations

from typing import Any

from controller.runtime.metrics import sample_value
from controller.runtime.resources import STORMSERVICES
from controller.stormservice.metrics import RoleSetGauge, RolloutTimer, StatusGauges
from tests.unit.stormservice.harness import NS, Env, storm
from tests.unit.stormservice.helpers import rs


def gauge(key: str, revision: str, ready: str) -> float | None:
    return sample_value("stormservice_rolesets", {"stormservice": key, "revision": revision, "ready": ready})


def test_roleset_gauge_tracks_and_forgets_series() -> None:
    g = RoleSetGauge()
    g.observe("ns/a", [rs("1", "r1"), rs("2", "r1"), rs("3", "r2", ready=False)])
    assert (gauge("ns/a", "r1", "true"), gauge("ns/a", "r2", "false")) == (2.0, 1.0)
    g.observe("ns/a", [rs("3", "r2")])
    assert gauge("ns/a", "r1", "true") is None  # gone, not left at a stale value
    assert gauge("ns/a", "r2", "false") is None
    assert gauge("ns/a", "r2", "true") == 1.0
    g.forget("ns/a")
    assert gauge("ns/a", "r2", "true") is None


def status(
    current: str, update: str, ready: bool, progressing: dict[str, Any] | None = None
) -> dict[str, Any]:
    conds = [{"type": "Ready", "status": "True" if ready else "False"}]
    if progressing:
        conds.append({"type": "Progressing", **progressing})
    return {"currentRevision": current, "updateRevision": update, "conditions": conds}


def count() -> float:
    return sample_value("stormservice_rollout_duration_seconds_count") or 0.0


def test_rollout_timer_measures_from_start_to_ready() -> None:
    t = RolloutTimer()
    before = count()
    assert t.observe("ns/x", status("a", "a", True), status("a", "b", False), now=100.0) is None
    assert t.observe("ns/x", status("a", "b", False), status("a", "b", False), now=110.0) is None
    assert (
        t.observe("ns/x", status("a", "b", False), status("b", "b", False), now=120.0) is None
    )  # not ready yet
    assert t.observe("ns/x", status("b", "b", False), status("b", "b", True), now=130.0) == 30.0
    assert count() == before + 1
    assert t.observe("ns/x", status("b", "b", True), status("b", "b", True), now=140.0) is None  # once


def test_rollout_timer_recovers_the_start_after_a_restart() -> None:
    t = RolloutTimer()
    old = status(
        "a",
        "b",
        False,
        {"status": "True", "reason": "RolloutInProgress", "lastTransitionTime": "1970-01-01T00:01:40Z"},
    )
    assert t.observe("ns/y", old, old, now=500.0) is None
    assert t.observe("ns/y", old, status("b", "b", True), now=530.0) == 430.0
    t.observe("ns/z", status("a", "b", False), status("a", "b", False), now=1.0)
    t.forget("ns/z")
    assert t.observe("ns/z", status("b", "b", True), status("b", "b", True), now=2.0) is None


def rollouts(result: str) -> float:
    return sample_value("stormservice_rollouts_total", {"result": result}) or 0.0


def results() -> dict[str, float]:
    return {r: rollouts(r) for r in ("complete", "superseded", "deleted")}


def test_rollouts_end_complete_superseded_or_deleted() -> None:
    t = RolloutTimer()
    before = results()
    t.observe("ns/r", status("a", "a", True), status("a", "b", False), now=0.0)
    # A newer revision replaces the one being rolled out; its own rollout starts now.
    t.observe("ns/r", status("a", "b", False), status("a", "c", False), now=10.0)
    assert t.observe("ns/r", status("a", "c", False), status("c", "c", True), now=25.0) == 15.0
    # A rollback to the current revision ends the rollout under way.
    t.observe("ns/r", status("c", "c", True), status("c", "d", False), now=30.0)
    assert t.observe("ns/r", status("c", "d", False), status("c", "c", True), now=40.0) is None
    # Deleted mid-rollout; a StormService forgotten while not rolling counts nothing.
    t.observe("ns/r", status("c", "c", True), status("c", "e", False), now=50.0)
    t.forget("ns/r")
    t.forget("ns/r")
    after = results()
    assert {r: after[r] - before[r] for r in after} == {"complete": 1, "superseded": 2, "deleted": 1}


def role_replicas(key: str, role: str, state: str) -> float | None:
    return sample_value("stormservice_role_replicas", {"stormservice": key, "role": role, "state": state})


def spec(replicas: int, *roles: tuple[str, int, int]) -> dict[str, Any]:
    return {
        "replicas": replicas,
        "template": {"spec": {"roles": [{"name": n, "replicas": r, "podGroupSize": g} for n, r, g in roles]}},
    }


def test_status_gauges_report_roles_and_stalls_from_the_status() -> None:
    g = StatusGauges()
    key = "ns/gauges"
    computed = {
        "conditions": [{"type": "Progressing", "status": "False", "reason": "RoleSetRolloutStalled"}],
        "roleStatuses": [
            {
                "name": "decode",
                "replicas": 6,
                "readyReplicas": 4,
                "updatedReplicas": 2,
                "updatedReadyReplicas": 2,
            }
        ],
    }
    g.observe(key, spec(3, ("prefill", 1, 1), ("decode", 1, 2)), computed)
    assert sample_value("stormservice_rollout_stalled", {"stormservice": key}) == 1.0
    assert [
        role_replicas(key, "decode", s) for s in ("desired", "current", "ready", "updated", "updated_ready")
    ] == [
        6.0,
        6.0,
        4.0,
        2.0,
        2.0,
    ]
    # A role no RoleSet reports yet: desired, and 0 in every other state.
    assert [role_replicas(key, "prefill", s) for s in ("desired", "current", "ready")] == [3.0, 0.0, 0.0]

    g.observe(key, spec(1, ("decode", 1, 2)), {"conditions": [{"type": "Progressing", "status": "True"}]})
    assert sample_value("stormservice_rollout_stalled", {"stormservice": key}) == 0.0
    assert role_replicas(key, "prefill", "desired") is None, "a removed role's series go"
    assert role_replicas(key, "decode", "desired") == 2.0
    # A role only old RoleSets still run: desired nowhere, its pods still counted.
    old_role = {"name": "prefill", "replicas": 3, "readyReplicas": 3}
    g.observe(key, spec(1, ("decode", 1, 2)), {"conditions": [], "roleStatuses": [old_role]})
    assert [role_replicas(key, "prefill", s) for s in ("desired", "current", "ready")] == [0.0, 3.0, 3.0]
    g.forget(key)
    assert sample_value("stormservice_rollout_stalled", {"stormservice": key}) is None
    assert role_replicas(key, "decode", "desired") is None


async def test_the_sync_reports_every_role_and_a_complete_rollout_then_forgets_the_stormservice() -> None:
    async with Env() as env:
        key = f"{NS}/mroles"
        env.seed(STORMSERVICES, storm("mroles", replicas=2, prefill=2, decode=1))
        await converge(env, "mroles")
        assert [role_replicas(key, "prefill", s) for s in ("desired", "ready", "updated_ready")] == [4.0] * 3
        assert [role_replicas(key, "decode", s) for s in ("desired", "ready", "updated_ready")] == [2.0] * 3
        before = rollouts("complete")
        await env.edit(
            lambda s: s["template"]["spec"]["roles"][0]["template"]["spec"]["containers"][0].update(
                image="prefill:v2"
            ),
            name="mroles",
        )
        await converge(env, "mroles")
        assert rollouts("complete") == before + 1
        assert sample_value("stormservice_rollout_stalled", {"stormservice": key}) == 0.0
        await env.client.delete(STORMSERVICES, NS, "mroles")
        await env.sync("mroles")
        assert role_replicas(key, "prefill", "desired") is None
        assert sample_value("stormservice_rollout_stalled", {"stormservice": key}) is None


async def converge(env: Env, name: str, passes: int = 30) -> None:
    for _ in range(passes):
        before = env.client.resource_version
        await env.sync(name)
        env.all_ready()
        await env.sync(name)
        if env.client.resource_version == before:
            return
    raise AssertionError("did not converge")
