"""stormservice_rolesets and stormservice_rollout_duration_seconds."""

from __future__ import annotations

from typing import Any

from controller.runtime.metrics import sample_value
from controller.stormservice.metrics import RoleSetGauge, RolloutTimer
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
